"""Waiting for a condition in engine tests: poll, with a generous limit, never a fixed sleep."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

LIMIT = 30.0


async def until(
    predicate: Callable[[], bool | Awaitable[bool]], what: str = "", limit: float = LIMIT
) -> None:
    """Return once `predicate()` (plain or async) is true; fail naming `what` after `limit`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)
