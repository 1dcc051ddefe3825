"""WorkflowManager behaviour through the real Orchestrator: real SQLite, real subprocesses."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from voltui.config import OrchestratorConfig
from voltui.engine.api import ReplayRequest
from voltui.engine.errors import UserError
from voltui.engine.models import AgentSpec, Event, EventQuery, RunState, StepState, Workflow
from voltui.engine.orchestrator import Orchestrator

PY = sys.executable


def agents(sim_capacity: int = 8) -> list[AgentSpec]:
    return [
        AgentSpec(id="cmd", kind="command", capabilities=["shell"], capacity=8),
        AgentSpec(id="py", kind="python", capabilities=["python"], capacity=4),
        AgentSpec(id="sim", kind="simulated", capabilities=["simulated"], capacity=sim_capacity),
    ]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Orchestrator]:
    config = OrchestratorConfig(db=tmp_path / "engine.db", agents=agents(), cancel_grace=2.0)
    orch = Orchestrator(config)
    await orch.start(watch=False)
    try:
        yield orch
    finally:
        await orch.stop()


def workflow(steps: list[dict[str, Any]], **extra: Any) -> Workflow:
    return Workflow.model_validate({"id": "t", "steps": steps, **extra})


def sim(step_id: str, duration: str = "10ms", deps: list[str] | None = None, **call: Any) -> dict:
    return {
        "id": step_id,
        "depends_on": deps or [],
        "run": {"simulated": {"duration": duration, **call}},
    }


def cmd(step_id: str, code: str, deps: list[str] | None = None, **extra: Any) -> dict:
    return {
        "id": step_id,
        "depends_on": deps or [],
        "run": {"command": [PY, "-c", code]},
        **extra,
    }


async def run_to_end(engine: Orchestrator, wf: Workflow, inputs: dict | None = None):
    run = await engine.run_workflow(wf, inputs)
    final = await asyncio.wait_for(engine.wait_run(run.id), 60)
    return await engine.get_run(final.id)


def run_events(engine: Orchestrator, run_id: str) -> list[Event]:
    return engine.dispatcher.correlated(run_id)


async def test_linear_dag_runs_in_order_and_passes_outputs(engine: Orchestrator) -> None:
    code_a = "import json; print(json.dumps({'n': 41}))"
    code_b = (
        "import json,sys; doc=json.load(sys.stdin); "
        "print(json.dumps({'n': doc['upstream']['a']['n'] + 1}))"
    )
    detail = await run_to_end(engine, workflow([cmd("a", code_a), cmd("b", code_b, ["a"])]))
    assert detail.run.state is RunState.SUCCEEDED
    assert [s.output for s in detail.steps] == [{"n": 41}, {"n": 42}]
    events = run_events(engine, detail.run.id)
    started = [e.data["step"] for e in events if e.type == "step:started"]
    assert started == ["a", "b"]
    progress = [e.data for e in run_events(engine, detail.run.id) if e.type == "workflow:progress"]
    assert progress[-1] == {
        "done": 2,
        "total": 2,
        "succeeded": 2,
        "failed": 0,
        "skipped": 0,
        "cancelled": 0,
    }


async def test_max_parallel_is_honoured(engine: Orchestrator) -> None:
    steps = [sim(f"s{i}", "150ms") for i in range(6)]
    detail = await run_to_end(engine, workflow(steps, max_parallel=2))
    assert detail.run.state is RunState.SUCCEEDED
    running, peak = 0, 0
    for e in run_events(engine, detail.run.id):
        if e.type == "step:started":
            running += 1
            peak = max(peak, running)
        elif e.type == "step:succeeded":
            running -= 1
    assert peak == 2


async def test_runs_beyond_max_concurrent_workflows_queue(tmp_path: Path) -> None:
    config = OrchestratorConfig(db=tmp_path / "q.db", agents=agents(), max_concurrent_workflows=1)
    async with Orchestrator(config) as orch:
        wf = workflow([sim("only", "200ms")])
        first = await orch.run_workflow(wf)
        second = await orch.run_workflow(wf)
        await asyncio.sleep(0.05)
        assert (await orch.get_run(second.id)).run.state is RunState.QUEUED
        await orch.wait_run(second.id)
        ends = {
            e.correlation_id: e.seq
            for e in orch.dispatcher.history()
            if e.type in ("workflow:started", "workflow:succeeded")
            and (e.type == "workflow:succeeded") == (e.correlation_id == first.id)
        }
        assert ends[first.id] < ends[second.id], "second run started before the first ended"


async def test_retries_with_backoff_are_visible(engine: Orchestrator) -> None:
    retry = {"max_attempts": 3, "base_delay": "20ms", "jitter": 0}
    step = sim("flaky", "5ms", fail_attempts=2) | {"retry": retry}
    detail = await run_to_end(engine, workflow([step]))
    assert detail.run.state is RunState.SUCCEEDED
    assert detail.steps[0].attempt == 3
    retrying = [e for e in run_events(engine, detail.run.id) if e.type == "step:retrying"]
    assert [e.data["attempt"] for e in retrying] == [1, 2]
    assert [e.data["delay"] for e in retrying] == [0.02, 0.04]  # exponential


async def test_retryable_errors_limit_which_failures_retry(engine: Orchestrator) -> None:
    retry = {"max_attempts": 3, "base_delay": "10ms", "retryable_errors": ["connection reset"]}
    step = cmd("s", "import sys; sys.exit('disk full')") | {"retry": retry}
    detail = await run_to_end(engine, workflow([step]))
    assert detail.run.state is RunState.FAILED
    assert detail.steps[0].attempt == 1
    assert "disk full" in (detail.steps[0].error or "")


async def test_failure_skips_downstream_unless_continue_on_failure(engine: Orchestrator) -> None:
    steps = [
        cmd("bad", "raise SystemExit(3)"),
        sim("after_bad", deps=["bad"]),
        cmd("tolerated", "raise SystemExit(1)", continue_on_failure=True),
        sim("after_tolerated", deps=["tolerated"]),
        sim("grandchild", deps=["after_bad"]),
    ]
    detail = await run_to_end(engine, workflow(steps))
    states = {s.step_id: s.state for s in detail.steps}
    assert states == {
        "bad": StepState.FAILED,
        "after_bad": StepState.SKIPPED,
        "tolerated": StepState.FAILED,
        "after_tolerated": StepState.SUCCEEDED,
        "grandchild": StepState.SKIPPED,
    }
    assert detail.run.state is RunState.FAILED
    assert "bad" in (detail.run.error or "") and "code 3" in (detail.run.error or "")
    assert detail.steps[0].exit_code == 3


async def test_step_timeout_kills_the_child(engine: Orchestrator, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    code = f"import os,time; open({str(pidfile)!r},'w').write(str(os.getpid())); time.sleep(30)"
    detail = await run_to_end(engine, workflow([cmd("slow", code, timeout="700ms")]))
    assert detail.steps[0].state is StepState.FAILED
    assert "timed out after" in (detail.steps[0].error or "")
    pid = int(pidfile.read_text())
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_workflow_timeout_fails_the_run(engine: Orchestrator) -> None:
    wf = workflow([sim("long", "5s")], timeout="300ms")
    detail = await run_to_end(engine, wf)
    assert detail.run.state is RunState.FAILED
    assert "workflow timed out" in (detail.run.error or "")
    # The step the timeout stopped says so (and the limit); it was not cancelled by anyone.
    assert detail.steps[0].state is StepState.FAILED
    assert "timed out" in (detail.steps[0].error or "")
    assert "300ms" in (detail.steps[0].error or "")


async def test_cancel_stops_running_command_within_grace(engine: Orchestrator) -> None:
    sleepy = {"id": "sleepy", "run": {"command": ["sleep", "60"]}}
    wf = workflow([sleepy, sim("next", deps=["sleepy"])])
    run = await engine.run_workflow(wf)
    child = None
    for _ in range(200):
        kids = psutil.Process().children(recursive=True)
        child = next((p for p in kids if p.name() == "sleep"), None)
        if child:
            break
        await asyncio.sleep(0.05)
    assert child is not None, "sleep 60 never started"
    began = time.monotonic()
    cancelled = await engine.cancel_run(run.id)
    took = time.monotonic() - began
    assert cancelled.state is RunState.CANCELLED
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert took < 2.0 + 1.5  # grace period plus a margin for a busy machine
    detail = await engine.get_run(run.id)
    assert [s.state for s in detail.steps] == [StepState.CANCELLED, StepState.CANCELLED]
    with pytest.raises(UserError, match="already ended"):
        await engine.cancel_run(run.id)


async def test_step_no_agent_can_run_fails_at_once(engine: Orchestrator) -> None:
    step = sim("gpu") | {"requires": ["gpu"]}
    detail = await run_to_end(engine, workflow([step]))
    assert detail.steps[0].state is StepState.FAILED
    assert "gpu" in (detail.steps[0].error or "")
    assert detail.steps[0].attempt == 1


async def test_succeeded_is_on_disk_before_it_is_reported(engine: Orchestrator) -> None:
    """A sink sees events inline as they are emitted: the store must already hold the state."""
    seen: list[str] = []
    db = engine.store.path

    def check(event: Event) -> None:
        if event.type != "step:succeeded":
            return
        with sqlite3.connect(db) as conn:
            row = conn.execute(
                "SELECT state FROM steps WHERE run_id = ? AND step_id = ?",
                (event.correlation_id, event.data["step"]),
            ).fetchone()
        seen.append(row[0] if row else "missing")

    engine.dispatcher.add_sink(check)
    await run_to_end(engine, workflow([sim("a"), sim("b", deps=["a"])]))
    assert seen == ["succeeded", "succeeded"]


async def test_cached_step_is_a_hit_on_the_second_run(engine: Orchestrator) -> None:
    wf = workflow([cmd("work", "print(7)") | {"cache": {"ttl": "1h"}}])
    first = await run_to_end(engine, wf)
    second = await run_to_end(engine, wf)
    assert first.steps[0].state is StepState.SUCCEEDED
    assert second.steps[0].state is StepState.CACHED
    assert second.steps[0].output == first.steps[0].output
    hits = {s.namespace: s.hits for s in engine.cache.stats()}
    assert hits.get("steps", 0) >= 1


async def test_replay_failed_reuses_succeeded_steps(engine: Orchestrator, tmp_path: Path) -> None:
    marker = tmp_path / "fixed"
    flaky = f"import os,sys; sys.exit(0 if os.path.exists({str(marker)!r}) else 'not yet')"
    wf = workflow(
        [
            cmd("a", "import json; print(json.dumps({'v': 1}))"),
            cmd("b", flaky, ["a"]),
            cmd("c", "import json,sys; print(json.dumps(json.load(sys.stdin)['upstream']))", ["b"]),
        ]
    )
    original = await run_to_end(engine, wf)
    assert original.run.state is RunState.FAILED
    marker.write_text("ok")
    replay = await engine.replay_run(ReplayRequest(run_id=original.run.id, mode="failed"))
    await engine.wait_run(replay.id)
    detail = await engine.get_run(replay.id)
    assert detail.run.state is RunState.SUCCEEDED
    assert detail.run.replay_of == original.run.id
    assert detail.run.run_dir == original.run.run_dir
    a = detail.steps[0]
    assert a.reused_from == original.run.id and a.output == {"v": 1}
    started = [e.data["step"] for e in run_events(engine, replay.id) if e.type == "step:started"]
    assert started == ["b", "c"]

    again = await engine.replay_run(ReplayRequest(run_id=replay.id, mode="all"))
    await engine.wait_run(again.id)
    detail = await engine.get_run(again.id)
    assert detail.run.state is RunState.SUCCEEDED
    started = [e.data["step"] for e in run_events(engine, again.id) if e.type == "step:started"]
    assert started == ["a", "b", "c"]
    with pytest.raises(UserError, match="nothing to replay"):
        await engine.replay_run(ReplayRequest(run_id=again.id, mode="failed"))


async def test_stopping_the_engine_interrupts_active_runs(tmp_path: Path) -> None:
    config = OrchestratorConfig(db=tmp_path / "stop.db", agents=agents())
    orch = Orchestrator(config)
    await orch.start(watch=False)
    run = await orch.run_workflow(workflow([sim("a", "10ms"), sim("b", "30s", deps=["a"])]))
    for _ in range(200):
        detail = await orch.get_run(run.id)
        if detail.steps[1].state is StepState.RUNNING:
            break
        await asyncio.sleep(0.02)
    await orch.stop()

    async with Orchestrator(config) as again:
        detail = await again.get_run(run.id)
        assert detail.run.state is RunState.INTERRUPTED
        assert [s.state for s in detail.steps] == [StepState.SUCCEEDED, StepState.CANCELLED]
        seqs = [e.seq for e in await again.events(EventQuery())]
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))


async def test_subscribe_resumes_from_the_store_without_gap(tmp_path: Path) -> None:
    config = OrchestratorConfig(db=tmp_path / "sub.db", agents=agents(), event_history=100)
    async with Orchestrator(config) as orch:
        detail = await run_to_end(orch, workflow([sim(f"s{i}") for i in range(40)]))
        assert detail.run.state is RunState.SUCCEEDED
        await orch.store.flush()
        last = orch.dispatcher.last_seq
        got: list[int] = []
        stream = orch.subscribe("*", since_seq=0)
        async for batch in stream:
            got.extend(e.seq for e in batch)
            if got and got[-1] >= last:
                break
        await stream.aclose()
        stored = [e.seq for e in await orch.store.events_range(0, last)]
        assert got == stored
        assert len(got) > 100  # more than the in-memory history: the store filled the gap


async def test_a_skipped_step_never_lets_its_dependents_run(engine: Orchestrator) -> None:
    # `guard` fails; `tolerant` (continue_on_failure) is skipped because of it; `after` depends
    # on `tolerant`. Only a step that actually failed with the flag may let dependents run on.
    steps = [
        sim("guard", fail_attempts=5),
        {**sim("tolerant", deps=["guard"]), "continue_on_failure": True},
        sim("after", deps=["tolerant"]),
    ]
    detail = await run_to_end(engine, workflow(steps))
    states = {s.step_id: s.state for s in detail.steps}
    assert states == {
        "guard": StepState.FAILED,
        "tolerant": StepState.SKIPPED,
        "after": StepState.SKIPPED,
    }
    assert detail.run.state is RunState.FAILED
    assert (detail.run.steps_failed, detail.run.steps_skipped) == (1, 2)


async def test_a_failed_step_with_continue_on_failure_lets_dependents_run(
    engine: Orchestrator,
) -> None:
    steps = [
        {**sim("soft", fail_attempts=5), "continue_on_failure": True},
        sim("after", deps=["soft"]),
    ]
    detail = await run_to_end(engine, workflow(steps))
    states = {s.step_id: s.state for s in detail.steps}
    assert states == {"soft": StepState.FAILED, "after": StepState.SUCCEEDED}
    assert detail.run.state is RunState.SUCCEEDED


async def test_cancelled_sync_python_step_really_stops_before_the_run_is_cancelled(
    engine: Orchestrator, tmp_path: Path
) -> None:
    # A sync function ignoring ctx.cancel_event: its thread cannot be interrupted, so the
    # cancel must wait for it (run `cancelling`, slot held) rather than report a cancelled run
    # while the thread goes on writing into the run folder.
    (tmp_path / "slowstep.py").write_text(
        "import time\n"
        "from pathlib import Path\n"
        "def slow(ctx):\n"
        "    Path(ctx.run_dir, 'began').write_text('x')\n"
        "    time.sleep(0.8)\n"
        "    Path(ctx.run_dir, 'late.txt').write_text('still writing')\n"
    )
    wf = workflow([{"id": "slow", "run": {"python": "slowstep:slow"}}])
    wf._source = str(tmp_path / "wf.yaml")
    run = await engine.run_workflow(wf)
    run_dir = Path(run.run_dir or "")
    deadline = time.monotonic() + 10
    while not (run_dir / "began").exists():
        assert time.monotonic() < deadline, "the step never started"
        await asyncio.sleep(0.02)
    cancelled = await engine.cancel_run(run.id)
    assert cancelled.state is RunState.CANCELLED
    # The work had stopped when the cancel returned: nothing writes after the run ended.
    assert (run_dir / "late.txt").exists()
    assert all(load.active == 0 for load in engine.coordination.loads())
    types = [e.type for e in run_events(engine, run.id)]
    assert "workflow:cancelling" in types
    assert types.index("workflow:cancelling") < types.index("workflow:cancelled")


async def test_a_chatty_step_is_capped_in_the_store_spilled_to_a_file_and_throttled_live(
    tmp_path: Path,
) -> None:
    config = OrchestratorConfig(
        db=tmp_path / "chatty.db", agents=agents(), max_log_lines=1000, live_output_lines=100
    )
    code = "import sys\nfor i in range(50_000):\n    sys.stdout.write(f'line {i}\\n')\n"
    async with Orchestrator(config) as orch:
        detail = await run_to_end(orch, workflow([cmd("chatty", code)]))
        assert detail.run.state is RunState.SUCCEEDED
        log = await orch.step_log(detail.run.id, "chatty")
        # The first 1,000 lines and one marker naming the spill file; nothing more stored.
        assert len(log) == 1001
        assert log[0].line == "line 0" and log[999].line == "line 999"
        assert "49000 more line(s)" in log[-1].line
        spill = Path(detail.run.run_dir or "") / "logs" / "chatty.1.log"
        assert f"{spill}" in log[-1].line
        spilled = spill.read_text().splitlines()
        assert len(spilled) == 49_000 and spilled[-1] == "stdout\tline 49999"
        assert spill.stat().st_mode & 0o777 == 0o600
        live = [e for e in run_events(orch, detail.run.id) if e.type == "step:output"]
        # At most 100 lines a second went out live, plus one "not shown live" note a second.
        assert 100 <= len(live) < 1000
        assert any("not shown live" in e.data["line"] for e in live)


async def test_a_cancel_before_the_run_s_task_first_ran_returns(engine: Orchestrator) -> None:
    """Start then cancel with no await in between that yields to the loop: the run's task is
    cancelled before its first step. That once left `cancel_run` waiting forever (the
    dashboard's start/cancel cycles hung now and then)."""
    loop = asyncio.get_running_loop()
    for _ in range(3):
        run = await engine.run_workflow(workflow([sim("a", "5s")]))
        me = asyncio.current_task()
        assert me is not None
        watchdog = loop.call_later(10, me.cancel)  # a hang fails the test instead of CI
        try:
            cancelled = await engine.cancel_run(run.id)
        finally:
            watchdog.cancel()
        assert cancelled.state is RunState.CANCELLED
        assert not engine.workflows.is_active(run.id)
        stored = await engine.store.get_run(run.id)
        assert stored is not None and stored.state is RunState.CANCELLED


async def test_no_step_starts_while_a_cancelled_run_stops_its_steps(
    engine: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`a` ends just before the cancel, but its commit settles while the run waits for a step
    that is slow to stop: its dependent `b` must not start then (it used to, and outlived the
    run, overwriting its cancelled row with its own ending)."""
    slow_commit = engine.store.flush

    async def flush() -> None:
        await asyncio.sleep(0.3)
        await slow_commit()

    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, lambda *a: None); time.sleep(1.2)"
    )
    flow = workflow([sim("a", "1ms"), sim("b", "1ms", deps=["a"]), cmd("c", stubborn)])
    monkeypatch.setattr(engine.store, "flush", flush)
    run = await engine.run_workflow(flow)
    await asyncio.sleep(0.15)  # a has ended; its commit (and so b's start) is held back
    cancelled = await engine.cancel_run(run.id)
    await asyncio.sleep(0.5)  # time for an orphaned b to finish, if it was started
    assert cancelled.state is RunState.CANCELLED
    steps = {s.step_id: s for s in (await engine.get_run(run.id)).steps}
    assert steps["b"].state is StepState.CANCELLED
    started = [e for e in engine.dispatcher.correlated(run.id) if e.type == "step:started"]
    assert "b" not in [e.data["step"] for e in started]


async def test_a_report_that_raises_ends_its_run_instead_of_stranding_it(
    engine: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = engine.workflows._node_finished

    def broken(ex: Any, node: Any) -> None:
        if node.step.id == "a":
            raise RuntimeError("bug in a report")
        real(ex, node)

    monkeypatch.setattr(engine.workflows, "_node_finished", broken)
    run = await engine.run_workflow(workflow([sim("a", "1ms"), sim("b", "1ms", deps=["a"])]))
    final = await asyncio.wait_for(engine.wait_run(run.id), 10)
    assert final is not None and final.state is RunState.FAILED
    assert "engine error: RuntimeError: bug in a report" in (final.error or "")
