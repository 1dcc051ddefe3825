"""Run a step as a Python function inside the engine process: `run: {python: "pkg.mod:func"}`.

The module is imported with the workflow folder first on `sys.path`, so a workflow can ship its
step code next to its file. Imports happen under a lock because `sys.path` is process-wide, and the
module stays in `sys.modules` afterwards (later steps and runs reuse it; a module named like one
already imported from elsewhere resolves to that one, as any Python import would).

A function that takes a positional parameter gets the `StepContext`; one that takes none is
called bare. Coroutine functions run on the event loop; plain functions run in a worker thread so
they cannot stall the engine. A thread cannot be interrupted, so on cancellation (or a timeout)
the agent sets `ctx.cancel_event` and then waits for the function to return before the step
counts as stopped: the agent slot stays taken and the run stays `cancelling` meanwhile, so a
cancelled run never has work still writing into its folder. Long sync steps should check that
event.

A target is resolved (imported, inspected) once per agent and workflow folder, not on every
attempt: importing is slow and the answer does not change while the engine runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import functools
import importlib
import inspect
import os
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from pydantic_core import PydanticSerializationError, to_jsonable_python

from voltui.engine.agents.base import Agent, StepContext
from voltui.engine.errors import StepError
from voltui.engine.models import AgentSpec, RunKind

TRACEBACK_FRAMES = 5
"""How many innermost frames of a failing step's traceback go to its stderr log."""

_import_lock = threading.Lock()


def _import_target(target: str, base_dir: Path) -> Callable[..., Any]:
    """Resolve `pkg.module:attr.path`, importing with `base_dir` first on `sys.path`."""
    module_name, _, attr_path = target.partition(":")
    if not module_name or not attr_path:
        raise StepError(
            f"python target {target!r} must look like 'package.module:function'",
            retryable=False,
        )
    where = str(base_dir)
    with _import_lock:
        added = where not in sys.path
        if added:
            sys.path.insert(0, where)
        try:
            importlib.invalidate_caches()  # files written since the last import must be seen
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise StepError(
                f"cannot import module {module_name!r} for python step {target!r} "
                f"(searched the workflow folder {where!r} first, then sys.path): "
                f"{type(exc).__name__}: {exc}",
                retryable=False,
            ) from exc
        finally:
            if added:
                with contextlib.suppress(ValueError):
                    sys.path.remove(where)
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise StepError(
                f"module {module_name!r} ({getattr(module, '__file__', '?')}) has no "
                f"attribute {attr_path!r} for python step {target!r}",
                retryable=False,
            ) from exc
    if not callable(obj):
        raise StepError(f"{target!r} is a {type(obj).__name__}, not a function", retryable=False)
    return obj


