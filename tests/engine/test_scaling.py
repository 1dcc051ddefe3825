"""Cost per step must not grow with the size of the run (DESIGN rule 8).

Counted, never timed: the same layered DAG at 1,000 and 10,000 steps, and every Python function
call made on the event loop's thread while it runs. A quadratic path (a scan over all steps each
time one finishes, a rewrite of the whole run row per step) makes the calls per step of the
large run several times those of the small one; a linear engine keeps them equal.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

from voltui.config import OrchestratorConfig
from voltui.engine.models import AgentSpec, RunState, Workflow
from voltui.engine.orchestrator import Orchestrator

WIDTH = 50


def layered(n: int) -> Workflow:
    rng = random.Random(3)
    steps: list[dict[str, Any]] = []
    previous: list[str] = []
    for start in range(0, n, WIDTH):
        layer = [f"s{i}" for i in range(start, min(n, start + WIDTH))]
        for sid in layer:
            deps = rng.sample(previous, 3) if previous else []
            steps.append({"id": sid, "depends_on": deps, "run": {"simulated": {"duration": 0}}})
        previous = layer
    return Workflow.model_validate({"id": f"scale{n}", "max_parallel": 32, "steps": steps})


async def _calls_per_step(tmp_path: Path, n: int) -> tuple[float, float, float]:
    config = OrchestratorConfig(
        db=tmp_path / f"scale{n}.db",
        workflow_timeout=None,
        agents=[AgentSpec(id="sim", kind="simulated", capacity=32)],
    )
    wf = layered(n)
    async with Orchestrator(config) as engine:
        emitted = engine.dispatcher.stats().total
        calls = 0

        def count(frame: Any, event: str, arg: Any) -> None:
            nonlocal calls
            if event == "call":
                calls += 1

        sys.setprofile(count)
        try:
            run = await engine.run_workflow(wf)
            final = await engine.wait_run(run.id)
        finally:
            sys.setprofile(None)
        assert final.state is RunState.SUCCEEDED
        assert final.steps_done == final.steps_succeeded == n
        events = engine.dispatcher.stats().total - emitted
        touches = engine.workflows.touches
    return calls / n, events / n, touches / n


async def test_engine_work_per_step_is_the_same_at_1000_and_10000_steps(tmp_path: Path) -> None:
    small_calls, small_events, small_touches = await _calls_per_step(tmp_path, 1_000)
    big_calls, big_events, big_touches = await _calls_per_step(tmp_path, 10_000)
    # Calls per step on the loop thread: equal within noise (task scheduling order varies).
    assert big_calls / small_calls < 1.25, (small_calls, big_calls)
    # Each step is visited once when launched and once per incoming edge (3 here).
    assert small_touches <= 4.0 and big_touches <= 4.0, (small_touches, big_touches)
    # A bounded number of events per step: started, succeeded, a share of progress and load.
    assert small_events < 4 and big_events < 4, (small_events, big_events)
