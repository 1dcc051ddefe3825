"""DaskWorkerAgent: one Dask worker, seen by the coordination engine as an ordinary agent.

The coordinator, balancer, retries, timeouts, the dashboard and attach mode need no special case:
the agent's capacity is the worker's thread count, its capabilities come from the worker's
resources, and `execute` runs one attempt there and returns its output like any other agent.

An attempt is a Dask task pinned to this worker (`workers=[address]`, `allow_other_workers=False`,
`pure=False`): the engine chose the worker, and Dask must neither move the task elsewhere nor
reuse a result. Failures map onto the engine's retry rules:

- the step fails on the worker: its own message, exit code and retryability;
- the worker leaves the cluster: the pool marks this agent lost and unregisters it, and the
  attempt fails as retryable so the step's retry policy sends it to another agent (a task pinned
  to a dead worker would otherwise wait forever for that worker to come back);
- the connection to the scheduler drops: Dask cancels the client's futures and the attempt fails
  as retryable; retries wait while the agents are marked unhealthy, and fail clearly if the pool
  gives up on the scheduler and unregisters them.

Cancellation (operator cancel or step timeout) arrives as `asyncio.CancelledError`. A task that
never started is cancelled through the client. A running one is asked to stop through its
`distributed.Event`; the agent then waits up to the grace period (plus a little for the signal
to travel) for the worker to confirm, and writes which of the two happened to the step's log
before letting the cancellation go on, so the run shows cancelled only after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from voltui.engine.agents.base import Agent, StepContext
from voltui.engine.dask.worker_side import CANCEL_POLL, Outcome, StepCall, run_step
from voltui.engine.durations import format_duration
from voltui.engine.errors import StepError
from voltui.engine.models import AgentSpec, RunKind

if TYPE_CHECKING:
    from voltui.engine.dask.pool import DaskPool, OutputStream

__all__ = ["BASE_CAPABILITIES", "DaskWorkerAgent", "agent_id_for"]

BASE_CAPABILITIES = ("dask", "python", "shell")
"""Every Dask worker agent offers these; worker resources and pool extras are added."""
STOP_SLACK = 3.0
"""Seconds beyond the grace period for a stop to be seen, done and confirmed by the worker."""
DRAIN_TIMEOUT = 5.0
"""Seconds to wait for output lines still in transit when the result has already arrived."""
START_WINDOW = 0.5
"""Seconds a cancelled attempt's start marker gets to arrive before the task counts as queued."""
QUIET_TIMEOUT = 5.0
"""Seconds a best-effort scheduler call may take during cleanup."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def agent_id_for(address: str) -> str:
    """`tcp://10.0.0.5:40123` -> `dask-10.0.0.5-40123` (`[::1]` -> `__1`): stable, readable,
    and a valid agent id."""
    rest = address.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    text = f"{host.strip('[]').replace(':', '_')}-{port}" if sep and port.isdigit() else rest
    return "dask-" + (_UNSAFE.sub("-", text).strip("-") or "worker")[:100]


class DaskWorkerAgent(Agent):
    """Runs `python` and `command` steps on one Dask worker."""

    kinds: ClassVar[frozenset[RunKind]] = frozenset({"python", "command"})

    def __init__(
        self, spec: AgentSpec, *, pool: DaskPool, address: str, cancel_poll: float = CANCEL_POLL
    ) -> None:
        super().__init__(spec)
        self._pool = pool
        self.address = address
        """The worker's address as the scheduler knows it."""
        self._cancel_poll = cancel_poll
        self._lost = asyncio.Event()
        self._lost_reason = f"Dask worker {address} is gone"
        self.worker_status = "running"
        """The worker's status at the last poll (`running`, `paused`, `closing_gracefully`)."""

    @classmethod
    def from_worker(
        cls,
        pool: DaskPool,
        address: str,
        info: dict[str, Any],
        *,
        capabilities: tuple[str, ...] = (),
        weight: float = 1.0,
        cancel_poll: float = CANCEL_POLL,
    ) -> DaskWorkerAgent:
        """Build the agent from the scheduler's description of the worker (`identity()`)."""
        resources = {str(k): v for k, v in (info.get("resources") or {}).items()}
        caps = list(dict.fromkeys([*BASE_CAPABILITIES, *resources, *capabilities]))
        nthreads = int(info.get("nthreads") or 1)
        name = info.get("name")
        spec = AgentSpec(
            id=agent_id_for(address),
            kind="dask",
            capabilities=caps,
            capacity=max(1, min(10_000, nthreads)),
            weight=weight,
            description=f"Dask worker {address}" + (f" ({name})" if name is not None else ""),
            config={
                "address": address,
                "scheduler": pool.scheduler_address,
                "name": None if name is None else str(name),
                "host": info.get("host"),
                "nthreads": nthreads,
                "resources": resources,
                "memory_limit": info.get("memory_limit"),
            },
        )
        agent = cls(spec, pool=pool, address=address, cancel_poll=cancel_poll)
        agent.worker_status = str(info.get("status") or "running")
        return agent

    # ------------------------------------------------------------------ state

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    @property
    def ready(self) -> bool:
        """Whether the worker may take new work now."""
        return not self.lost and self._pool.connected and self.worker_status == "running"

    def mark_lost(self, reason: str) -> None:
        """The worker is gone for good: running attempts fail now as retryable."""
        if not self._lost.is_set():
            self._lost_reason = reason
            self._lost.set()

    async def check_health(self) -> bool:
        # No await here: the orchestrator's agent check must see a consistent registry.
        return self.ready

    async def close(self) -> None:
        self.mark_lost(f"agent {self.id} (Dask worker {self.address}) was unregistered")

    # ------------------------------------------------------------------ execution

    async def execute(self, ctx: StepContext) -> Any:
        if self.lost:
            raise StepError(self._lost_reason, retryable=True)
        client = self._pool.require_client()
        token = f"voltui-{ctx.step.id}-{ctx.attempt}-{ctx.run_id}-{uuid.uuid4().hex[:8]}"
        call = StepCall.from_context(ctx, token, cancel_poll=self._cancel_poll)
        stream = self._pool.open_stream(token, ctx.emit)
        future: Any = None
        result: asyncio.Future[tuple[str, Any]] | None = None
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            try:
                future = client.submit(
                    run_step,
                    call,
                    key=token,
                    workers=[self.address],
                    allow_other_workers=False,
                    pure=False,
                )
            except Exception as exc:  # the client is closing or lost its scheduler
                raise StepError(
                    f"could not submit the step to Dask worker {self.address}: "
                    f"{type(exc).__name__}: {exc}",
                    retryable=True,
                ) from exc
            result = asyncio.ensure_future(_settle(future))
            try:
                await asyncio.wait({result, lost}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                await self._stop(ctx, client, future, token, stream, result)
                raise
            if not result.done():
                await _quiet(lambda: client.cancel([future]))
                raise StepError(
                    f"{self._lost_reason} while step {ctx.step.id!r} ran there; it is retried "
                    "on another agent if its retry policy allows",
                    retryable=True,
                )
            status, value = result.result()
            return await self._outcome(status, value, stream)
        finally:
            lost.cancel()
            if result is not None:
                result.cancel()
            self._pool.close_stream(token)
            if future is not None:
                with contextlib.suppress(Exception):
                    future.release()

    async def _outcome(self, status: str, value: Any, stream: OutputStream) -> Any:
        """Turn the settled future into the step's output or a StepError."""
        if status == "done" and isinstance(value, dict):
            outcome: Outcome = value
            with contextlib.suppress(TimeoutError):  # lines lost in transit: report anyway
                async with asyncio.timeout(DRAIN_TIMEOUT):
                    await stream.drain(int(outcome.get("lines", 0)))
            if outcome.get("status") == "ok":
                return outcome.get("output")
            if outcome.get("status") == "failed":
                raise StepError(
                    str(outcome.get("error")),
                    exit_code=outcome.get("exit_code"),
                    retryable=bool(outcome.get("retryable", True)),
                )
            raise StepError(
                f"the step was stopped on Dask worker {self.address} by a cancellation signal "
                "this attempt did not send",
                retryable=True,
            )
        if status == "cancelled":
            reason = getattr(value, "reason", None) or "unknown reason"
            if not self._pool.connected or "connection" in str(reason):
                raise StepError(
                    f"lost the connection to the Dask scheduler at {self._pool.scheduler_address} "
                    f"while the step ran on worker {self.address}; it is retried if its retry "
                    "policy allows once the scheduler is back",
                    retryable=True,
                )
            raise StepError(
                f"the Dask task was cancelled outside voltui ({reason}) on worker {self.address}",
                retryable=True,
            )
        if self.lost or type(value).__name__ == "KilledWorker":
            raise StepError(
                f"{self._lost_reason} while the step ran there ({type(value).__name__}: {value})",
                retryable=True,
            )
        raise StepError(
            f"Dask worker {self.address} could not run the step: {type(value).__name__}: {value}",
            retryable=True,
        )

    async def _stop(
        self,
        ctx: StepContext,
        client: Any,
        future: Any,
        token: str,
        stream: OutputStream,
        result: asyncio.Future[tuple[str, Any]],
    ) -> None:
        """Stop the attempt on the worker, wait for it (bounded), and log which happened."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        signalled = await self._pool.signal_cancel(token)
        where = f"Dask worker {self.address}"
        if not stream.started and not result.done():
            # Its start marker may still be on the way; a task still queued is simply dropped.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(START_WINDOW):
                    await stream.wait_started()
            if not stream.started:
                await _quiet(lambda: client.cancel([future]))
                self._pool.clear_cancel(token, delay=60.0)  # in case it was starting after all
                ctx.emit("engine", f"stopped before it started on {where}; the task was dropped")
                return
        grace = ctx.cancel_grace
        limit = grace + STOP_SLACK + self._cancel_poll
        done, _ = await asyncio.wait({result}, timeout=max(0.0, limit - (loop.time() - began)))
        took = format_duration(loop.time() - began)
        if done:
            self._pool.clear_cancel(token)
            status, value = result.result()
            if status == "done" and isinstance(value, dict) and value.get("status") == "cancelled":
                ctx.emit("engine", f"stopped on {where} {took} after the stop request")
            else:
                ctx.emit("engine", f"the step had already ended on {where} when asked to stop")
            return
        await _quiet(lambda: client.cancel([future], force=True))
        self._pool.clear_cancel(token, delay=60.0)
        why = "" if signalled else " (the stop signal could not be sent to the scheduler)"
        ctx.emit(
            "engine",
            f"{where} did not confirm the stop within the grace period "
            f"({format_duration(grace)} + {format_duration(limit - grace)} for the signal){why}; "
            "the task was released and may still be running there",
        )


async def _settle(future: Any) -> tuple[str, Any]:
    """Wait for a Dask future without letting its cancellation look like ours.

    Dask's cancelled-future error is `concurrent.futures.CancelledError`, an ordinary Exception,
    so it cannot be confused with the asyncio cancellation of the awaiting task.
    """
    from concurrent.futures import CancelledError as FutureCancelled

    try:
        return "done", await future
    except FutureCancelled as exc:
        return "cancelled", exc
    except Exception as exc:
        return "error", exc


async def _quiet(call: Callable[[], Any]) -> None:
    """Best-effort scheduler calls during cleanup: a dead scheduler must not block a cancel."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(QUIET_TIMEOUT):
            pending = call()
            if inspect.isawaitable(pending):
                await pending
