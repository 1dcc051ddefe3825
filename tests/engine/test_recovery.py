"""After an engine crash, the next start ends the command processes it left behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil

from voltui.config import OrchestratorConfig
from voltui.engine.models import RunState, StepState
from voltui.engine.orchestrator import Orchestrator
from voltui.engine.reaper import process_start_time, reap_orphan

REPO = Path(__file__).parents[2]


def _running_pid(db: Path, deadline: float) -> tuple[str, int]:
    while time.monotonic() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    rows = conn.execute("SELECT run_id, data FROM steps").fetchall()
            except sqlite3.OperationalError:
                rows = []
            for run_id, data in rows:
                step = json.loads(data)
                if step.get("pid") and step["state"] == "running":
                    return run_id, int(step["pid"])
        time.sleep(0.1)
    raise AssertionError("the step never recorded a running process")


def test_restart_reaps_the_orphan_of_a_killed_engine(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    wf = tmp_path / "orphan.yaml"
    wf.write_text("id: orphan\nsteps:\n  - id: nap\n    run: {command: [sleep, '60']}\n")
    env = {**os.environ, "VOLTUI_DB": str(db)}
    engine = subprocess.Popen(
        [sys.executable, "-m", "voltui", "run", str(wf)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    child = None
    try:
        run_id, pid = _running_pid(db, time.monotonic() + 30)
        child = psutil.Process(pid)
        engine.send_signal(signal.SIGKILL)
        engine.wait(10)
        assert child.is_running(), "the orphan should outlive the killed engine"

        asyncio.run(_restart_and_check(db, run_id, pid))
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    finally:
        if engine.poll() is None:
            engine.kill()
        if child is not None and child.is_running():
            child.kill()


async def _restart_and_check(db: Path, run_id: str, pid: int) -> None:
    config = OrchestratorConfig(db=db, cancel_grace=2.0)
    async with Orchestrator(config) as orch:
        assert run_id in orch.interrupted_on_start
        detail = await orch.get_run(run_id)
        assert detail.run.state is RunState.INTERRUPTED
        assert detail.steps[0].state is StepState.CANCELLED
        reaped = [e for e in orch.dispatcher.history() if e.type == "step:orphan_reaped"]
        assert [e.data["pid"] for e in reaped] == [pid]


def test_a_reused_pid_is_left_alone() -> None:
    """Same pid, different start time: some other program now, not ours to kill."""
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        started = process_start_time(proc.pid)
        assert started is not None
        assert reap_orphan(proc.pid, started - 100.0, grace=0.1) is False
        assert reap_orphan(proc.pid, None, grace=0.1) is False
        assert proc.poll() is None
        assert reap_orphan(proc.pid, started, grace=2.0) is True
        assert proc.wait(5) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
