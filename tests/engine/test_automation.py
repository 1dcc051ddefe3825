"""Schedules through a real engine: runs record why they started, `overlap: queue` really
queues (through the ConcurrencyGate), and the dashboard's engine runs schedules unless off."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.engine.waiting import until
from voltui.config import OrchestratorConfig
from voltui.engine.concurrency import KEY_BUSY
from voltui.engine.errors import UserError
from voltui.engine.models import AgentSpec, RunState
from voltui.engine.orchestrator import Orchestrator
from voltui.engine.schedules import Scheduler

PY = sys.executable
WAIT = 30.0
T0 = 1_717_243_200.0  # 2024-06-01 12:00 UTC

WORKFLOW = f"""\
id: sync
inputs:
  flag: {{type: string}}
schedules:
  - {{every: 1m, overlap: queue, catchup: all, inputs: {{flag: "@FLAGPATH@"}}}}
steps:
  - id: wait
    run:
      command:
        - {PY}
        - -c
        - |
          import os, pathlib, time
          flag = pathlib.Path(os.environ["VOLTUI_INPUT_FLAG"])
          deadline = time.time() + 30
          while not flag.exists() and time.time() < deadline: time.sleep(0.02)
"""


def make_engine(tmp_path: Path, **config: object) -> Orchestrator:
    folder = tmp_path / "wf"
    folder.mkdir(exist_ok=True)
    flag = tmp_path / "flag"
    (folder / "sync.yaml").write_text(WORKFLOW.replace("@FLAGPATH@", str(flag)))
    return Orchestrator(
        OrchestratorConfig(
            db=tmp_path / "engine.db",
            workflows_dir=folder,
            agents=[AgentSpec(id="cmd", kind="command", capabilities=[], capacity=8)],
            **config,
        )
    )


async def test_overlap_queue_runs_fires_one_after_another(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, schedules_enabled=False)  # the test drives the clock
    await engine.start()
    now = {"t": T0}
    sched = Scheduler(
        engine.automation.state,
        engine.dispatcher,
        start=engine.start_workflow,
        runs=lambda wid: engine.store.list_runs(workflow_id=wid),
        cancel=engine.cancel_run,
        clock=lambda: now["t"],
    )
    try:
        assert engine.automation.scheduler is None
        workflows = await engine.automation.workflows()
        assert await sched.tick(workflows) == []
        now["t"] = T0 + 180  # three minutes pass: catchup all fires three runs
        runs = await sched.tick(workflows)
        assert len(runs) == 3
        assert all(r.trigger == "schedule" and r.trigger_ref == "sync:1" for r in runs)

        def queued_busy(run_id: str) -> bool:
            return any(
                e.type == "workflow:queued" and e.data.get("reason") == KEY_BUSY
                for e in engine.dispatcher.correlated(run_id)
            )

        await until(lambda: queued_busy(runs[1].id) and queued_busy(runs[2].id), "queued")
        queued = next(
            e for e in engine.dispatcher.correlated(runs[0].id) if e.type == "workflow:queued"
        )
        assert queued.data["trigger"] == "schedule" and queued.data["trigger_ref"] == "sync:1"
        (tmp_path / "flag").touch()
        finals = [await asyncio.wait_for(engine.wait_run(r.id), WAIT) for r in runs]
        assert [f.state for f in finals] == [RunState.SUCCEEDED] * 3, [f.error for f in finals]
        seqs = []
        for run in runs:
            events = engine.dispatcher.correlated(run.id)
            start = next(e.seq for e in events if e.type == "workflow:started")
            end = next(e.seq for e in events if e.type == "workflow:succeeded")
            seqs.append((start, end))
        assert seqs[0][1] < seqs[1][0] and seqs[1][1] < seqs[2][0]  # never two at once
        stored = await engine.store.get_run(runs[2].id)
        assert stored is not None and stored.trigger == "schedule"
    finally:
        await engine.stop()


async def test_a_long_lived_engine_runs_schedules_unless_switched_off(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    await engine.start()  # watch=True: the dashboard's and `voltui serve`'s engine
    try:
        assert engine.automation.scheduler is not None
        await until(  # its first tick records the schedule
            lambda: _has_state(engine, "sync:1"), "the scheduler's first tick"
        )
    finally:
        await engine.stop()
    one_shot = make_engine(tmp_path)
    await one_shot.start(watch=False)  # `voltui list`, `voltui run`: no schedules
    try:
        assert one_shot.automation.scheduler is None
    finally:
        await one_shot.stop()


async def _has_state(engine: Orchestrator, key: str) -> bool:
    return await engine.automation.state.get(key) is not None


async def test_replays_record_their_trigger(tmp_path: Path) -> None:
    from voltui.engine.api import ReplayRequest, StartRequest

    engine = make_engine(tmp_path, schedules_enabled=False)
    await engine.start(watch=False)
    (tmp_path / "flag").touch()
    try:
        run = await engine.start_workflow(
            StartRequest(workflow="sync", inputs={"flag": str(tmp_path / "flag")})
        )
        assert run.trigger == "manual"
        await asyncio.wait_for(engine.wait_run(run.id), WAIT)
        again = await engine.replay_run(ReplayRequest(run_id=run.id, mode="all"))
        assert again.trigger == "replay"
        await asyncio.wait_for(engine.wait_run(again.id), WAIT)
    finally:
        await engine.stop()


async def test_otel_switched_on_without_the_sdk_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("opentelemetry.sdk.resources", "opentelemetry.sdk.trace"):
        monkeypatch.setitem(sys.modules, name, None)  # as if the extra were not installed
    engine = Orchestrator(OrchestratorConfig(db=tmp_path / "e.db", otel={"enabled": True}))
    with pytest.raises(UserError, match=r"pip install 'voltui\[otel\]'"):
        await engine.start(watch=False)
    assert not engine.running
