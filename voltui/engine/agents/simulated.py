"""Fake work for demos and load tests ONLY: a step that sleeps, talks and sometimes fails.

It lets the dashboard, the balancer and the retry logic be exercised (and snapshot-tested)
without real programs. Never use it for real work: it does nothing.

Agent config: `seed` makes every decision reproducible and `speed` divides all durations (a demo
at speed 10 runs ten times faster). Each attempt draws from its own generator seeded by
`(seed, step id, attempt)`, so the outcome of one step does not depend on which steps happened
to run before it on the same agent.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from voltui.engine.agents.base import Agent, StepContext
from voltui.engine.errors import StepError
from voltui.engine.models import RunKind, SimulatedCall

_SHARED = random.Random()


class SimulatedAgent(Agent):
    """Runs `simulated` steps; for demos and load tests only."""

    kinds: frozenset[RunKind] = frozenset({"simulated"})

    @property
    def speed(self) -> float:
        speed = float(self.spec.config.get("speed", 1.0))
        if speed <= 0:
            raise StepError(
                f"agent {self.id!r}: config speed must be above 0 (got {speed})", retryable=False
            )
        return speed

    def rng(self, ctx: StepContext) -> random.Random:
        seed = self.spec.config.get("seed")
        if seed is None:
            return _SHARED  # a fresh Random() reads the OS entropy pool: slow for load tests
        return random.Random(f"{seed}:{ctx.step.id}:{ctx.attempt}")

    def plan(self, call: SimulatedCall, rng: random.Random) -> float:
        """Seconds this attempt takes: duration +/- jitter, divided by speed."""
        factor = 1.0 + rng.uniform(-call.jitter, call.jitter) if call.jitter else 1.0
        return max(0.0, call.duration * factor) / self.speed

    async def execute(self, ctx: StepContext) -> Any:
        call = ctx.step.run.simulated
        if call is None:
            raise StepError(
                f"step {ctx.step.id!r} has no simulated call; the simulated agent cannot run it",
                retryable=False,
            )
        rng = self.rng(ctx)
        duration = self.plan(call, rng)
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = call.output_lines
        # Lines at even intervals inside the duration; deadlines from `start` avoid drift.
        for i in range(n):
            await asyncio.sleep(max(0.0, start + duration * (i + 1) / (n + 1) - loop.time()))
            ctx.emit("stdout", f"[simulated] {ctx.step.id}: working ({i + 1}/{n})")
        await asyncio.sleep(max(0.0, start + duration - loop.time()))

        if ctx.attempt <= call.fail_attempts:
            raise StepError(
                f"simulated failure on attempt {ctx.attempt} (fail_attempts={call.fail_attempts})"
            )
        if call.failure_rate and rng.random() < call.failure_rate:
            raise StepError(f"simulated failure (failure_rate={call.failure_rate:g})")
        return {"simulated": True, "agent": self.id, **call.output}
