"""DaskPool: keeps one `DaskWorkerAgent` registered per worker of a Dask cluster.

The pool owns the asynchronous `distributed.Client`. It follows the cluster by polling the
scheduler's `identity()` every `poll_interval` seconds and, to react at once, by listening to the
scheduler's `all` event topic, where workers joining and leaving are announced. A worker that
joins becomes an agent (`orchestrator.register_agent`); one that leaves is marked lost, so the
attempts running on it fail as retryable, and is unregistered, so retries go elsewhere.

The scheduler itself is a watched component (`dask` in the health panel): reachable or not,
worker and thread count, tasks running and queued on the workers.

When the scheduler connection drops, Dask's client cancels its futures (running attempts fail as
retryable) and tries to reconnect for `connect_timeout` seconds; meanwhile the agents are marked
unhealthy, so retries wait in the coordinator's queue instead of failing. If the client gives
up, every agent is unregistered: steps that only Dask could run then fail with the coordinator's
"no registered agent" error instead of hanging, and the pool keeps trying to connect again in the
background, registering the workers anew when the scheduler is back.

`distributed` is imported only inside functions, so this module (and the engine) imports without
the `voltui[dask]` extra installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from voltui.engine.dask.agent import DaskWorkerAgent
from voltui.engine.dask.worker_side import CANCEL_POLL, OUTPUT_TOPIC
from voltui.engine.durations import format_duration
from voltui.engine.errors import NotFoundError, StepError, UserError
from voltui.engine.models import HealthStatus

if TYPE_CHECKING:
    from voltui.engine.orchestrator import Orchestrator

__all__ = ["COMPONENT_ID", "DaskPool"]

log = logging.getLogger(__name__)

COMPONENT_ID = "dask"
LOCAL = "local"
"""The address that starts a LocalCluster on this machine instead of connecting to one."""
_QUEUED_STATES = ("ready", "constrained", "waiting")
_RUNNING_STATES = ("executing", "long-running")
_STREAMS = frozenset({"stdout", "stderr", "engine"})

Emit = Callable[[Literal["stdout", "stderr", "engine"], str], None]


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise UserError(
            "running steps on Dask needs the voltui[dask] extra (pip install 'voltui[dask]'); "
            f"importing distributed failed: {exc}"
        ) from None
    return distributed


class OutputStream:
    """Lines of one attempt arriving from the scheduler's event log."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self.count = 0
        self.started = False
        self._changed = asyncio.Event()

    def feed(self, msg: dict[str, Any]) -> None:
        stream = msg.get("s")
        if stream == "started":
            self.started = True
        else:
            self.count += 1
            name = stream if stream in _STREAMS else "stdout"
            try:
                self._emit(name, str(msg.get("l", "")))
            except Exception:
                log.exception("output sink failed")
        self._changed.set()

    async def wait_started(self) -> None:
        """Wait until the worker reported the attempt's start. The caller bounds the wait."""
        while not self.started:
            self._changed.clear()
            await self._changed.wait()

    async def drain(self, expected: int) -> None:
        """Wait until `expected` lines have arrived: they may trail the result. The caller
        bounds the wait."""
        while self.count < expected:
            self._changed.clear()
            await self._changed.wait()


