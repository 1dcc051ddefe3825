"""Dynamic fan-out (`map:`) through the real engine: bounded parallelism, ordered fan-in,
failure policies, per-child logs and replay of only the failed children."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from voltui.config import OrchestratorConfig
from voltui.engine.api import ReplayRequest
from voltui.engine.errors import WorkflowFileError
from voltui.engine.loader import load_workflow_text
from voltui.engine.models import AgentSpec, RunState, StepState, Workflow
from voltui.engine.orchestrator import Orchestrator

LIVE = {"now": 0, "max": 0}
CALLS: list[int] = []
FAIL: set[int] = set()


def plan(ctx: Any) -> dict[str, Any]:
    return {"tasks": [{"n": i} for i in range(int(ctx.params.get("count", 0)))]}


async def work(ctx: Any) -> dict[str, Any]:
    """Count how many children run at once; fail for the items in FAIL."""
    n = ctx.params["item"]["n"]
    CALLS.append(n)
    LIVE["now"] += 1
    LIVE["max"] = max(LIVE["max"], LIVE["now"])
    try:
        ctx.log(f"working on {n}")
        await asyncio.sleep(0.003)
        if n in FAIL:
            raise RuntimeError(f"item {n} is broken")
        return {"square": n * n, "index": ctx.params["index"]}
    finally:
        LIVE["now"] -= 1


@pytest.fixture(autouse=True)
def _reset() -> None:
    LIVE.update(now=0, max=0)
    CALLS.clear()
    FAIL.clear()


async def make(tmp_path: Path, **config: Any) -> Orchestrator:
    agents = [AgentSpec(id="py", kind="python", capabilities=["python"], capacity=32)]
    engine = Orchestrator(OrchestratorConfig(db=tmp_path / "m.db", agents=agents, **config))
    await engine.start(watch=False)
    return engine


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Orchestrator]:
    orch = await make(tmp_path)
    try:
        yield orch
    finally:
        await orch.stop()


def flow(count: int, **map_spec: Any) -> Workflow:
    return Workflow.model_validate(
        {
            "id": "fan",
            "max_parallel": 2,
            "steps": [
                {
                    "id": "plan",
                    "run": {"python": "tests.engine.test_map:plan"},
                    "params": {"count": count},
                },
                {
                    "id": "each",
                    "depends_on": ["plan"],
                    "map": {"over": "${steps.plan.output.tasks}", **map_spec},
                    "run": {"python": "tests.engine.test_map:work"},
                },
                {
                    "id": "gather",
                    "depends_on": ["each"],
                    "run": {"python": "tests.engine.test_map:total"},
                },
            ],
        }
    )


def total(ctx: Any) -> int:
    return sum(r["square"] for r in ctx.upstream["each"])


async def finish(engine: Orchestrator, wf: Workflow) -> Any:
    run = await engine.run_workflow(wf)
    await asyncio.wait_for(engine.wait_run(run.id), 60)
    return await engine.get_run(run.id)


async def test_200_items_never_more_than_8_at_once_and_fan_in_in_order(
    engine: Orchestrator,
) -> None:
    detail = await finish(engine, flow(200, max_parallel=8))
    assert detail.run.state is RunState.SUCCEEDED
    each = detail.steps[1].output
    assert [r["index"] for r in each] == list(range(200))  # in item order, not finish order
    assert [r["square"] for r in each] == [n * n for n in range(200)]
    assert detail.steps[2].output == sum(n * n for n in range(200))
    assert LIVE["max"] == 8  # the agent had room for 32: the map's own limit held
    assert sorted(CALLS) == list(range(200))
    logs = await engine.step_log(detail.run.id, "each[137]")
    assert [line.line for line in logs] == ["working on 137"]
    stored = {s.step_id: s for s in await engine.store.get_steps(detail.run.id)}
    assert stored["each[0]"].output == {"square": 0, "index": 0}
    assert sum(1 for sid in stored if sid.startswith("each[")) == 200
    events = engine.dispatcher.correlated(detail.run.id)
    last = [e for e in events if e.type == "step:map_progress"][-1].data
    assert (last["total"], last["succeeded"], last["running"], last["failed"]) == (200, 200, 0, 0)


async def test_fail_fast_stops_the_other_children(engine: Orchestrator) -> None:
    FAIL.add(3)
    detail = await finish(engine, flow(60, max_parallel=2))
    each = detail.steps[1]
    assert each.state is StepState.FAILED
    assert each.error is not None
    assert "(stopped at the first failure); each[3]: RuntimeError: item 3 is broken" in each.error
    assert detail.steps[2].state is StepState.SKIPPED
    assert len(CALLS) < 60  # the rest never started
    assert detail.run.state is RunState.FAILED


async def test_collect_runs_every_child_then_fails(engine: Orchestrator) -> None:
    FAIL.update({2, 5})
    detail = await finish(engine, flow(8, on_failure="collect"))
    each = detail.steps[1]
    assert sorted(CALLS) == list(range(8))
    assert each.state is StepState.FAILED
    assert each.error is not None and each.error.startswith("2 of 8 children failed (all ran)")
    assert [r is None for r in each.output] == [i in (2, 5) for i in range(8)]


async def test_replay_failed_runs_only_the_failed_children(engine: Orchestrator) -> None:
    FAIL.update({2, 5})
    first = await finish(engine, flow(8, on_failure="collect"))
    assert first.run.state is RunState.FAILED
    FAIL.clear()
    CALLS.clear()
    replay = await engine.replay_run(ReplayRequest(run_id=first.run.id, mode="failed"))
    await asyncio.wait_for(engine.wait_run(replay.id), 30)
    again = await engine.get_run(replay.id)
    assert again.run.state is RunState.SUCCEEDED
    assert sorted(CALLS) == [2, 5]
    stored = {s.step_id: s for s in await engine.store.get_steps(replay.id)}
    assert stored["each[0]"].reused_from == first.run.id
    assert stored["each[2]"].reused_from is None and stored["each[2]"].state is StepState.SUCCEEDED
    assert again.steps[2].output == sum(n * n for n in range(8))


async def test_children_limit_and_non_list(tmp_path: Path) -> None:
    engine = await make(tmp_path, max_map_children=5)
    try:
        too_many = await finish(engine, flow(6))
        wf = flow(3)
        wf.steps[1].map.over = "steps.plan.output"  # type: ignore[union-attr]
        not_list = await finish(engine, wf)
    finally:
        await engine.stop()
    error = too_many.steps[1].error or ""
    assert "gave 6 items, more than the 5 children a map may have" in error
    assert "max_map_children" in error
    assert CALLS == []
    assert "gave a dict, not a list" in (not_list.steps[1].error or "")


def test_expressions_may_only_read_upstream_steps() -> None:
    text = (
        "id: w\n"
        "steps:\n"
        "  - id: plan\n"
        "    run: {simulated: {}}\n"
        "  - id: side\n"
        "    run: {simulated: {}}\n"
        "  - id: each\n"
        "    depends_on: [plan]\n"
        "    map: {over: '${steps.side.output.tasks}'}\n"
        "    when: steps.nope.state == 'succeeded'\n"
        "    run: {simulated: {}}\n"
    )
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(text, "fan.yaml")
    problems = info.value.problems
    assert any(
        p.startswith("line 9")
        and "map.over reads step 'side', which does not run before 'each'" in p
        for p in problems
    ), problems
    assert any(p.startswith("line 10") and "when reads unknown step 'nope'" in p for p in problems)
