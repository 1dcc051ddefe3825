"""Orchestrator: the facade that owns every engine component and implements EngineAPI.

Front ends (CLI, TUI, the remote server) hold an Orchestrator and call only the EngineAPI
methods; the component accessors exist for embedding programs and tests.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Self

from voltui.config import OrchestratorConfig
from voltui.engine.agents.base import Agent
from voltui.engine.agents.registry import create_agent
from voltui.engine.api import (
    ApprovalRequest,
    EngineSnapshot,
    ReplayRequest,
    StartRequest,
    UsageReport,
    WorkflowInfo,
)
from voltui.engine.automation import Automation
from voltui.engine.balancer import LoadBalancer
from voltui.engine.cache import CacheManager
from voltui.engine.catalogue import Catalogue
from voltui.engine.coordination import CoordinationEngine
from voltui.engine.errors import NotFoundError, UserError, WorkflowFileError
from voltui.engine.events import EventDispatcher
from voltui.engine.inputs import resolve_inputs
from voltui.engine.loader import load_workflow
from voltui.engine.models import (
    AgentSpec,
    Approval,
    BudgetSpec,
    Event,
    EventQuery,
    HealthStatus,
    LogLine,
    Priority,
    Run,
    RunDetail,
    RunState,
    StepRun,
    StepState,
    Usage,
    Workflow,
)
from voltui.engine.reaper import reap_orphan
from voltui.engine.secrets import missing_secrets
from voltui.engine.store import PruneReport, RunStore, default_is_alive
from voltui.engine.watcher import SystemWatcher
from voltui.engine.workflows import WorkflowManager, new_run_id

log = logging.getLogger(__name__)

SOURCE = "orchestrator"
RECENT_RUNS = 50
_ONE_SHOT_NOISE = frozenset({"agent:registered", "agent:unregistered"})
_HEARTBEATS = frozenset({"metrics:system", "health:checked"})
"""Periodic samples kept in the store only with enable_telemetry (live views still get them)."""
FOLLOW_POLL = 0.25
STORE_POLL = 0.5
RELAY_PAGE = 5000
"""Seconds between looks at the shared store for requests and other processes' events."""


GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Collect the young generation every 50,000 allocations instead of every 700.

    A big run keeps hundreds of thousands of long-lived objects (steps, their states, events in
    history); with the default thresholds the collector keeps rescanning them and the cost per
    step grew with the run (137 -> 99 µs per step at 50,000 steps in bench/engine_bench.py).
    Process-wide, so `tune_gc = false` in the config leaves an embedding program's settings be.
    """
    if gc.get_threshold()[0] < GC_THRESHOLDS[0]:
        gc.set_threshold(*GC_THRESHOLDS)


def _remove_folders(folders: list[str], runs_dir: Path) -> None:
    """Delete pruned runs' folders, but only real folders inside `runs_dir` (never a link,
    never something a stored path points at elsewhere)."""
    root = runs_dir.resolve()
    for folder in folders:
        path = Path(folder)
        if path.is_symlink() or not path.is_dir():
            continue
        if root not in path.resolve().parents:
            continue
        shutil.rmtree(path, ignore_errors=True)


def _workflow_info(wf: Workflow) -> WorkflowInfo:
    return WorkflowInfo(
        id=wf.id,
        name=wf.title,
        description=wf.description,
        path=wf.source,
        steps=len(wf.steps),
        inputs=wf.inputs,
        budget=wf.budget,
    )


def with_budget(workflow: Workflow, override: BudgetSpec | None) -> Workflow:
    """The workflow with a run's own budget: the fields the request set replace the file's
    (`--budget-usd 5` keeps the file's token limit). Stored with the run, so its replays
    keep it."""
    if override is None or not override.model_fields_set:
        return workflow
    base = workflow.budget or BudgetSpec()
    budget = base.model_copy(
        update={name: getattr(override, name) for name in override.model_fields_set}
    )
    return workflow.model_copy(update={"budget": budget})


class Orchestrator:
    """The embedded engine. Use `async with Orchestrator(config) as engine:`."""

    def __init__(
        self,
        config: OrchestratorConfig | None = None,
        *,
        agents: list[Agent | AgentSpec] | None = None,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        new_id: Callable[[], str] = new_run_id,
    ) -> None:
        """`clock`, `timer` and `new_id` exist so snapshot tests can pin timestamps, measured
        latencies and run ids; everything else takes the defaults."""
        self.config = config or OrchestratorConfig()
        self._extra_agents = agents
        self._clock = clock
        self.started_at = clock()
        self.store = RunStore(self.config.db_path())
        self.dispatcher = EventDispatcher(history_size=self.config.event_history, clock=clock)
        self.balancer = LoadBalancer(self.config.load_balancing_strategy, clock=clock)
        self.coordination = CoordinationEngine(self.dispatcher, self.balancer)
        self.cache = CacheManager(self.config.cache)
        self.watcher = SystemWatcher(
            self.dispatcher,
            health_interval=self.config.health_check_interval,
            metrics_interval=self.config.metrics_collection_interval,
            thresholds=self.config.thresholds,
            clock=clock,
        )
        self.workflows = WorkflowManager(
            self.dispatcher,
            self.coordination,
            self.cache,
            self.store,
            runs_dir=self.config.runs_dir(),
            max_concurrent_workflows=self.config.max_concurrent_workflows,
            default_retry=self.config.retry_policy,
            workflow_timeout=self.config.workflow_timeout,
            cancel_grace=self.config.cancel_grace,
            settings=self.config.agent_settings(),
            max_log_lines=self.config.max_log_lines,
            live_output_lines=self.config.live_output_lines,
            clock=clock,
            timer=timer,
            new_id=new_id,
            limits=self.config.rate_limits(),
            max_map_children=self.config.max_map_children,
        )
        self.catalogue = Catalogue(
            self.config.workflows_dir, limits=self.config.limits, missing_ok=True
        )
        self._started = False
        self._watching = False
        self._cache_task: asyncio.Task[None] | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self._dask: Any = None
        self._follower: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.interrupted_on_start: list[str] = []
        self.resumed_on_start: list[str] = []
        """Runs that waited for an approval when their engine stopped, continued by this one."""
        # Schedules, triggers, notifications, metrics, traces (issue 12): engine/automation.py.
        self.automation = Automation(self)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, *, watch: bool = True) -> None:
        """Open the store, recover from a crash, register agents, start the watcher.

        `watch=False` is for one-shot CLI commands: no periodic health/metrics loops and no
        engine lifecycle events cluttering the shared event log.
        """
        if self._started:
            return
        if self.config.tune_gc:
            tune_gc()
        self._watching = watch
        await self.store.open()
        # Event numbers come from blocks leased in the store: monotonic across restarts and
        # never shared with another engine process using the same file.
        start, limit = await asyncio.to_thread(self.store.lease_seq_block)
        self.dispatcher.reset_seq(start, limit=limit, renew=self.store.lease_seq_block)
        self.dispatcher.add_sink(self._persist)
        # Subscribers (dashboards, remote clients) get an event only once it is committed.
        self.dispatcher.hold_until_durable()
        self.store.set_commit_listener(self.dispatcher.release)
        self.store.set_full_listener(self._on_store_full)
        await self.dispatcher.start()
        self.interrupted_on_start = await self.store.mark_interrupted()
        await self._reap_orphans(self.interrupted_on_start)
        for run_id in self.interrupted_on_start:
            self.dispatcher.emit(
                "workflow:interrupted",
                SOURCE,
                {
                    "state": RunState.INTERRUPTED.value,
                    "error": "the engine process that ran it stopped",
                    "reason": "the engine process that ran it stopped",
                },
                priority=Priority.HIGH,
                correlation_id=run_id,
            )
        agents: list[Agent | AgentSpec] = list(self.config.agent_specs())
        agents += self._extra_agents or []
        for agent in agents:
            await self.register_agent(agent)
        await self._seed_agent_figures()
        self._register_components()
        self._started = True
        address = self.config.executor.dask.address
        if address:
            from voltui.engine.dask.pool import DaskPool  # distributed loads only when used

            self._dask = DaskPool(self, address)
            try:
                await self._dask.start()
            except BaseException:
                self._dask = None
                self._started = False
                await self._abort_start()
                raise
        self._follower = asyncio.create_task(self._follow_store(relay=watch), name="store-follower")
        if watch:
            await self.watcher.start()
            self._cache_task = asyncio.create_task(self._report_cache(), name="cache-stats")
            self._retention_task = asyncio.create_task(self._retain(), name="retention")
        if watch:
            self.dispatcher.emit(
                "engine:started", SOURCE, {"db": str(self.store.path)}, priority=Priority.HIGH
            )
            # Only a long-lived engine adopts runs: a one-shot command would end them again.
            self.resumed_on_start = await self._resume_waiting()
        # ---- automation: consumers always, schedules/triggers/metrics only when watching
        try:
            await self.automation.start(watch=watch)
        except BaseException:
            await self.stop()
            raise

    async def _resume_waiting(self) -> list[str]:
        """Continue, under their own ids, the runs that were waiting for a person when their
        engine stopped (killed, or quit): an approval is durable, so its run waits on here.

        Only runs whose unfinished work was approvals are taken: a step that was at work when
        the engine stopped may have done half its side effects, and whether to run it again is
        the operator's call (`replay --failed`)."""
        resumed: list[str] = []
        for run_id in await self.store.interrupted_with_approvals():
            try:
                plan = await self._resume_plan(run_id)
                if plan is None or not await self.store.claim_interrupted(plan[0]):
                    continue
                run, workflow, reuse = plan
                await self.workflows.submit(workflow, run.inputs, resume=run, reuse=reuse)
            except Exception as exc:  # one damaged run must not keep the engine from starting
                log.warning("run %s: not resumed: %s", run_id, exc)
                continue
            log.info("run %s: resumed; it waits for an approval again", run_id)
            resumed.append(run_id)
        return resumed

    async def _resume_plan(self, run_id: str) -> tuple[Run, Workflow, dict[str, StepRun]] | None:
        """The run row to continue and the steps it keeps, or None when it must stay ended."""
        run = await self.store.get_run(run_id)
        workflow = await self.store.get_workflow(run_id)
        if run is None or workflow is None or run.state is not RunState.INTERRUPTED:
            return None
        workflow._source = run.workflow_path
        if missing_secrets(workflow):
            return None
        stored = {s.step_id: s for s in await self.store.get_steps(run_id)}
        approvals = await self.store.approvals(run_id)
        # A step with an open request waited for a person (an LLM call over its budget asks
        # before it goes out), so nothing of it was under way.
        open_requests = {a.step_id for a in approvals if a.pending}
        reuse: dict[str, StepRun] = {}
        for step in workflow.steps:
            sr = stored.get(step.id)
            if sr is None:
                continue
            if sr.state.ok or sr.state is StepState.FAILED:
                reuse[step.id] = sr
            elif sr.state is StepState.SKIPPED and sr.error == "condition false":
                reuse[step.id] = sr
            elif sr.started_at is None or step.run.approval is not None:
                continue  # never started, or asking a person: scheduled as usual
            elif step.id not in open_requests:
                return None
        # The store's candidates asked for an approval; one of those must still be open.
        if not any(a.step_id not in reuse for a in approvals):
            return None
        run = run.model_copy(
            update={
                "state": RunState.QUEUED,
                "finished_at": None,
                "error": None,
                "owner_pid": os.getpid(),
                "steps_done": 0,
                "steps_succeeded": 0,
                "steps_failed": 0,
                "steps_skipped": 0,
                "steps_cancelled": 0,
            }
        )
        return run, workflow, reuse

    async def _reap_orphans(self, run_ids: list[str]) -> None:
        """End command processes that interrupted runs left running, and say so in the log."""
        for run_id in run_ids:
            for step in await self.store.get_steps(run_id):
                if step.pid is None:
                    continue
                if await asyncio.to_thread(
                    reap_orphan, step.pid, step.pid_started, self.config.cancel_grace
                ):
                    self.dispatcher.emit(
                        "step:orphan_reaped",
                        SOURCE,
                        {"step": step.step_id, "pid": step.pid},
                        priority=Priority.HIGH,
                        correlation_id=run_id,
                    )

    async def stop(self) -> None:
        """Stop cleanly: active runs become interrupted, every event is flushed to disk."""
        if not self._started:
            return
        self._started = False
        await self.automation.stop()  # no new runs from schedules or triggers
        if self.store.full is not None:
            # Stopping must not wait for disk space that may never come (one signal = exit).
            self.store.abandon_writes()
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
            self._follower = None
        await self.workflows.stop()
        if self._dask is not None:  # after the runs stopped, so their Dask steps end cleanly
            await self._dask.stop()
            self._dask = None
        for task in (self._cache_task, self._retention_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._cache_task = self._retention_task = None
        await self.automation.close()  # deliver notifications in flight, flush traces
        await self.watcher.stop()
        if self._watching:
            self.dispatcher.emit("engine:stopped", SOURCE, {}, priority=Priority.HIGH)
        try:  # subscribers get the last events once they are committed
            await self.store.flush()
            await asyncio.sleep(0)
        except Exception as exc:
            log.warning("final events not committed: %s", exc)
        await self.dispatcher.stop()
        for agent in self.coordination.agents():
            await agent.close()
        await self.store.close()

    async def _report_cache(self) -> None:
        """Emit `cache:stats` on the metrics interval, only when a figure changed."""
        last: list[dict[str, Any]] | None = None
        while True:
            stats = [s.model_dump() for s in self.cache.stats()]
            if stats != last:
                last = stats
                self.dispatcher.emit(
                    "cache:stats", SOURCE, {"namespaces": stats}, priority=Priority.LOW
                )
            await asyncio.sleep(self.config.metrics_collection_interval)

    async def prune(
        self,
        *,
        older_than: float | None = None,
        keep: int | None = None,
        dry_run: bool = False,
    ) -> PruneReport:
        """Apply the retention policy (or the given limits) and say what was removed.

        Without arguments the configured policy applies. Run folders are deleted only when
        they lie inside this engine's runs folder and are real folders, not links.
        """
        policy = self.config.retention
        if older_than is None and keep is None:
            older_than, keep = policy.max_age, policy.keep_runs
        report = await self.store.prune_runs(
            older_than=older_than, keep=keep, now=self._clock(), dry_run=dry_run
        )
        total = await self.store.count_events()
        report.extra_events = max(0, total - self.config.max_stored_events)
        if not dry_run:
            if report.extra_events:
                await self.store.prune_events(self.config.max_stored_events)
            if policy.delete_run_folders and report.folders:
                await asyncio.to_thread(_remove_folders, report.folders, self.config.runs_dir())
        return report

    async def _seed_agent_figures(self) -> None:
        """Agents' done/failed counts continue from the stored history, not from zero."""
        try:
            outcomes = await self.store.agent_outcomes()
        except Exception as exc:  # figures are not worth failing a start for
            log.warning("agent figures not read from the store: %s", exc)
            return
        for agent_id, (done, failed) in outcomes.items():
            if agent_id in self.balancer:
                self.balancer.seed(agent_id, completed=done, failed=failed)

    def _on_store_full(self, reason: str | None) -> None:
        """The store stopped (reason) or resumed (None) taking writes: say so everywhere."""
        if reason is not None:
            self.dispatcher.emit(
                "store:full",
                SOURCE,
                {"reason": reason, "path": str(self.store.path)},
                priority=Priority.CRITICAL,
            )
        else:
            self.dispatcher.emit("store:writable", SOURCE, {}, priority=Priority.HIGH)
        if self._watching:
            task = asyncio.create_task(self.watcher.check_now("store"))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _refuse_when_full(self) -> None:
        if self.store.full is not None:
            raise UserError(
                f"the run store {self.store.path} cannot take writes ({self.store.full}); free "
                "space on its disk (or prune old runs: voltui prune) and try again. Runs in "
                "progress are paused and carry on by themselves once writes succeed"
            )

    async def _retain(self) -> None:
        """Apply the retention policy now and then every `retention.interval` seconds."""
        while True:
            try:
                report = await self.prune()
                if report.runs or report.extra_events:
                    self.dispatcher.emit(
                        "store:pruned",
                        SOURCE,
                        {
                            "runs": len(report.runs),
                            "events": report.events + report.extra_events,
                            "log_lines": report.log_lines,
                            "folders": len(report.folders),
                        },
                        priority=Priority.LOW,
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("retention pass failed: %s", exc)
            await asyncio.sleep(self.config.retention.interval)

    async def _follow_store(self, *, relay: bool) -> None:
        """Act on requests other processes left in the store, and relay their events.

        Many processes, one store, one truth: a `voltui cancel` in another terminal is a row
        here within STORE_POLL seconds; with `relay`, runs another process drives show up in
        this engine's event stream (marked `foreign`) so a dashboard sees every run.
        """
        own_pid = os.getpid()
        last_request = await self.store.last_request_id()
        cursor = await self.store.last_ins() if relay else 0
        while True:
            await asyncio.sleep(STORE_POLL)
            try:
                for request_id, run_id, kind, _by in await self.store.requests_after(last_request):
                    last_request = request_id
                    if kind == "cancel" and self.workflows.is_active(run_id):
                        await self.store.mark_handled(request_id)
                        task = asyncio.create_task(self.workflows.cancel(run_id))
                        self._background.add(task)
                        task.add_done_callback(self._background.discard)
                while relay:  # pages until caught up, so a busy store never leaves it behind
                    before = cursor
                    events, cursor = await self.store.events_after_ins(
                        cursor, RELAY_PAGE, skip=self.dispatcher.blocks
                    )
                    for event in events:
                        if self.dispatcher.owns_seq(event.seq):
                            continue
                        self.dispatcher.emit(
                            event.type,
                            event.source,
                            {**event.data, "origin_seq": event.seq},
                            priority=event.priority,
                            correlation_id=event.correlation_id,
                            foreign=True,
                        )
                    if cursor - before < RELAY_PAGE:
                        break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a busy or damaged store must not end the follower
                log.warning("following the store (pid %d) failed: %s", own_pid, exc)

    def _persist(self, event: Event) -> None:
        if (
            event.foreign  # already stored by the process that recorded it
            or (event.type in _HEARTBEATS and not self.config.enable_telemetry)
            # every `voltui list` would otherwise record its agents registering
            or (not self._watching and event.type in _ONE_SHOT_NOISE)
        ):
            self.store.note_seq(event.seq)
            return
        self.store.append_event(event)

    def _register_components(self) -> None:
        async def store_check() -> tuple[HealthStatus, str]:
            if self.store.full is not None:
                return HealthStatus.DEGRADED, f"writes on hold: {self.store.full}"
            seq = await self.store.max_seq()
            return HealthStatus.HEALTHY, f"{self.store.path.name}, last seq {seq}"

        async def dispatcher_check() -> tuple[HealthStatus, str]:
            stats = self.dispatcher.stats()
            if stats.queue_size > 10_000:
                return HealthStatus.DEGRADED, f"{stats.queue_size} events waiting for handlers"
            return HealthStatus.HEALTHY, f"{stats.total} events, {stats.subscribers} subscribers"

        async def agents_check() -> tuple[HealthStatus, str]:
            sick = []
            for agent in self.coordination.agents():
                ok = await agent.check_health()
                self.coordination.set_healthy(agent.id, ok)
                if not ok:
                    sick.append(agent.id)
            total = len(self.coordination.agents())
            if not total:
                return HealthStatus.UNHEALTHY, "no agents registered"
            if sick:
                status = HealthStatus.UNHEALTHY if len(sick) == total else HealthStatus.DEGRADED
                return status, f"unhealthy: {', '.join(sick)}"
            return HealthStatus.HEALTHY, f"{total} agents ready"

        self.watcher.register_component("store", "Run store (SQLite)", "database", store_check)
        self.watcher.register_component("events", "Event dispatcher", "internal", dispatcher_check)
        self.watcher.register_component("agents", "Agents", "internal", agents_check)
        for spec in self.config.watch:
            self.watcher.register_spec(spec)

    @property
    def running(self) -> bool:
        """Started and not yet stopped: its store and event log accept changes."""
        return self._started

    async def _abort_start(self) -> None:
        """Undo a start that failed half-way, so the store is closed and nothing leaks."""
        await self.dispatcher.stop()
        for agent in self.coordination.agents():
            await agent.close()
        await self.store.close()

    @property
    def connection(self) -> str:
        """EngineAPI: how the engine is reached; an embedded one is always there."""
        return "embedded"

    # ------------------------------------------------------------------ agents

    async def register_agent(self, agent: Agent | AgentSpec) -> Agent:
        instance = create_agent(agent) if isinstance(agent, AgentSpec) else agent
        await self.coordination.register_agent(instance)
        return instance

    async def unregister_agent(self, agent_id: str) -> None:
        await self.coordination.unregister_agent(agent_id)

    # ------------------------------------------------------------------ workflows

    def _catalogue(self) -> tuple[list[Workflow], list[WorkflowFileError]]:
        """The workflows folder; each file is parsed once per version (see Catalogue)."""
        return self.catalogue.list()

    async def list_workflows(self) -> list[WorkflowInfo]:
        workflows, _errors = await asyncio.to_thread(self._catalogue)
        infos = [_workflow_info(wf) for wf in workflows]
        schedules = await self.automation.describe(workflows)  # next fire times, paused
        for info in infos:
            info.schedules = schedules.get(info.id, [])
        return infos

    async def workflow_errors(self) -> list[WorkflowFileError]:
        """Files in the workflows folder that failed to load, for the UI to show."""
        _workflows, errors = await asyncio.to_thread(self._catalogue)
        return errors

    async def _resolve_workflow(self, ref: str) -> Workflow:
        path = Path(ref)
        if path.suffix in (".yaml", ".yml", ".json") or await asyncio.to_thread(path.is_file):
            return await asyncio.to_thread(load_workflow, path, limits=self.config.limits)
        workflows, _errors = await asyncio.to_thread(self._catalogue)
        for wf in workflows:
            if wf.id == ref:
                return wf
        known = ", ".join(sorted(wf.id for wf in workflows)) or "none loaded"
        raise NotFoundError(
            f"unknown workflow {ref!r}: give a workflow file path or one of these ids: {known}"
        )

    async def start_workflow(self, request: StartRequest) -> Run:
        self._refuse_when_full()
        workflow = with_budget(await self._resolve_workflow(request.workflow), request.budget)
        inputs = resolve_inputs(workflow, request.inputs)
        self._check_secrets(workflow)
        return await self.workflows.submit(
            workflow, inputs, trigger=request.trigger, trigger_ref=request.trigger_ref
        )

    def _check_secrets(self, workflow: Workflow) -> None:
        """A declared secret that is not in the environment would reach the step as nothing."""
        missing = missing_secrets(workflow)
        if missing:
            raise UserError(
                f"workflow {workflow.id} declares secrets {', '.join(missing)}, but the "
                "environment of this voltui process does not set them (or sets fewer than 4 "
                "characters, too short to mask); export them before starting voltui"
            )

    async def run_workflow(self, workflow: Workflow, inputs: dict[str, Any] | None = None) -> Run:
        """Start an in-memory workflow (for embedding programs); returns the queued run."""
        self._refuse_when_full()
        self._check_secrets(workflow)
        return await self.workflows.submit(workflow, resolve_inputs(workflow, inputs or {}))

    async def cancel_run(self, run_id: str) -> Run:
        """Cancel a run wherever it runs: here directly, in another process via the store."""
        run = await self._find(run_id)
        if run.state.finished:
            raise UserError(f"run {run.id} already ended as {run.state.value}; nothing to cancel")
        if self.workflows.is_active(run.id):
            return await self.workflows.cancel(run.id)
        if not default_is_alive(run.owner_pid):
            await self.store.mark_interrupted()
            return await self._find(run.id)
        await self.store.request(run.id, "cancel", f"pid {os.getpid()}")
        # The owner polls every STORE_POLL s, then stops the steps (commands get cancel_grace).
        deadline = time.monotonic() + STORE_POLL * 4 + self.config.cancel_grace + 5
        while time.monotonic() < deadline:
            await asyncio.sleep(FOLLOW_POLL)
            run = await self._find(run.id)
            if run.state.finished:
                return run
        raise UserError(
            f"asked the voltui process that owns run {run.id} (pid {run.owner_pid}) to cancel "
            f"it, but it has not confirmed yet; `voltui watch {run.id}` shows when it ends"
        )

    async def replay_run(self, request: ReplayRequest) -> Run:
        self._refuse_when_full()
        run = await self._find(request.run_id)
        if not run.state.finished:
            raise UserError(f"run {run.id} is still {run.state.value}; replay it once it ends")
        workflow = await self.store.get_workflow(run.id)
        if workflow is None:
            raise NotFoundError(f"run {run.id} has no stored workflow definition to replay")
        workflow._source = run.workflow_path
        workflow = with_budget(workflow, request.budget)
        self._check_secrets(workflow)
        steps = await self.store.get_steps(run.id)
        if request.mode == "failed":
            reuse = {s.step_id: s for s in steps if s.state.ok}
            # `reuse` also holds map children (`review[3]`); only the workflow's steps count.
            if all(s.id in reuse for s in workflow.steps):
                raise UserError(
                    f"run {run.id}: every step succeeded, so there is nothing to replay with "
                    "--failed; replay all steps instead (R in the dashboard, or leave out "
                    "--failed in the CLI)"
                )
            run_dir = Path(run.run_dir) if run.run_dir else None
            return await self.workflows.submit(
                workflow,
                run.inputs,
                replay_of=run.id,
                replay_mode="failed",
                reuse=reuse,
                run_dir=run_dir,
                trigger="replay",
            )
        return await self.workflows.submit(
            workflow, run.inputs, replay_of=run.id, replay_mode="all", trigger="replay"
        )

    async def approve(self, request: ApprovalRequest) -> Approval:
        """Decide a waiting approval step of any run in the store, whichever process owns it:
        the decision is a row the owner reads within a second (at once if it is this one)."""
        run = await self._find(request.run_id)
        live = self.workflows.live(run.id)
        workflow = live[1] if live is not None else await self.store.get_workflow(run.id)
        if workflow is None:
            raise NotFoundError(f"run {run.id} has no stored workflow definition")
        # Any step that asked may be decided: an approval step, or an LLM call over its
        # budget with `on_exceed: approve` (map children included). One that did not ask is
        # named as what it is.
        if await self.store.get_approval(run.id, request.step_id) is None:
            waiting = [s.id for s in workflow.steps if s.run.approval is not None]
            try:
                step = workflow.step(request.step_id)
            except KeyError:
                raise NotFoundError(
                    f"run {run.id} has no step {request.step_id!r}; its approval steps: "
                    f"{', '.join(waiting) or 'none'}"
                ) from None
            if step.run.approval is None:
                raise UserError(
                    f"step {step.id!r} of run {run.id} is a {step.run.kind} step, not an "
                    f"approval step; its approval steps: {', '.join(waiting) or 'none'}"
                )
        # An interrupted run (its engine died while the step waited) still takes an approval:
        # `replay --failed` of that run then uses it instead of asking again.
        if run.state.finished and run.state is not RunState.INTERRUPTED:
            raise UserError(
                f"run {run.id} already ended as {run.state.value}; its approvals cannot change "
                "it (replay it with --failed to be asked again)"
            )
        return await self.workflows.approvals.decide(
            run.id,
            request.step_id,
            approve=request.approve,
            comment=request.comment,
            by=request.by,
            via=request.via,
        )

    # ------------------------------------------------------------------ queries

    async def _find(self, run_id: str) -> Run:
        live = self.workflows.live_run(run_id)
        if live is not None:
            return live
        run = await self.store.find_run(run_id)
        if run is None:
            raise NotFoundError(
                f"unknown run id {run_id!r}; `voltui list` shows the runs this engine knows"
            )
        live = self.workflows.live_run(run.id)
        return live if live is not None else run

    async def get_run(self, run_id: str) -> RunDetail:
        run = await self._find(run_id)
        live = self.workflows.live(run.id)
        if live is not None:
            run, workflow, steps = live
            children: list[StepRun] = []
            if any(s.map is not None for s in workflow.steps):  # children live in the store
                await self.store.flush()
                ids = {s.id for s in workflow.steps}
                children = [s for s in await self.store.get_steps(run.id) if s.step_id not in ids]
            return RunDetail(run=run, workflow=workflow, steps=steps, children=children)
        workflow = await self.store.get_workflow(run.id)
        if workflow is None:
            raise NotFoundError(f"run {run.id} has no stored workflow definition")
        stored = {s.step_id: s for s in await self.store.get_steps(run.id)}
        steps = [stored.get(s.id) or StepRun(run_id=run.id, step_id=s.id) for s in workflow.steps]
        ids = {s.id for s in workflow.steps}
        children = [s for sid, s in stored.items() if sid not in ids]
        return RunDetail(run=run, workflow=workflow, steps=steps, children=children)

    async def usage(self, since: float | None = None) -> UsageReport:
        """Summed from the steps kept in the store, so it covers every process that shared
        the file and survives restarts (the snapshot's totals count this engine's calls)."""
        report = UsageReport(since=since)
        runs: set[str] = set()
        for run_id, agent, raw in await self.store.step_usages(since):
            try:
                used = Usage.model_validate_json(raw)
            except ValueError:
                continue  # a damaged row: `voltui doctor` reports it
            if not used.calls:
                continue
            runs.add(run_id)
            report.total = report.total.plus(used)
            who = agent or "(unknown agent)"
            report.by_agent[who] = report.by_agent.get(who, Usage()).plus(used)
            model = used.model or "(several models)"
            report.by_model[model] = report.by_model.get(model, Usage()).plus(used)
        report.runs = len(runs)
        return report

    async def list_runs(self, state: RunState | None = None, limit: int = 50) -> list[Run]:
        stored = await self.store.list_runs(state=state, limit=limit)
        live = {r.id: r for r in self.workflows.active_runs()}
        merged = [live.pop(r.id, r) for r in stored]
        extra = [r for r in live.values() if state is None or r.state == state]
        runs = sorted(extra + merged, key=lambda r: r.created_at, reverse=True)
        return runs[:limit]

    async def step_log(
        self, run_id: str, step_id: str, attempt: int | None = None, tail: int | None = None
    ) -> list[LogLine]:
        run = await self._find(run_id)
        await self.store.flush()
        return await self.store.step_log(run.id, step_id, attempt=attempt, tail=tail)

    async def events(self, query: EventQuery) -> list[Event]:
        await self.store.flush()
        return await self.store.events(query)

    async def wait_run(self, run_id: str) -> Run:
        run = await self._find(run_id)
        waited = await self.workflows.wait(run.id)
        if waited is not None:
            return waited
        while not run.state.finished:  # owned by another process: follow the store
            await asyncio.sleep(FOLLOW_POLL)
            run = await self._find(run.id)
        return run

    async def snapshot(self) -> EngineSnapshot:
        # As of the newest committed event: a subscriber resuming from here misses nothing
        # and is never shown an event a crash could still lose.
        seq = self.dispatcher.released_seq
        recent = [e for e in self.dispatcher.history(EventQuery(limit=200)) if e.seq <= seq]
        return EngineSnapshot(
            seq=seq,
            ts=self._clock(),
            started_at=self.started_at,
            health=self.watcher.health(),
            components=self.watcher.components(),
            metrics=self.watcher.metrics(),
            agents=self.coordination.loads(),
            runs=await self.list_runs(limit=RECENT_RUNS),
            cache=self.cache.stats(),
            events=self.dispatcher.stats(),
            recent_events=recent,
            approvals=self.workflows.approvals.pending(),
            usage=self.workflows.usage.totals(),
        )

    def subscribe(
        self, pattern: str = "*", since_seq: int | None = None
    ) -> AsyncIterator[list[Event]]:
        return self.dispatcher.subscribe(pattern, since_seq, backfill=self.store.events_range)