class DaskPool:
    """Connects to a Dask scheduler and mirrors its workers as engine agents."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        address: str,
        *,
        poll_interval: float = 1.0,
        connect_timeout: float = 10.0,
        capabilities: Sequence[str] = (),
        weight: float = 1.0,
        cancel_poll: float = CANCEL_POLL,
        local_options: dict[str, Any] | None = None,
    ) -> None:
        """`address` is a scheduler address (`tcp://host:8786`) or `local` for a LocalCluster
        (2 worker processes with 2 threads each, changed with `local_options`).
        `capabilities` are added to every worker's agent; `cancel_poll` is how often a running
        attempt checks its cancellation signal on the worker."""
        if poll_interval <= 0 or connect_timeout <= 0:
            raise ValueError("poll_interval and connect_timeout must be more than 0")
        self._orch = orchestrator
        self.address = address
        self._poll = poll_interval
        self._connect_timeout = connect_timeout
        self._capabilities = tuple(capabilities)
        self._weight = weight
        self._cancel_poll = cancel_poll
        self._local_options = dict(local_options or {})
        self._client: Any = None
        self._cluster: Any = None
        self._target = address
        self._agents: dict[str, DaskWorkerAgent] = {}
        self._health: dict[str, bool] = {}
        self._streams: dict[str, OutputStream] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._problem: str | None = None
        self._was_connected = False
        self._observed: tuple[bool, int] | None = None
        self._started = False

    # ------------------------------------------------------------------ views

    @property
    def agents(self) -> list[DaskWorkerAgent]:
        return list(self._agents.values())

    @property
    def client(self) -> Any:
        """The `distributed.Client` (asynchronous), or None before start / after stop."""
        return self._client

    @property
    def cluster(self) -> Any:
        """The LocalCluster this pool started for `local`, else None."""
        return self._cluster

    @property
    def scheduler_address(self) -> str:
        return self._target

    @property
    def connected(self) -> bool:
        client = self._client
        return client is not None and client.status == "running"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect, register the current workers as agents, and start following the cluster.

        Raises UserError when the scheduler cannot be reached within `connect_timeout`.
        """
        if self._started:
            return
        distributed = _import_distributed()
        self._wake = asyncio.Event()
        if self.address == LOCAL:
            self._cluster = await self._start_local(distributed)
            self._target = self._cluster.scheduler_address
        try:
            self._client = await self._connect(distributed)
        except BaseException:
            await self._close_cluster()
            raise
        self._subscribe()
        self._was_connected = True
        self._started = True
        await self._sync()
        self._orch.watcher.register_component(COMPONENT_ID, "Dask scheduler", "dask", self._check)
        await self._orch.watcher.check_now(COMPONENT_ID)
        self._task = asyncio.create_task(self._follow(), name="dask-pool")

    async def stop(self) -> None:
        """Unregister the agents, close the client, and the LocalCluster if this pool made it.

        Call it after `orchestrator.stop()` when shutting down, so active runs end as
        interrupted rather than failing over to no agents.
        """
        if not self._started:
            return
        self._started = False
        tasks = [t for t in (self._task, *self._background) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._background.clear()
        if self._engine_running():
            with contextlib.suppress(NotFoundError):
                self._orch.watcher.unregister_component(COMPONENT_ID)
        for address in list(self._agents):
            await self._drop(address, "the Dask pool was stopped")
        client, self._client = self._client, None
        if client is not None:
            await _close_client(client)
        await self._close_cluster()

    async def _start_local(self, distributed: Any) -> Any:
        options: dict[str, Any] = {
            "n_workers": 2,
            "threads_per_worker": 2,
            "processes": True,
            # Worker processes share the engine's terminal; keep their logging to errors.
            "silence_logs": logging.ERROR,
        }
        options.update(self._local_options)
        try:
            return await distributed.LocalCluster(asynchronous=True, **options)
        except Exception as exc:
            raise UserError(
                f"could not start a local Dask cluster ({type(exc).__name__}: {exc}); "
                "start one yourself with `dask scheduler` and `dask worker ADDRESS` and "
                "give its address instead of `local`"
            ) from None

    async def _close_cluster(self) -> None:
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(30):
                    await cluster.close()

    async def _connect(self, distributed: Any) -> Any:
        """A connected asynchronous client, or UserError saying what to start."""
        client: Any = None
        try:
            async with asyncio.timeout(self._connect_timeout + 5):
                client = distributed.Client(
                    self._target,
                    asynchronous=True,
                    timeout=self._connect_timeout,
                    set_as_default=False,
                )
                await client
        except BaseException as exc:
            # Also on cancellation (stop() during a reconnect): an unclosed client complains
            # when garbage-collected and keeps trying to connect.
            if client is not None:
                await _close_client(client)
            if not isinstance(exc, Exception):
                raise
            detail = str(exc).strip() or type(exc).__name__
            raise UserError(
                f"cannot reach the Dask scheduler at {self._target!r} within "
                f"{format_duration(self._connect_timeout)} ({detail}). Start a scheduler with "
                "`dask scheduler` (it listens on tcp://HOST:8786) and at least one worker with "
                f"`dask worker {self._target}`, check the address (executor.dask.address, "
                "VOLTUI_DASK_ADDRESS or --dask), or use `--dask local` to try a local cluster"
            ) from None
        return client

    def _subscribe(self) -> None:
        """(Re)subscribe to the output and cluster topics; a reconnected client forgets them."""
        client = self._client
        client.subscribe_topic(OUTPUT_TOPIC, self._on_output)
        client.subscribe_topic("all", self._on_cluster_event)

    # ------------------------------------------------------------------ what agents use

    def require_client(self) -> Any:
        """The client for a new attempt; a retryable StepError while disconnected."""
        if not self.connected:
            reason = f" ({self._problem})" if self._problem else ""
            raise StepError(
                f"the Dask scheduler at {self._target} is not connected{reason}",
                retryable=True,
            )
        return self._client

    def open_stream(self, token: str, emit: Emit) -> OutputStream:
        stream = OutputStream(emit)
        self._streams[token] = stream
        return stream

    def close_stream(self, token: str) -> None:
        """Lines arriving later (from an attempt already given up on) are dropped."""
        self._streams.pop(token, None)

    async def signal_cancel(self, token: str) -> bool:
        """Set the attempt's cancellation event on the scheduler; False if that failed."""
        client = self._client
        if client is None:
            return False
        from distributed import Event

        try:
            async with asyncio.timeout(5):
                await Event(token, client=client).set()
        except Exception as exc:
            log.warning("could not signal cancellation of %s: %s", token, exc)
            return False
        return True

    def clear_cancel(self, token: str, *, delay: float = 0.0) -> None:
        """Forget the attempt's event on the scheduler, after `delay` when the worker might
        still be about to look at it."""

        async def clear() -> None:
            await asyncio.sleep(delay)
            client = self._client
            if client is None or not self.connected:
                return
            from distributed import Event

            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await Event(token, client=client).clear()

        task = asyncio.create_task(clear(), name=f"dask-clear-{token}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ scheduler events

    def _on_output(self, event: tuple[float, Any]) -> None:
        _ts, msg = event
        if not isinstance(msg, dict):
            return
        stream = self._streams.get(str(msg.get("t")))
        if stream is not None:
            stream.feed(msg)

    def _on_cluster_event(self, event: tuple[float, Any]) -> None:
        _ts, msg = event
        if isinstance(msg, dict) and msg.get("action") in ("add-worker", "remove-worker"):
            self._poke()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------ following the cluster

    async def _follow(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()
            try:
                await self._sync()
            except Exception:  # a bug here must not end following the cluster for good
                log.exception("following the Dask cluster failed")

    async def _sync(self) -> None:
        """One round: reconcile workers with agents, or handle a lost scheduler."""
        info: dict[str, Any] | None = None
        if self.connected:
            try:
                async with asyncio.timeout(max(5.0, self._connect_timeout)):
                    info = await self._client.scheduler.identity(n_workers=-1)
            except Exception as exc:
                self._problem = f"{type(exc).__name__}: {exc}"
        if info is None:
            await self._disconnected()
        else:
            if not self._was_connected:
                self._subscribe()  # reconnected: Dask does not restore subscriptions
                self._was_connected = True
                log.warning("reconnected to the Dask scheduler at %s", self._target)
            self._problem = None
            await self._reconcile(info.get("workers") or {})
        await self._report_changes()

    async def _reconcile(self, workers: dict[str, dict[str, Any]]) -> None:
        for address in [a for a in self._agents if a not in workers]:
            await self._drop(address, f"Dask worker {address} left the cluster")
        for address, info in workers.items():
            status = str(info.get("status") or "running")
            agent = self._agents.get(address)
            if agent is None:
                if status in ("running", "paused"):
                    await self._add(address, info)
                continue
            if agent.worker_status != status:
                agent.worker_status = status
            self._apply_health(agent)

    async def _add(self, address: str, info: dict[str, Any]) -> None:
        agent = DaskWorkerAgent.from_worker(
            self,
            address,
            info,
            capabilities=self._capabilities,
            weight=self._weight,
            cancel_poll=self._cancel_poll,
        )
        try:
            await self._orch.register_agent(agent)
        except UserError as exc:  # an agent with that id exists already (static config?)
            log.warning("Dask worker %s not registered: %s", address, exc)
            return
        self._agents[address] = agent
        self._apply_health(agent)

    async def _drop(self, address: str, reason: str) -> None:
        agent = self._agents.pop(address, None)
        if agent is None:
            return
        self._health.pop(agent.id, None)
        agent.mark_lost(reason)
        if not self._engine_running():
            return
        with contextlib.suppress(NotFoundError):
            await self._orch.unregister_agent(agent.id)

    def _engine_running(self) -> bool:
        """After `orchestrator.stop()` its event log is closed: changing its registry then
        would only log failures."""
        return self._orch.running

    def _apply_health(self, agent: DaskWorkerAgent) -> None:
        """Tell the coordinator when the agent may (not) take new work; only on change."""
        ready = agent.ready
        if self._health.get(agent.id) is ready:
            return
        self._health[agent.id] = ready
        with contextlib.suppress(NotFoundError):
            self._orch.coordination.set_healthy(agent.id, ready)

    async def _disconnected(self) -> None:
        client = self._client
        status = None if client is None else client.status
        if self._was_connected:
            self._was_connected = False
            log.warning("lost the Dask scheduler at %s (client %s)", self._target, status)
            for agent in self._agents.values():
                self._apply_health(agent)  # retries wait instead of failing at once
        if status in ("connecting", "running"):
            self._problem = self._problem or "reconnecting"
            return  # Dask's client is still trying, for up to connect_timeout
        # The client gave up: fail what waits for these workers, then try afresh.
        self._problem = f"not reachable (client {status or 'closed'})"
        for address in list(self._agents):
            await self._drop(address, f"the Dask scheduler at {self._target} was lost")
        if client is not None:
            await _close_client(client)
        self._client = None
        distributed = _import_distributed()
        try:
            self._client = await self._connect(distributed)
        except UserError:
            return
        self._subscribe()
        self._was_connected = True
        self._problem = None
        log.warning("connected again to the Dask scheduler at %s", self._target)

    async def _report_changes(self) -> None:
        """Re-check the health component at once when connection or worker count changed."""
        observed = (self.connected, len(self._agents))
        if observed != self._observed:
            self._observed = observed
            with contextlib.suppress(NotFoundError):
                await self._orch.watcher.check_now(COMPONENT_ID)

    # ------------------------------------------------------------------ health

    async def _check(self) -> tuple[HealthStatus, str]:
        if not self.connected:
            reason = f": {self._problem}" if self._problem else ""
            return (
                HealthStatus.UNHEALTHY,
                f"scheduler {self._target} unreachable{reason}; steps routed to Dask wait or "
                "fail per their retry policy",
            )
        began = time.perf_counter()
        info = await self._client.scheduler.identity(n_workers=-1)
        latency = time.perf_counter() - began
        workers: dict[str, dict[str, Any]] = info.get("workers") or {}
        threads = sum(int(w.get("nthreads") or 0) for w in workers.values())
        running = queued = 0
        for worker in workers.values():
            counts = (worker.get("metrics") or {}).get("task_counts") or {}
            running += sum(int(counts.get(s, 0)) for s in _RUNNING_STATES)
            queued += sum(int(counts.get(s, 0)) for s in _QUEUED_STATES)
        if not workers:
            return (
                HealthStatus.DEGRADED,
                f"scheduler {self._target} reachable but has no workers; start one with "
                f"`dask worker {self._target}`",
            )
        paused = sum(1 for w in workers.values() if w.get("status") != "running")
        message = (
            f"{self._target}: {len(workers)} workers, {threads} threads, "
            f"{running} tasks running, {queued} queued ({latency * 1000:.0f} ms)"
        )
        if paused:
            return HealthStatus.DEGRADED, f"{message}; {paused} workers paused or closing"
        return HealthStatus.HEALTHY, message


async def _close_client(client: Any) -> None:
    # Unsubscribe first: the scheduler announces the client leaving on the `all` topic, and
    # sending that to the leaving client itself fails noisily.
    for topic in ("all", OUTPUT_TOPIC):
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(topic)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10):
            await client.close()
