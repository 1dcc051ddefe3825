"""The code that runs inside a Dask worker process: one `run_step` call per step attempt.

The engine submits `run_step` by reference (cloudpickle pickles a module-level function by its
name), so every worker needs voltui installed, the same way the engine has it (`voltui[dask]`).
Paths travel as the engine sees them: the workflow folder (for imports and relative `cwd`) and the
run folder must exist at the same path on the worker, which a shared file system or a worker on
the engine's own machine gives.

Three channels connect an attempt with the engine, all through the scheduler:

- output lines go to the scheduler's event log under `OUTPUT_TOPIC` (`Worker.log_event`, a
  batched stream, no round trip per line); the engine's pool subscribes to that topic once and
  hands each line to the attempt's `ctx.emit`. The returned outcome says how many lines were
  sent, so the engine can wait for stragglers before it reports the step;
- cancellation is a `distributed.Event` named after the attempt's token. A helper thread polls
  it (only while the attempt runs longer than one poll interval, so short steps cost the
  scheduler nothing) and, once set, does what the local agents do on cancellation: sets
  `ctx.cancel_event` for Python steps and cancels the asyncio task of a command step, whose
  process group then gets SIGTERM and SIGKILL after the grace period;
- the outcome is a plain dict returned as the task's result. Exceptions are not raised across:
  `StepError`'s `retryable` flag would not survive pickling, so failures are data too.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from voltui.engine.agents.base import StepContext
from voltui.engine.agents.command import CommandAgent
from voltui.engine.agents.python import (
    _import_target,
    _is_async,
    _wants_context,
    jsonable,
    report_exception,
)
from voltui.engine.errors import StepError
from voltui.engine.models import AgentSpec, Step

__all__ = ["CANCEL_POLL", "OUTPUT_TOPIC", "Outcome", "StepCall", "run_step"]

log = logging.getLogger(__name__)

OUTPUT_TOPIC = "voltui-step-output"
"""Scheduler event-log topic carrying step output lines and attempt start markers."""
CANCEL_POLL = 0.25
"""Seconds between checks of an attempt's cancellation event on the worker."""

Outcome = dict[str, Any]
"""`{"status": "ok" | "failed" | "cancelled", "lines": int, ...}`; see `run_step`."""

T = TypeVar("T")


@dataclass(frozen=True)
class StepCall:
    """Everything a worker needs for one attempt: the picklable part of a `StepContext`."""

    token: str
    """Unique per attempt: the Dask key, the cancellation event's name, the output tag."""
    run_id: str
    step: Step
    attempt: int
    inputs: dict[str, Any]
    upstream: dict[str, Any]
    base_dir: str
    run_dir: str
    cancel_grace: float
    settings: dict[str, Any] = field(default_factory=dict)
    cancel_poll: float = CANCEL_POLL

    @classmethod
    def from_context(
        cls, ctx: StepContext, token: str, *, cancel_poll: float = CANCEL_POLL
    ) -> StepCall:
        return cls(
            token=token,
            run_id=ctx.run_id,
            step=ctx.step,
            attempt=ctx.attempt,
            inputs=dict(ctx.inputs),
            upstream=dict(ctx.upstream),
            base_dir=str(ctx.base_dir),
            run_dir=str(ctx.run_dir),
            cancel_grace=ctx.cancel_grace,
            settings=dict(ctx.settings),
            cancel_poll=cancel_poll,
        )

    def context(
        self, emit: Callable[[Literal["stdout", "stderr", "engine"], str], None]
    ) -> StepContext:
        """The worker's `StepContext`: the same contract step code gets on the engine."""
        return StepContext(
            run_id=self.run_id,
            step=self.step,
            attempt=self.attempt,
            inputs=self.inputs,
            upstream=self.upstream,
            base_dir=Path(self.base_dir),
            run_dir=Path(self.run_dir),
            emit=emit,
            cancel_grace=self.cancel_grace,
            settings=self.settings,
        )


class _Cancelled(Exception):
    """The engine asked this attempt to stop and it did."""


class _Reporter:
    """Sends output lines to the engine through the scheduler's event log, counting them."""

    def __init__(self, worker: Any, token: str) -> None:
        self._worker = worker
        self._token = token
        self._lock = threading.Lock()
        self.count = 0

    def started(self) -> None:
        self._worker.log_event(OUTPUT_TOPIC, {"t": self._token, "s": "started"})

    def emit(self, stream: Literal["stdout", "stderr", "engine"], line: str) -> None:
        # Worker.log_event is thread-safe: from other threads it hops onto the worker's loop.
        with self._lock:
            self.count += 1
            self._worker.log_event(OUTPUT_TOPIC, {"t": self._token, "s": stream, "l": str(line)})


