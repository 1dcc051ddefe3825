"""What an agent's `done` and `failed` figures count, through the whole engine.

`failed` is "steps that failed on this agent": an attempt that errors and is tried again is not
one (the step may well succeed), and neither is an attempt stopped by a cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voltui.config import OrchestratorConfig
from voltui.engine.api import StartRequest
from voltui.engine.models import AgentLoad, RunState
from voltui.engine.orchestrator import Orchestrator

SLOW = """
id: slow
steps:
  - id: sleep
    requires: [simulated]
    agent: sim-1
    run: {simulated: {duration: 60s}}
"""

FLAKY = """
id: flaky_sim
retry: {max_attempts: 3, base_delay: 10ms, max_delay: 10ms, jitter: 0}
steps:
  - id: wobbly
    requires: [simulated]
    agent: sim-1
    run: {simulated: {duration: 10ms, fail_attempts: 1}}
"""

HOPELESS = """
id: hopeless
steps:
  - id: doomed
    requires: [simulated]
    agent: sim-1
    run: {simulated: {duration: 10ms, fail_attempts: 5}}
"""


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Orchestrator]:
    orch = Orchestrator(OrchestratorConfig(db=tmp_path / "x.db", workflows_dir=tmp_path / "wf"))
    await orch.start(watch=False)
    try:
        yield orch
    finally:
        await orch.stop()


def write(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(body, encoding="utf-8")
    return str(path)


async def sim1(engine: Orchestrator) -> AgentLoad:
    snap = await engine.snapshot()
    return next(a for a in snap.agents if a.id == "sim-1")


async def test_cancelled_attempt_is_not_a_failure(engine: Orchestrator, tmp_path: Path) -> None:
    run = await engine.start_workflow(StartRequest(workflow=write(tmp_path, "slow", SLOW)))
    for _ in range(200):
        if (await sim1(engine)).active:
            break
        await asyncio.sleep(0.02)
    assert (await sim1(engine)).active == 1
    done = await engine.cancel_run(run.id)
    assert done.state is RunState.CANCELLED
    load = await sim1(engine)
    assert (load.active, load.completed, load.failed) == (0, 0, 0)


async def test_final_failure_counts_once(engine: Orchestrator, tmp_path: Path) -> None:
    run = await engine.start_workflow(StartRequest(workflow=write(tmp_path, "h", HOPELESS)))
    assert (await engine.wait_run(run.id)).state is RunState.FAILED
    load = await sim1(engine)
    assert (load.completed, load.failed) == (0, 1)


async def test_retried_attempt_is_not_a_failure(engine: Orchestrator, tmp_path: Path) -> None:
    run = await engine.start_workflow(StartRequest(workflow=write(tmp_path, "f", FLAKY)))
    assert (await engine.wait_run(run.id)).state is RunState.SUCCEEDED
    load = await sim1(engine)
    assert (load.completed, load.failed) == (1, 0)


async def test_agent_counts_continue_across_a_restart(tmp_path: Path) -> None:
    from voltui.engine.models import AgentSpec, Workflow

    config = OrchestratorConfig(
        db=tmp_path / "c.db", agents=[AgentSpec(id="sim", kind="simulated", capacity=2)]
    )
    wf = Workflow.model_validate(
        {
            "id": "w",
            "steps": [
                {"id": "ok", "run": {"simulated": {"duration": 0}}},
                {"id": "bad", "run": {"simulated": {"duration": 0, "fail_attempts": 3}}},
            ],
        }
    )
    for _restart in range(2):
        async with Orchestrator(config) as engine:
            run = await engine.run_workflow(wf)
            await engine.wait_run(run.id)
            load = engine.coordination.loads()[0]
    # The second engine counted the first engine's steps too.
    assert (load.completed, load.failed) == (2, 2)
    assert load.mean_latency is not None
