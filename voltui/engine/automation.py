"""Automation: what an engine does on its own — schedules, file triggers, notifications,
Prometheus metrics and OpenTelemetry traces — owned by the Orchestrator as one piece.

Every part is either an event consumer (notifications, metrics, traces read the dispatcher
through sinks, so the engine core needs no code for them) or a run source (schedules and
triggers start runs through the same `start_workflow` a person uses, with `trigger` saying why).
Run sources and the metrics endpoint only run in a long-lived engine (`voltui serve`, the
dashboard); the consumers also run for one-shot commands, so `voltui run` notifies and traces.
Heavy libraries load only when their part is switched on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from voltui.engine.api import ScheduleInfo
from voltui.engine.automation_state import AutomationState
from voltui.engine.errors import NotFoundError
from voltui.engine.models import Event, HealthStatus, Workflow

if TYPE_CHECKING:
    from voltui.engine.metrics import EngineMetrics, MetricsServer
    from voltui.engine.notify import Notifier
    from voltui.engine.orchestrator import Orchestrator
    from voltui.engine.schedules import Scheduler
    from voltui.engine.telemetry import RunTracer
    from voltui.engine.triggers import TriggerWatcher

__all__ = ["CATALOGUE_RELOAD", "Automation"]

log = logging.getLogger(__name__)

CATALOGUE_RELOAD = 30.0
"""Seconds between re-reads of the workflows folder for schedules and triggers."""
CLAIM_RETENTION = 30 * 86400.0
"""Trigger claims older than this are forgotten (bounds the table)."""


class Automation:
    """Schedules, triggers, notifications, metrics and traces of one Orchestrator."""

    def __init__(self, engine: Orchestrator) -> None:
        self._engine = engine
        self.state = AutomationState(engine.store.path, clock=engine._clock)
        self.scheduler: Scheduler | None = None
        self.triggers: TriggerWatcher | None = None
        self.notifier: Notifier | None = None
        self.metrics: EngineMetrics | None = None
        self.metrics_server: MetricsServer | None = None
        self.tracer: RunTracer | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._catalogue: list[Workflow] | None = None
        self._catalogue_at = 0.0
        self._open = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, watch: bool = True) -> None:
        """Switch on what the config asks for. Checks come first (a missing `${env:...}`, no
        OpenTelemetry SDK, a busy metrics port), so a mistake leaves nothing half-started."""
        engine = self._engine
        config = engine.config
        notifier = tracer = metrics = server = None
        if config.notify:
            from voltui.engine.notify import Notifier

            notifier = Notifier(
                list(config.notify),
                engine.dispatcher,
                on_health=self._notify_health_changed,
                clock=engine._clock,
            )
            notifier.check_env()
        from voltui.engine.telemetry import RunTracer, otel_wanted

        if otel_wanted(config.otel.enabled):
            tracer = RunTracer(service_name=config.otel.service_name)
        if watch and config.metrics.address:
            from voltui.engine.metrics import EngineMetrics, MetricsServer

            metrics = EngineMetrics()
            server = MetricsServer(metrics.registry, config.metrics.address)
            try:
                server.start()
            except BaseException:
                if tracer is not None:
                    await asyncio.to_thread(tracer.shutdown)
                raise
        self._open = True
        self.notifier, self.tracer, self.metrics, self.metrics_server = (
            notifier,
            tracer,
            metrics,
            server,
        )
        for consumer in (metrics, tracer, notifier):
            if consumer is not None:
                engine.dispatcher.add_sink(self._guarded(consumer.sink))
        if metrics is not None:
            metrics.seed(engine.coordination.loads(), engine.watcher.components())
        if notifier is not None:
            engine.watcher.register_component(
                "notifications", "Notifications", "internal", self._notify_check, critical=False
            )
        if watch and (config.schedules_enabled or config.triggers_enabled):
            await self._start_sources()

    async def _start_sources(self) -> None:
        engine = self._engine
        config = engine.config
        if config.schedules_enabled:
            from voltui.engine.schedules import Scheduler

            self.scheduler = Scheduler(
                self.state,
                engine.dispatcher,
                start=engine.start_workflow,
                runs=self._runs_of,
                cancel=engine.cancel_run,
                clock=engine._clock,
            )
        if config.triggers_enabled:
            from voltui.engine.triggers import TriggerWatcher

            self.triggers = TriggerWatcher(
                self.state, engine.dispatcher, start=engine.start_workflow
            )
            await self.state.prune_claims(engine._clock() - CLAIM_RETENTION)
        self._loop_task = asyncio.create_task(self._sources_loop(), name="automation")

    async def stop(self) -> None:
        """Stop starting runs (schedules, triggers); called before the engine stops its runs."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        if self.triggers is not None:
            await self.triggers.stop()

    async def close(self) -> None:
        """After the runs stopped: deliver what is in flight, flush traces, stop serving."""
        await self.stop()
        if self.notifier is not None:
            await self.notifier.close()
        self._open = False
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.shutdown)
        if self.metrics_server is not None:
            await asyncio.to_thread(self.metrics_server.stop)
        for task in list(self._side_tasks):
            task.cancel()
        await asyncio.gather(*self._side_tasks, return_exceptions=True)
        await asyncio.to_thread(self.state.close)

    @property
    def metrics_address(self) -> str | None:
        server = self.metrics_server
        return f"{server.host}:{server.port}" if server is not None else None

    # ------------------------------------------------------------------ run sources

    async def workflows(self, *, fresh: bool = False) -> list[Workflow]:
        """The workflows folder, re-read at most every CATALOGUE_RELOAD seconds."""
        now = time.monotonic()
        if fresh or self._catalogue is None or now - self._catalogue_at >= CATALOGUE_RELOAD:
            loaded, _errors = await asyncio.to_thread(self._engine._catalogue)
            self._catalogue, self._catalogue_at = loaded, now
            if self.triggers is not None:
                await self.triggers.sync(loaded)
        return self._catalogue

    async def _sources_loop(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.run(self.workflows)
            return
        while True:  # triggers only: keep the watch list in step with the folder
            try:
                await self.workflows()
            except Exception:
                log.exception("reloading the workflows folder for triggers failed")
            await asyncio.sleep(CATALOGUE_RELOAD)

    async def _runs_of(self, workflow_id: str) -> list[Any]:
        return await self._engine.store.list_runs(workflow_id=workflow_id, limit=100)

    # ------------------------------------------------------------------ schedules API

    async def schedules(self) -> list[ScheduleInfo]:
        """Every schedule of the workflows folder with its next fire and paused state."""
        described = await self.describe(await self.workflows())
        return [info for infos in described.values() for info in infos]

    async def describe(self, workflows: list[Workflow]) -> dict[str, list[ScheduleInfo]]:
        """ScheduleInfo per workflow id (for `list_workflows`)."""
        if not any(wf.schedules for wf in workflows):
            return {}
        from voltui.engine.schedules import schedule_infos

        return await schedule_infos(self.state, workflows, self._engine._clock())

    async def set_paused(self, ref: str, paused: bool) -> ScheduleInfo:
        """Pause or resume one schedule, named `workflow:name` or by a workflow id that has
        exactly one schedule. Durable, and seen by every engine on the same file."""
        infos = await self.schedules()
        match = [s for s in infos if s.id == ref] or [
            s for s in infos if s.id.split(":", 1)[0] == ref
        ]
        if len(match) != 1:
            known = ", ".join(s.id for s in infos) or "none (no workflow has schedules:)"
            if len(match) > 1:
                raise NotFoundError(
                    f"workflow {ref!r} has several schedules; name one of: "
                    + ", ".join(s.id for s in match)
                )
            raise NotFoundError(f"unknown schedule {ref!r}; known schedules: {known}")
        await self.state.set_paused(match[0].id, paused)
        self._engine.dispatcher.emit(
            "schedule:paused" if paused else "schedule:resumed",
            "scheduler",
            {"schedule": match[0].id},
        )
        return next(s for s in await self.schedules() if s.id == match[0].id)

    # ------------------------------------------------------------------ plumbing

    def _guarded(self, sink: Callable[[Event], None]) -> Callable[[Event], None]:
        """Sinks cannot be removed from the dispatcher; after close they do nothing. Events
        relayed from other processes sharing the store (`foreign`) are theirs to notify about,
        count and trace, so they are skipped: nothing is notified or counted twice."""

        def guarded(event: Event) -> None:
            if self._open and not event.foreign:
                sink(event)

        return guarded

    async def _notify_check(self) -> tuple[HealthStatus, str]:
        if self.notifier is None:
            return HealthStatus.HEALTHY, "no notify rules"
        return self.notifier.health()

    def _notify_health_changed(self) -> None:
        task = asyncio.create_task(self._engine.watcher.check_now("notifications"))
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)
