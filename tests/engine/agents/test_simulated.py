"""SimulatedAgent: reproducible fake work for demos and load tests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from voltui.engine.agents.base import StepContext
from voltui.engine.agents.simulated import SimulatedAgent
from voltui.engine.errors import StepError
from voltui.engine.models import AgentSpec, Step


def agent(**config: Any) -> SimulatedAgent:
    return SimulatedAgent(AgentSpec(id="sim-1", kind="simulated", config=config))


def make_ctx(
    tmp_path: Path, simulated: dict[str, Any], *, step_id: str = "s", attempt: int = 1
) -> tuple[StepContext, list[tuple[str, str]]]:
    lines: list[tuple[str, str]] = []
    step = Step.model_validate({"id": step_id, "run": {"simulated": simulated}})
    ctx = StepContext(
        run_id="r1",
        step=step,
        attempt=attempt,
        inputs={},
        upstream={},
        base_dir=tmp_path,
        run_dir=tmp_path,
        emit=lambda stream, line: lines.append((stream, line)),
    )
    return ctx, lines


async def outcomes(sim: SimulatedAgent, tmp_path: Path) -> list[tuple[float, str]]:
    """(planned seconds, ok/fail) for a spread of steps and attempts."""
    call = {"duration": 5, "jitter": 0.5, "failure_rate": 0.5}
    result: list[tuple[float, str]] = []
    for i in range(12):
        ctx, _ = make_ctx(tmp_path, call, step_id=f"step{i % 4}", attempt=1 + i // 4)
        assert ctx.step.run.simulated is not None
        planned = sim.plan(ctx.step.run.simulated, sim.rng(ctx))
        try:
            await sim.execute(ctx)
            result.append((planned, "ok"))
        except StepError:
            result.append((planned, "fail"))
    return result


async def test_same_seed_same_outcomes(tmp_path: Path) -> None:
    first = await outcomes(agent(seed=7, speed=10_000), tmp_path)
    again = await outcomes(agent(seed=7, speed=10_000), tmp_path)
    other = await outcomes(agent(seed=8, speed=10_000), tmp_path)
    assert first == again
    assert first != other
    assert {o for _, o in first} == {"ok", "fail"}  # failure_rate 0.5 really draws
    # jitter 0.5 around 5 s, divided by speed
    assert all(2.5 / 10_000 <= d <= 7.5 / 10_000 for d, _ in first)
    assert len({d for d, _ in first}) > 1


async def test_fail_attempts_then_success(tmp_path: Path) -> None:
    sim = agent(speed=1000)
    call = {"duration": 1, "fail_attempts": 2, "output": {"answer": 42, "agent": "custom"}}
    for attempt in (1, 2):
        ctx, _ = make_ctx(tmp_path, call, attempt=attempt)
        with pytest.raises(StepError, match=f"simulated failure on attempt {attempt}") as info:
            await sim.execute(ctx)
        assert info.value.retryable
    ctx, _ = make_ctx(tmp_path, call, attempt=3)
    assert await sim.execute(ctx) == {"simulated": True, "agent": "custom", "answer": 42}


async def test_failure_rate_extremes(tmp_path: Path) -> None:
    sim = agent(speed=1000)
    ctx, _ = make_ctx(tmp_path, {"duration": 0, "failure_rate": 1.0})
    with pytest.raises(StepError, match="simulated failure"):
        await sim.execute(ctx)
    ctx, _ = make_ctx(tmp_path, {"duration": 0, "failure_rate": 0.0})
    assert await sim.execute(ctx) == {"simulated": True, "agent": "sim-1"}


async def test_output_lines_are_emitted(tmp_path: Path) -> None:
    ctx, lines = make_ctx(tmp_path, {"duration": 2, "output_lines": 5})
    # speed 100: 2 s of simulated work takes 20 ms
    await asyncio.wait_for(agent(speed=100).execute(ctx), timeout=10)
    assert len(lines) == 5
    assert all(stream == "stdout" and line.startswith("[simulated] ") for stream, line in lines)
    assert lines[-1][1].endswith("(5/5)")


async def test_speed_divides_duration(tmp_path: Path) -> None:
    sim = agent(speed=4)
    ctx, _ = make_ctx(tmp_path, {"duration": "10s"})
    assert ctx.step.run.simulated is not None
    assert sim.plan(ctx.step.run.simulated, sim.rng(ctx)) == 2.5
    # A one-hour step at a huge speed finishes promptly.
    ctx, _ = make_ctx(tmp_path, {"duration": "1h"})
    await asyncio.wait_for(agent(speed=1_000_000).execute(ctx), timeout=10)


async def test_cancellable_while_sleeping(tmp_path: Path) -> None:
    ctx, _ = make_ctx(tmp_path, {"duration": "1h", "output_lines": 3})
    task = asyncio.create_task(agent().execute(ctx))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_bad_speed_is_reported(tmp_path: Path) -> None:
    ctx, _ = make_ctx(tmp_path, {"duration": 1})
    with pytest.raises(StepError, match="speed") as info:
        await agent(speed=0).execute(ctx)
    assert not info.value.retryable