class _CancelWatch:
    """Polls the attempt's `distributed.Event` from a helper thread; runs callbacks once set.

    The thread runs in a copy of the task's context, so `get_client()` finds the worker and
    reuses its client instead of opening a connection per attempt.
    """

    def __init__(self, name: str, poll: float) -> None:
        self._name = name
        self._poll = max(0.01, poll)
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self.cancelled_at: float | None = None
        self._thread: threading.Thread | None = None

    @property
    def cancelled(self) -> bool:
        return self.cancelled_at is not None

    def start(self) -> None:
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run,
            args=(self._watch,),
            name=f"voltui-cancel-{self._name}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._done.set()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Run `callback` when cancelled (at once if that already happened)."""
        with self._lock:
            if self.cancelled_at is None:
                self._callbacks.append(callback)
                return
        _quietly(callback)

    def _watch(self) -> None:
        from distributed import Event, get_client

        event: Any = None
        while not self._done.wait(self._poll):
            try:
                if event is None:
                    event = Event(self._name, client=get_client())
                if event.is_set():
                    break
            except Exception as exc:  # scheduler briefly unreachable: keep the step running
                log.debug("cancellation check for %s failed: %s", self._name, exc)
        else:
            return
        with self._lock:
            self.cancelled_at = time.monotonic()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _quietly(callback)


def _quietly(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        log.exception("cancellation callback failed")


def _run_async(awaitable: Awaitable[T], watch: _CancelWatch) -> T:
    """Run a coroutine on a private loop in this task thread; a cancel cancels its task."""

    async def main() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def cancel() -> None:
            with contextlib.suppress(RuntimeError):  # the loop already closed: nothing to stop
                loop.call_soon_threadsafe(task.cancel)

        watch.on_cancel(cancel)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if watch.cancelled:
                raise _Cancelled from None
            raise

    return asyncio.run(main())


def _is_machinery(filename: str) -> bool:
    """Frames of this module, of asyncio and of Dask's executor are noise to a step's author."""
    import distributed

    prefixes = (
        os.path.dirname(asyncio.__file__) + os.sep,
        os.path.dirname(distributed.__file__) + os.sep,
        threading.__file__,
    )
    return filename == __file__ or filename.startswith(prefixes)


def _report_exception(ctx: StepContext, exc: BaseException) -> None:
    """The innermost frames of a failing Python step go to its stderr log, as locally."""
    report_exception(ctx, exc, _is_machinery)


def _run_python(ctx: StepContext, watch: _CancelWatch, where: str) -> Any:
    target = ctx.step.run.python
    if not target:
        raise StepError(f"step {ctx.step.id!r} has no python target", retryable=False)
    try:
        func = _import_target(target, ctx.base_dir)
    except StepError as exc:
        raise StepError(f"on Dask worker {where}: {exc}", retryable=exc.retryable) from exc
    watch.on_cancel(ctx.cancel_event.set)
    args = (ctx,) if _wants_context(func) else ()
    try:
        if _is_async(func):
            result = _run_async(func(*args), watch)
        else:
            # Runs in this Dask task thread, which is the slot the engine reserved for it.
            result = func(*args)
            if inspect.isawaitable(result):
                result = _run_async(result, watch)
    except (StepError, _Cancelled):
        raise
    except SystemExit as exc:
        if exc.code not in (0, None):
            _report_exception(ctx, exc)
            code = exc.code if isinstance(exc.code, int) else 1
            raise StepError(f"SystemExit: {exc.code}", exit_code=code) from exc
        result = None
    except Exception as exc:
        _report_exception(ctx, exc)
        raise StepError(f"{type(exc).__name__}: {exc}") from exc
    if watch.cancelled:
        raise _Cancelled  # finished after the cancel: the engine has moved on without it
    return jsonable(result, target)


def _run_command(ctx: StepContext, watch: _CancelWatch, where: str) -> Any:
    """The engine's own CommandAgent, run here: same argv rules, environment, process group
    handling and line cutting as a local command step."""
    agent = CommandAgent(AgentSpec(id="dask-worker-side", kind="command"))
    try:
        return _run_async(agent.execute(ctx), watch)
    except StepError as exc:
        if exc.retryable:
            raise
        # Set-up problems (missing program, missing cwd) are about this worker's machine.
        raise StepError(f"on Dask worker {where}: {exc}", retryable=False) from exc


def run_step(call: StepCall) -> Outcome:
    """Run one attempt on this worker and describe how it ended.

    Returns `{"status": "ok", "output": ..., "lines": n}`,
    `{"status": "failed", "error": str, "retryable": bool, "exit_code": int | None, ...}` or
    `{"status": "cancelled", "stopped_after": seconds since the cancel was seen, ...}`.
    """
    from distributed import get_worker

    worker = get_worker()
    reporter = _Reporter(worker, call.token)
    reporter.started()
    ctx = call.context(reporter.emit)
    with contextlib.suppress(OSError):
        # The engine made it on its side; a remote worker may not share that folder.
        Path(call.run_dir).mkdir(parents=True, exist_ok=True)
    watch = _CancelWatch(call.token, call.cancel_poll)
    watch.start()
    try:
        kind = call.step.run.kind
        if kind == "python":
            output = _run_python(ctx, watch, worker.address)
        elif kind == "command":
            output = _run_command(ctx, watch, worker.address)
        else:
            raise StepError(f"a Dask worker cannot run {kind!r} steps", retryable=False)
    except _Cancelled:
        assert watch.cancelled_at is not None
        return {
            "status": "cancelled",
            "stopped_after": time.monotonic() - watch.cancelled_at,
            "lines": reporter.count,
        }
    except StepError as exc:
        return {
            "status": "failed",
            "error": str(exc),
            "retryable": exc.retryable,
            "exit_code": exc.exit_code,
            "lines": reporter.count,
        }
    finally:
        watch.stop()
    return {"status": "ok", "output": output, "lines": reporter.count}
