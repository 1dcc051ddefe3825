"""Concurrency keys: at most `limit` active runs per key value, the rest queue (or are skipped).

Runs are held open by a step that waits for a flag file, so what overlaps with what is decided
by the test, not by timing.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine.waiting import until
from voltui.config import OrchestratorConfig
from voltui.engine.concurrency import KEY_BUSY, ConcurrencyGate
from voltui.engine.models import AgentSpec, Event, Run, RunState, Workflow
from voltui.engine.orchestrator import Orchestrator

PY = sys.executable
WAIT = 30.0


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, type: str, source: str, data: dict | None = None, **kw: Any) -> Event:
        event = Event(seq=len(self.events) + 1, ts=0, type=type, source=source, data=data or {})
        event.correlation_id = kw.get("correlation_id")
        self.events.append(event)
        return event


def run(run_id: str) -> Run:
    return Run(id=run_id, workflow_id="w", workflow_name="w", created_at=0)


async def test_gate_queues_first_come_first_served_and_hands_places_on() -> None:
    events = Recorder()
    gate = ConcurrencyGate(events)
    assert await gate.acquire(run("a"), "k", 1, "queue")
    order: list[str] = []

    async def wait(rid: str) -> None:
        await gate.acquire(run(rid), "k", 1, "queue")
        order.append(rid)

    waiters = [asyncio.create_task(wait(r)) for r in ("b", "c")]
    await asyncio.sleep(0)
    assert gate.waiting("k") == 2 and order == []
    assert [e.data["reason"] for e in events.events] == [KEY_BUSY, KEY_BUSY]
    gate.release("a")
    await asyncio.sleep(0)
    assert order == ["b"] and gate.active("k") == 1
    gate.release("b")
    await asyncio.gather(*waiters)
    assert order == ["b", "c"]
    gate.release("c")
    assert gate.active("k") == 0 and gate._slots == {}


async def test_gate_skip_policy_refuses_at_once_and_cancelled_waiters_leave() -> None:
    gate = ConcurrencyGate(Recorder())
    assert await gate.acquire(run("a"), "k", 1, "skip")
    assert not await gate.acquire(run("b"), "k", 1, "skip")
    waiter = asyncio.create_task(gate.acquire(run("c"), "k", 1, "queue"))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.waiting("k") == 0
    gate.release("a")
    assert gate._slots == {}


# ------------------------------------------------------------------------- through the engine


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Orchestrator]:
    config = OrchestratorConfig(
        db=tmp_path / "engine.db",
        agents=[AgentSpec(id="cmd", kind="command", capabilities=[], capacity=8)],
    )
    orch = Orchestrator(config)
    await orch.start(watch=False)
    try:
        yield orch
    finally:
        await orch.stop()


def gated(policy: str = "queue") -> Workflow:
    """Each run waits until the file named by its `flag` input exists."""
    code = (
        "import os, pathlib, time\n"
        "flag = pathlib.Path(os.environ['VOLTUI_INPUT_FLAG'])\n"
        "deadline = time.time() + 30\n"
        "while not flag.exists() and time.time() < deadline: time.sleep(0.02)\n"
    )
    return Workflow.model_validate(
        {
            "id": "deploy",
            "inputs": {"repo": {"type": "string"}, "flag": {"type": "string"}},
            "concurrency": {"key": "repo-${inputs.repo}", "limit": 1, "policy": policy},
            "steps": [{"id": "wait", "run": {"command": [PY, "-c", code]}}],
        }
    )


def types_for(engine: Orchestrator, run_id: str) -> list[str]:
    return [e.type for e in engine.dispatcher.correlated(run_id)]


async def test_runs_with_the_same_key_take_turns_and_other_keys_do_not_wait(
    engine: Orchestrator, tmp_path: Path
) -> None:
    wf = gated()
    flags = {name: tmp_path / name for name in ("a1", "a2", "b")}
    a1 = await engine.run_workflow(wf, {"repo": "a", "flag": str(flags["a1"])})
    a2 = await engine.run_workflow(wf, {"repo": "a", "flag": str(flags["a2"])})
    b = await engine.run_workflow(wf, {"repo": "b", "flag": str(flags["b"])})

    await until(lambda: "step:started" in types_for(engine, b.id), "b started")
    await until(lambda: "step:started" in types_for(engine, a1.id), "a1 started")
    busy = [
        e
        for e in engine.dispatcher.correlated(a2.id)
        if e.type == "workflow:queued" and e.data.get("reason") == KEY_BUSY
    ]
    assert len(busy) == 1 and busy[0].data["key"] == "repo-a"
    assert busy[0].data["dag"] == [["wait", []]]  # a dashboard can fold it like the first
    assert "workflow:started" not in types_for(engine, a2.id)
    live = engine.workflows.live(a2.id)
    assert live is not None and live[0].state is RunState.QUEUED  # shown as queued (key busy)

    flags["a1"].touch()
    await asyncio.wait_for(engine.wait_run(a1.id), WAIT)
    await until(lambda: "workflow:started" in types_for(engine, a2.id), "a2 started")
    for flag in flags.values():
        flag.touch()
    finals = [await asyncio.wait_for(engine.wait_run(r.id), WAIT) for r in (a1, a2, b)]
    assert [f.state for f in finals] == [RunState.SUCCEEDED] * 3
    # a2 started only after a1 had finished.
    a1_end = max(e.seq for e in engine.dispatcher.correlated(a1.id))
    a2_start = next(
        e.seq for e in engine.dispatcher.correlated(a2.id) if e.type == "workflow:started"
    )
    assert a2_start > a1_end


async def test_skip_policy_ends_the_extra_run_as_cancelled_with_the_reason(
    engine: Orchestrator, tmp_path: Path
) -> None:
    wf = gated("skip")
    flag = tmp_path / "flag"
    first = await engine.run_workflow(wf, {"repo": "a", "flag": str(flag)})
    await until(lambda: "step:started" in types_for(engine, first.id), "first started")
    second = await engine.run_workflow(wf, {"repo": "a", "flag": str(flag)})
    skipped = await asyncio.wait_for(engine.wait_run(second.id), WAIT)
    assert skipped.state is RunState.CANCELLED
    assert skipped.error is not None and "concurrency key 'repo-a'" in skipped.error
    flag.touch()
    assert (await asyncio.wait_for(engine.wait_run(first.id), WAIT)).state is RunState.SUCCEEDED
    assert engine.workflows.gate.active("repo-a") == 0


async def test_a_run_waiting_for_its_key_can_be_cancelled(
    engine: Orchestrator, tmp_path: Path
) -> None:
    wf = gated()
    flag = tmp_path / "flag"
    first = await engine.run_workflow(wf, {"repo": "a", "flag": str(flag)})
    second = await engine.run_workflow(wf, {"repo": "a", "flag": str(flag)})
    await until(lambda: engine.workflows.gate.waiting("repo-a") == 1, "second waits")
    cancelled = await engine.cancel_run(second.id)
    assert cancelled.state is RunState.CANCELLED
    assert engine.workflows.gate.waiting("repo-a") == 0
    flag.touch()
    assert (await asyncio.wait_for(engine.wait_run(first.id), WAIT)).state is RunState.SUCCEEDED
    assert engine.workflows.gate.active("repo-a") == 0
