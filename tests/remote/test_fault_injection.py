"""Fault injection: SIGKILL a busy server at random moments while a client subscribes.

After each kill and restart every run is consistent (finished runs say why, no step of an ended
run is left running) and every event the subscriber was sent is in the store: durable before
reported holds for the event stream too. `VOLTUI_FAULT_ROUNDS` sets the rounds (3 in CI; run
more locally).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
from pathlib import Path

from tests.remote.conftest import SAMPLES
from tests.remote.test_server_process import ServerProcess, attach, procs, wait_exit
from voltui.config import OrchestratorConfig
from voltui.engine.api import StartRequest
from voltui.engine.models import RunState, StepState
from voltui.engine.orchestrator import Orchestrator

__all__ = ["procs"]  # the fixture, used by name

ROUNDS = int(os.environ.get("VOLTUI_FAULT_ROUNDS", "3"))


async def test_sigkill_at_random_moments_loses_nothing_reported(
    short_dir: Path, tmp_path: Path, procs: list[ServerProcess]
) -> None:
    db = tmp_path / "fault.db"
    rng = random.Random(os.environ.get("VOLTUI_FAULT_SEED", "7"))
    seen: set[int] = set()
    started: list[str] = []
    for round_no in range(ROUNDS):
        sock = short_dir / f"s{round_no}.sock"
        server = ServerProcess(sock, db, tmp_path / "server.log", speed=4)
        procs.append(server)
        client = await attach(sock, server, reconnect=False)

        async def watch(client=client) -> None:
            async for batch in client.subscribe("*"):
                seen.update(e.seq for e in batch)

        watcher = asyncio.create_task(watch())
        try:
            for _ in range(3):
                run = await client.start_workflow(StartRequest(workflow="simulated_load"))
                started.append(run.id)
            await asyncio.sleep(rng.uniform(0.2, 1.2))
        finally:
            server.proc.send_signal(signal.SIGKILL)
            await wait_exit(server)
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await client.close()

    # A restart settles what the dead servers left (interrupted runs, cancelled steps).
    config = OrchestratorConfig(db=db, workflows_dir=SAMPLES)
    async with Orchestrator(config) as engine:
        for run_id in started:
            detail = await engine.get_run(run_id)
            run = detail.run
            assert run.state.finished, f"{run_id} still {run.state}"
            if run.state is RunState.SUCCEEDED:
                assert all(s.state.ok for s in detail.steps), run_id
            if run.state is RunState.INTERRUPTED:
                assert not any(
                    s.state in (StepState.RUNNING, StepState.WAITING) for s in detail.steps
                ), run_id
    with sqlite3.connect(db) as conn:
        stored = {r[0] for r in conn.execute("SELECT seq FROM events")}
    assert seen, "the subscriber saw nothing: the test proves nothing"
    missing = sorted(seen - stored)
    assert not missing, f"{len(missing)} event(s) were sent but never stored: {missing[:10]}"
