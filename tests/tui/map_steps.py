"""Python steps for the dashboard's map tests: a plan that lists items and a child step that
works on one of them (run by the real engine's python agent, no mocks).

What a child does is carried by its item, so a test says it in the plan's params: `fail` lists
the items that fail while the file named by `fail_if` exists (removing the file lets a replay
of the failed children succeed), `slow` the items that sleep `slow_seconds` (cancellable).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any


def plan(ctx: Any) -> dict[str, Any]:
    params = ctx.params
    fail = set(params.get("fail") or ())
    slow = set(params.get("slow") or ())
    return {
        "tasks": [
            {
                "n": i,
                "fail_if": params.get("fail_if") if i in fail else None,
                "slow": params.get("slow_seconds", 600.0) if i in slow else 0,
            }
            for i in range(int(params.get("count", 0)))
        ]
    }


async def work(ctx: Any) -> dict[str, Any]:
    item = ctx.params["item"]
    n = item["n"]
    ctx.log(f"working on {n}")
    if item["slow"]:
        await asyncio.sleep(item["slow"])
    if item["fail_if"] and await asyncio.to_thread(os.path.exists, item["fail_if"]):
        raise RuntimeError(f"item {n} is broken")
    ctx.log(f"done with {n}")
    return {"n": n}


def total(ctx: Any) -> int:
    return sum(1 for r in ctx.upstream["each"] if r is not None)