def _wants_context(func: Callable[..., Any]) -> bool:
    """True when the function has at least one positional parameter (it receives `ctx`)."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return True  # builtins without a signature: passing ctx is the documented contract
    positional = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.VAR_POSITIONAL,
    )
    return any(p.kind in positional for p in params)


def _is_async(func: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - async callable objects
    )


def _thread_safe(ctx: StepContext, loop: asyncio.AbstractEventLoop) -> StepContext:
    """A copy of `ctx` whose `emit` may be called from a worker thread.

    Engine sinks belong to the event loop, so calls from other threads are handed to the loop in
    order; after cancellation, lines from the still-running thread are dropped.
    """
    sink = ctx.emit
    loop_thread = threading.get_ident()

    def emit(stream: Literal["stdout", "stderr", "engine"], line: str) -> None:
        if threading.get_ident() == loop_thread:
            sink(stream, line)
            return
        if ctx.cancel_event.is_set():
            return
        try:
            loop.call_soon_threadsafe(sink, stream, line)
        except RuntimeError:  # loop closed: the step is long gone
            pass

    return dataclasses.replace(ctx, emit=emit)


_MACHINERY = (
    os.path.dirname(asyncio.__file__) + os.sep,
    os.path.dirname(concurrent.futures.__file__) + os.sep,
)


def _is_machinery(filename: str) -> bool:
    """Frames of this agent and of the executor that called the step are noise to its author."""
    return filename == __file__ or filename.startswith(_MACHINERY)


def report_exception(
    ctx: StepContext, exc: BaseException, is_noise: Callable[[str], bool] = _is_machinery
) -> None:
    """The innermost frames are where the step's author needs to look; send those to stderr.
    `is_noise` names the frames of whatever ran the step (this agent, or a Dask worker)."""
    frames = traceback.StackSummary.from_list(
        [f for f in traceback.extract_tb(exc.__traceback__) if not is_noise(f.filename)][
            -TRACEBACK_FRAMES:
        ]
    )
    lines = ["Traceback (most recent call last):", *frames.format()]
    lines.extend(traceback.format_exception_only(type(exc), exc))
    for chunk in lines:
        for line in chunk.rstrip("\n").splitlines():
            ctx.emit("stderr", line)


def jsonable(value: Any, target: str) -> Any:
    """Convert the return value to plain JSON data (pydantic models, dataclasses, paths and dates
    are converted); anything else is a mistake in the step, reported once, not retried."""
    try:
        return to_jsonable_python(value)
    except PydanticSerializationError as exc:
        raise StepError(
            f"the return value of {target!r} is not JSON-able ({type(value).__name__}: {exc}); "
            "return a dict, list, str, number, bool or None (pydantic models and dataclasses "
            "are converted)",
            retryable=False,
        ) from exc


async def _outlive(work: concurrent.futures.Future[Any]) -> None:
    """Wait until a worker thread's function has returned, whatever cancels us meanwhile.

    Cancelling the awaiting task cancels only the asyncio wrapper (and the work itself only if
    it had not started); a running thread runs on. The loop keeps waiting through repeated
    cancellations (a second Ctrl-C, an engine stop) so the slot and the run are given up only
    once the work stopped.
    """
    while not work.done():
        try:
            await asyncio.wrap_future(work)
        except asyncio.CancelledError:
            continue
        except Exception:
            return


class PythonAgent(Agent):
    """Runs `python` steps in the engine's own process and interpreter."""

    kinds: frozenset[RunKind] = frozenset({"python"})

    def __init__(self, spec: AgentSpec) -> None:
        super().__init__(spec)
        self._executor: ThreadPoolExecutor | None = None
        self._resolved: dict[tuple[str, Path], tuple[Callable[..., Any], bool, bool]] = {}

    async def _resolve(self, target: str, base_dir: Path) -> tuple[Callable[..., Any], bool, bool]:
        """(function, is it async, does it take ctx), imported on first use only."""
        key = (target, base_dir)
        found = self._resolved.get(key)
        if found is None:
            func = await asyncio.to_thread(_import_target, target, base_dir)
            found = self._resolved[key] = (func, _is_async(func), _wants_context(func))
        return found

    def _pool(self) -> ThreadPoolExecutor:
        """Sync steps get this agent's own threads, not the loop's default executor, so blocking
        step code cannot starve the engine's other thread work (DNS lookups, LLM calls).

        Twice the capacity: a cancelled sync step keeps its thread until it returns, and
        should not hold up the next step for long.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=2 * self.spec.capacity,
                thread_name_prefix=f"voltui-python-{self.id}",
            )
        return self._executor

    async def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def execute(self, ctx: StepContext) -> Any:
        target = ctx.step.run.python
        if not target:
            raise StepError(
                f"step {ctx.step.id!r} has no python target; the python agent cannot run it",
                retryable=False,
            )
        func, is_async, wants_ctx = await self._resolve(target, ctx.base_dir)
        loop = asyncio.get_running_loop()
        try:
            if is_async:
                result = await (func(ctx) if wants_ctx else func())
            else:
                thread_ctx = _thread_safe(ctx, loop)
                args = (thread_ctx,) if wants_ctx else ()
                call = functools.partial(contextvars.copy_context().run, func, *args)
                work = self._pool().submit(call)
                try:
                    result = await asyncio.wrap_future(work)
                except asyncio.CancelledError:
                    ctx.cancel_event.set()
                    await _outlive(work)
                    raise
                if inspect.isawaitable(result):
                    result = await result
        except asyncio.CancelledError:
            ctx.cancel_event.set()
            raise
        except StepError:
            raise  # the step chose its own message and retryability
        except SystemExit as exc:
            # Must not reach the event loop: it would stop the whole engine.
            if exc.code in (0, None):
                result = None
            else:
                report_exception(ctx, exc)
                code = exc.code if isinstance(exc.code, int) else 1
                raise StepError(f"SystemExit: {exc.code}", exit_code=code) from exc
        except Exception as exc:
            report_exception(ctx, exc)
            raise StepError(f"{type(exc).__name__}: {exc}") from exc
        return jsonable(result, target)
