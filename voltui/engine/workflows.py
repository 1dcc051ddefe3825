"""WorkflowManager: runs workflow DAGs step by step with retries, timeouts and cancellation.

Each run is one asyncio task; each step attempt is one task launched the moment the step's last
dependency finishes, up to the workflow's `max_parallel`; runs beyond `max_concurrent_workflows`
wait queued.

Cost follows the change, not the size (DESIGN rule 8): every step keeps a count of unfinished
dependencies and a list of dependents, so a step finishing touches only its own edges; progress
counters are kept as steps change, never recounted; per-run facts (the workflow folder, the
step index) are computed once at submit.

Durable before reported: a step's final state is appended to the RunStore and its event is
emitted, and its dependents released, only after the commit that holds it. Every step that
finishes in the same loop tick shares one commit (`_Journal`), so a thousand steps finishing
together cost one transaction, not a thousand round trips to the writer thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from voltui.engine.agents.base import StepContext
from voltui.engine.approvals import ApprovalGate
from voltui.engine.budget import BudgetExceededError, RunBudget
from voltui.engine.cache import CacheManager, stable_key
from voltui.engine.concurrency import ConcurrencyGate
from voltui.engine.conditions import ConditionError, evaluate, referenced_steps, value
from voltui.engine.coordination import CoordinationEngine
from voltui.engine.durations import format_duration
from voltui.engine.errors import NotFoundError, StepError
from voltui.engine.events import EventDispatcher
from voltui.engine.models import (
    Approval,
    ApprovalCall,
    LogLine,
    Priority,
    RetryPolicy,
    Run,
    RunState,
    RunTrigger,
    Step,
    StepRun,
    StepState,
    Usage,
    Workflow,
    validate_dag,
)
from voltui.engine.private import ensure_private_dir
from voltui.engine.ratelimit import RateLimits
from voltui.engine.reaper import process_start_time
from voltui.engine.retry import backoff_delay, should_retry
from voltui.engine.secrets import Masker, MaskingEmitter
from voltui.engine.store import RunStore, run_row, step_row
from voltui.engine.usage import UsageLedger

log = logging.getLogger(__name__)

SOURCE = "workflows"
PREVIEW_CHARS = 300
StopReason = Literal["cancelled", "interrupted"]


def new_run_id() -> str:
    """Short random ids: 12 hex digits are unique enough and easy to type by prefix."""
    return uuid.uuid4().hex[:12]


def _preview(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


@dataclass(eq=False, slots=True)
class _Node:
    """One step of one run: its state plus the edges the scheduler walks."""

    step: Step
    sr: StepRun
    pending: int
    """Dependencies not finished yet; the step is ready at 0."""
    children: list[_Node] = field(default_factory=list)
    blocked_by: list[str] | None = None
    """Dependencies that finished without success (and without `continue_on_failure`)."""
    settled: bool = False
    """Final state set; its report may still be waiting for the commit."""


@dataclass(slots=True)
class _Outcome:
    """How an attempt loop ended: the final event to report, or the error that failed it."""

    event: str
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    duration: float | None = None


@dataclass(eq=False)
class _RunExec:
    """The live state of one run inside this process."""

    run: Run
    workflow: Workflow
    nodes: dict[str, _Node]
    order: list[_Node]
    run_dir: Path
    base_dir: Path
    reuse: dict[str, StepRun] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    stop_reason: StopReason | None = None
    timed_out: float | None = None
    ready: deque[_Node] = field(default_factory=deque)
    running: set[asyncio.Task[None]] = field(default_factory=set)
    inflight: int = 0
    """Steps launched and not yet reported finished: what `max_parallel` limits, so no view
    ever sees more steps running than the limit while a commit is pending."""
    finished: int = 0
    tolerated: int = 0
    """Steps that failed with `continue_on_failure`: they do not fail the run."""
    all_done: asyncio.Future[None] | None = None
    closed: bool = False
    dirty: bool = False
    """Counters changed since the run row was last queued for the store."""
    budget: RunBudget | None = None
    """The run's LLM spending against `workflow.budget`, if it has one."""
    asking: int = 0
    """Approval steps waiting for a decision (no agent, not counted in `inflight`)."""
    draining: bool = False
    """The scheduler is stopping (cancel, timeout, end): no step starts any more."""
    begun: bool = False
    """`_run` has started: from then on a stop cancels its task."""
    resumed: bool = False
    """Continued in place after an engine stopped: `reuse` holds every step that ended."""


class _Journal:
    """Groups the store writes of one loop tick into one commit, then reports them in order.

    Callers append their rows to the store (never blocking), then register what must happen
    once those rows are durable (emit the event, release the dependents). One flush is in
    flight at a time so reports keep the order they were registered in.
    """

    def __init__(
        self,
        store: RunStore,
        on_error: Callable[[_RunExec, BaseException], None],
        on_progress: Callable[[_RunExec], None],
    ) -> None:
        self._store = store
        self._on_error = on_error
        self._on_progress = on_progress
        self._reports: list[tuple[_RunExec, Callable[[], None]]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._dirty: dict[str, _RunExec] = {}
        self._scheduled = False
        self._inflight = False

    def after_commit(self, ex: _RunExec, report: Callable[[], None]) -> None:
        self._reports.append((ex, report))
        self._schedule()

    def mark_dirty(self, ex: _RunExec) -> None:
        """Queue the run's row (counters) with the next commit, once however often it changed."""
        if not ex.dirty:
            ex.dirty = True
            self._dirty[ex.run.id] = ex
            self._schedule()

    def wait(self) -> asyncio.Future[None]:
        """A future set once everything appended so far is committed and reported."""
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._schedule()
        return future

    def _schedule(self) -> None:
        if not self._scheduled and not self._inflight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._inflight:
            return
        dirty, self._dirty = self._dirty, {}
        rows = []
        for ex in dirty.values():
            ex.dirty = False
            rows.append(run_row(ex.run))
        reports, self._reports = self._reports, []
        waiters, self._waiters = self._waiters, []
        try:
            self._store.append_runs(rows)
        except Exception as exc:
            self._settle(None, reports, waiters, dirty, exc)
            return
        self._inflight = True
        task = asyncio.get_running_loop().create_task(self._store.flush())
        task.add_done_callback(lambda t: self._settle(t, reports, waiters, dirty, None))

    def _settle(
        self,
        task: asyncio.Task[None] | None,
        reports: list[tuple[_RunExec, Callable[[], None]]],
        waiters: list[asyncio.Future[None]],
        dirty: dict[str, _RunExec],
        error: BaseException | None,
    ) -> None:
        self._inflight = False
        if task is not None:
            error = asyncio.CancelledError() if task.cancelled() else task.exception()
        if error is None:
            for ex in dirty.values():
                self._on_progress(ex)
            for ex, report in reports:
                try:
                    report()
                except Exception as exc:  # an engine bug: end that run, never strand waiters
                    log.exception("run %s: reporting a committed change failed", ex.run.id)
                    self._on_error(ex, exc)
        else:
            failed = {id(ex): ex for ex, _ in reports} | {id(ex): ex for ex in dirty.values()}
            for ex in failed.values():
                self._on_error(ex, error)
        for waiter in waiters:
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
        if self._reports or self._waiters or self._dirty:
            self._schedule()


class WorkflowManager:
    """Owns every active run; the Orchestrator facade forwards API calls here."""

    def __init__(
        self,
        dispatcher: EventDispatcher,
        coordination: CoordinationEngine,
        cache: CacheManager,
        store: RunStore,
        *,
        runs_dir: Path,
        max_concurrent_workflows: int = 10,
        default_retry: RetryPolicy | None = None,
        workflow_timeout: float | None = None,
        cancel_grace: float = 5.0,
        settings: dict[str, Any] | None = None,
        max_log_lines: int = 10_000,
        live_output_lines: int = 200,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        new_id: Callable[[], str] = new_run_id,
        gate: ConcurrencyGate | None = None,
        limits: RateLimits | None = None,
        usage: UsageLedger | None = None,
        approvals: ApprovalGate | None = None,
        max_map_children: int = 1000,
    ) -> None:
        # Secret values are masked where step text enters (output sink, errors, outputs) and,
        # as a net for everything else, in event data.
        self.secrets = Masker()
        self._events: EventDispatcher = MaskingEmitter(dispatcher, self.secrets)  # type: ignore[assignment]
        self.gate = gate or ConcurrencyGate(dispatcher)
        self._coord = coordination
        self._cache = cache
        self._store = store
        self._runs_dir = runs_dir
        self._slots = asyncio.Semaphore(max_concurrent_workflows)
        self._default_retry = default_retry or RetryPolicy()
        self._workflow_timeout = workflow_timeout
        self._cancel_grace = cancel_grace
        self._settings = settings or {}
        self._log_lines = max_log_lines
        self._live_lines = live_output_lines
        self._clock = clock
        self._timer = timer
        self._new_id = new_id
        self._rng = rng or random.Random()
        self._active: dict[str, _RunExec] = {}
        self._journal = _Journal(store, self._crash, self._emit_progress)
        # Always a registry, even without configured limits: a provider's Retry-After must
        # hold back the next call to it.
        self._limits = limits or RateLimits(clock=clock, timer=timer)
        self.usage = usage or UsageLedger()
        self.approvals = approvals or ApprovalGate(store, clock=clock)
        self._max_map_children = max_map_children
        self.touches = 0
        """Step-node visits by the scheduler; tests assert it grows linearly with run size."""

    # ------------------------------------------------------------------ public

    def active_runs(self) -> list[Run]:
        return [ex.run.model_copy() for ex in self._active.values()]

    def is_active(self, run_id: str) -> bool:
        return run_id in self._active

    def live_run(self, run_id: str) -> Run | None:
        """A copy of an active run's row, without its steps (cheap at any run size)."""
        ex = self._active.get(run_id)
        return ex.run.model_copy() if ex is not None else None

    def live(self, run_id: str) -> tuple[Run, Workflow, list[StepRun]] | None:
        """State of a run held in memory (None once it finished and left)."""
        ex = self._active.get(run_id)
        if ex is None:
            return None
        steps = [node.sr.model_copy() for node in ex.order]
        return ex.run.model_copy(), ex.workflow, steps

    async def submit(
        self,
        workflow: Workflow,
        inputs: dict[str, Any],
        *,
        replay_of: str | None = None,
        replay_mode: Literal["failed", "all"] | None = None,
        reuse: dict[str, StepRun] | None = None,
        run_dir: Path | None = None,
        trigger: RunTrigger = "manual",
        trigger_ref: str | None = None,
        resume: Run | None = None,
    ) -> Run:
        """Record a new run and schedule it; returns at once with the run queued.

        `resume` is an interrupted run this engine has claimed (`RunStore.claim_interrupted`):
        it continues under its own id, its finished steps (`reuse`) kept as they ended."""
        problems = validate_dag(workflow)
        if problems:
            raise ValueError("; ".join(p.message for p in problems))
        if resume is not None:
            run = resume
            run_id = run.id
        else:
            run_id = self._new_id()
            run = Run(
                id=run_id,
                workflow_id=workflow.id,
                workflow_name=workflow.title,
                inputs=inputs,
                created_at=self._clock(),
                steps_total=len(workflow.steps),
                replay_of=replay_of,
                replay_mode=replay_mode,
                workflow_path=workflow.source,
                run_dir=str(run_dir or self._runs_dir / run_id),
                owner_pid=os.getpid(),
                trigger=trigger,
                trigger_ref=trigger_ref,
            )
        nodes: dict[str, _Node] = {}
        order: list[_Node] = []
        for s in workflow.steps:
            # Values the engine made itself: construct without validation (a third of what
            # setting up a 10,000-step run cost). The result is an ordinary StepRun.
            sr = StepRun.model_construct(
                run_id=run_id, step_id=s.id, max_attempts=self._policy(workflow, s).max_attempts
            )
            node = _Node(s, sr, len(s.depends_on))
            nodes[s.id] = node
            order.append(node)
        for node in order:
            for dep in node.step.depends_on:
                nodes[dep].children.append(node)
        base_dir = await asyncio.to_thread(_workflow_folder, workflow.source)
        ex = _RunExec(run, workflow, nodes, order, Path(run.run_dir or ""), base_dir, reuse or {})
        ex.resumed = resume is not None
        self.secrets.add_names(workflow.secrets)
        if workflow.budget is not None:
            ex.budget = RunBudget(workflow.budget, self._settings.get("llm_prices") or {})
            if run.usage is not None:  # what a resumed run spent before still counts
                ex.budget.spent_tokens = run.usage.total_tokens
                ex.budget.spent_usd = run.usage.cost_usd
        if resume is not None:
            # Steps to run again start over as pending, so no reader sees them as interrupted.
            again = [n.sr for n in order if n.step.id not in ex.reuse]
            self._store.append_steps([step_row(sr) for sr in again])
            await self._store.save_run(run)
        else:
            await self._store.save_run(run, workflow)
        self._active[run_id] = ex
        self._events.emit(
            "workflow:queued",
            SOURCE,
            {
                "workflow_id": workflow.id,
                "name": workflow.title,
                "inputs": inputs,
                "steps_total": len(workflow.steps),
                "dag": [[s.id, list(s.depends_on)] for s in workflow.steps],
                "replay_of": run.replay_of,
                "replay_mode": run.replay_mode,
                "trigger": run.trigger,
                "trigger_ref": run.trigger_ref,
                "resumed": ex.resumed,
            },
            correlation_id=run_id,
        )
        ex.task = asyncio.create_task(self._run(ex), name=f"run-{run_id}")
        return run.model_copy()

    async def cancel(self, run_id: str) -> Run:
        """Stop a run: running steps get their processes terminated, the rest are cancelled.

        Returns once the work has stopped, so the state it reports is the final one. Work that
        cannot be interrupted (a synchronous python step) is waited for; meanwhile the run is
        `cancelling`.
        """
        ex = self._active.get(run_id)
        if ex is None:
            raise NotFoundError(f"run {run_id} is not active in this engine; nothing to cancel")
        await self._stop_run(ex, "cancelled")
        return ex.run.model_copy()

    async def wait(self, run_id: str) -> Run | None:
        """Wait for an active run to finish; None when it is not active here."""
        ex = self._active.get(run_id)
        if ex is None:
            return None
        await ex.done.wait()
        return ex.run.model_copy()

    async def stop(self) -> None:
        """Engine shutdown: active runs become `interrupted` (resumable with replay --failed)."""
        await asyncio.gather(
            *(self._stop_run(ex, "interrupted") for ex in list(self._active.values())),
            return_exceptions=True,
        )

    # ------------------------------------------------------------------ run

    async def _stop_run(self, ex: _RunExec, reason: StopReason) -> None:
        if ex.run.state.finished:
            return
        if ex.stop_reason is None:
            ex.stop_reason = reason
            if reason == "cancelled" and ex.run.state is not RunState.QUEUED:
                self._live_state(ex, RunState.CANCELLING)
        # A task cancelled before its first step never runs `_run` at all (not even its
        # `finally`), so `done` would never be set: one not begun sees `stop_reason` instead.
        if ex.begun and ex.task is not None and not ex.task.done():
            ex.task.cancel()
        await ex.done.wait()

    def _policy(self, workflow: Workflow, step: Step) -> RetryPolicy:
        return step.retry or workflow.retry or self._default_retry

    async def _run(self, ex: _RunExec) -> None:
        run = ex.run
        ex.begun = True
        try:
            if ex.stop_reason is not None:  # stopped before this task first ran
                await self._finish(ex, cancelled=True)
                return
            try:
                if not await self.gate.enter(run, ex.workflow):  # concurrency key busy, skip
                    await self._finish(ex, cancelled=True)
                    return
                await self._slots.acquire()
            except asyncio.CancelledError:
                await self._finish(ex, cancelled=True)
                return
            try:
                await self._execute(ex)
            finally:
                # Released only after the final event: the next queued run starts after it.
                self._slots.release()
        finally:
            self.gate.release(run.id)
            ex.done.set()
            self._active.pop(run.id, None)

    async def _execute(self, ex: _RunExec) -> None:
        run = ex.run
        try:
            run.state = RunState.RUNNING
            if run.started_at is None:  # a resumed run keeps its first start
                run.started_at = self._clock()
            ensure_private_dir(ex.run_dir)  # 0700: step artefacts are the owner's alone
            self._store.append_runs([run_row(run)])
            self._events.emit(
                "workflow:started",
                SOURCE,
                {"workflow_id": run.workflow_id, "name": run.workflow_name},
                priority=Priority.HIGH,
                correlation_id=run.id,
            )
            timeout = ex.workflow.timeout or self._workflow_timeout
            try:
                async with asyncio.timeout(timeout):
                    await self._schedule(ex)
            except TimeoutError:
                if ex.stop_reason is not None:
                    raise asyncio.CancelledError() from None
                ex.timed_out = timeout
                run.error = f"workflow timed out after {format_duration(timeout)}"
            await self._finish(ex)
        except asyncio.CancelledError:
            await self._finish(ex, cancelled=True)
        except Exception as exc:  # a bug in the engine: record it rather than lose the run
            log.exception("run %s crashed", run.id)
            run.error = f"engine error: {type(exc).__name__}: {exc}"
            await self._finish(ex)

    async def _schedule(self, ex: _RunExec) -> None:
        """Start the roots, then let each finishing step release its dependents."""
        ex.all_done = asyncio.get_running_loop().create_future()
        for node in ex.order:
            if node.pending == 0:
                ex.ready.append(node)
        self._launch(ex)
        try:
            if ex.finished < len(ex.order):
                await ex.all_done
        finally:
            # No new step may start from here: a commit settling while the running ones are
            # stopped would otherwise launch a dependent that outlives the run.
            ex.draining = True
            if ex.running:
                tasks = list(ex.running)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def _run_waits(self, ex: _RunExec, waiting: bool) -> None:
        """`waiting`: the run has nothing at work but an approval (state WAITING, so `voltui
        list --state waiting` finds what needs a person); else it is running again."""
        run = ex.run
        if waiting == (run.state is RunState.WAITING) or run.state not in (
            RunState.RUNNING,
            RunState.WAITING,
        ):
            return
        state = RunState.WAITING if waiting else RunState.RUNNING
        self._live_state(ex, state, {"approvals": ex.asking})

    def _live_state(
        self, ex: _RunExec, state: RunState, extra: dict[str, Any] | None = None
    ) -> None:
        """Move an active run to `state` (cancelling, waiting, running): its row, and
        `workflow:<state>` for every view."""
        run = ex.run
        run.state = state
        self._store.append_runs([run_row(run)])
        self._events.emit(
            f"workflow:{state.value}",
            SOURCE,
            {"workflow_id": run.workflow_id, "state": state.value, **(extra or {})},
            priority=Priority.HIGH,
            correlation_id=run.id,
        )

    def _launch(self, ex: _RunExec) -> None:
        limit = ex.workflow.max_parallel
        if ex.ready and ex.run.state is RunState.WAITING and not ex.draining:
            self._run_waits(ex, False)  # work again, not only waiting
        while ex.ready and ex.inflight < limit and not ex.draining:
            node = ex.ready.popleft()
            ex.inflight += 1
            self.touches += 1
            task = asyncio.create_task(self._run_step(ex, node))
            ex.running.add(task)
            task.add_done_callback(lambda t, ex=ex: self._task_done(ex, t))

    def _task_done(self, ex: _RunExec, task: asyncio.Task[None]) -> None:
        ex.running.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._crash(ex, exc)

    def _crash(self, ex: _RunExec, exc: BaseException) -> None:
        """A step task or a commit failed in a way the engine did not expect: end the run."""
        if ex.all_done is not None and not ex.all_done.done():
            ex.all_done.set_exception(exc)

    def _settle(
        self,
        ex: _RunExec,
        node: _Node,
        event_type: str,
        extra: dict[str, Any] | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> None:
        """Record a final step state; report it and release its dependents once committed."""
        node.settled = True
        self._store.append_steps([step_row(node.sr)])

        def report() -> None:
            ex.inflight -= 1
            self._emit_step(ex, event_type, node.sr, extra, priority)
            if not ex.closed:
                self._node_finished(ex, node)
                if ex.asking and not ex.inflight:  # the last work ended; a person is due
                    self._run_waits(ex, True)

        self._journal.after_commit(ex, report)

    def _count(self, ex: _RunExec, node: _Node) -> None:
        run = ex.run
        state = node.sr.state
        ex.finished += 1
        run.steps_done = ex.finished
        if state.ok:
            run.steps_succeeded += 1
        elif state is StepState.FAILED:
            run.steps_failed += 1
            if node.step.continue_on_failure:
                ex.tolerated += 1
        elif state is StepState.SKIPPED:
            run.steps_skipped += 1
        else:
            run.steps_cancelled += 1
        self._journal.mark_dirty(ex)

    def _node_finished(self, ex: _RunExec, node: _Node) -> None:
        """O(edges): count the step, release its dependents, skip those below a failure."""
        self._count(ex, node)
        stack = [node]
        while stack:
            done = stack.pop()
            sr = done.sr
            # Only a step that really failed may let its dependents run on; a skipped or
            # cancelled one never does, whatever its flag says.
            blocks = not sr.state.ok and not (
                sr.state is StepState.FAILED and done.step.continue_on_failure
            )
            for child in done.children:
                self.touches += 1
                child.pending -= 1
                if blocks:
                    if child.blocked_by is None:
                        child.blocked_by = []
                    child.blocked_by.append(done.step.id)
                if child.pending:
                    continue
                if child.blocked_by:
                    self._skip(ex, child)
                    self._count(ex, child)
                    stack.append(child)
                else:
                    ex.ready.append(child)
        if ex.finished >= len(ex.order):
            if ex.all_done is not None and not ex.all_done.done():
                ex.all_done.set_result(None)
        else:
            self._launch(ex)

    def _skip(self, ex: _RunExec, node: _Node) -> None:
        sr = node.sr
        sr.state = StepState.SKIPPED
        sr.error = f"skipped because {', '.join(node.blocked_by or [])} did not succeed"
        node.settled = True
        self._store.append_steps([step_row(sr)])
        self._journal.after_commit(
            ex, lambda: self._emit_step(ex, "step:skipped", sr, {"reason": sr.error})
        )

    async def _finish(self, ex: _RunExec, *, cancelled: bool = False) -> None:
        run = ex.run
        # With the disk full, waiting for durability would keep a cancel (or a signal) waiting
        # for space that may never come: the final states are queued and written when it does.
        holding = self._store.full is not None
        try:
            if not holding:
                await self._journal.wait()  # reports of steps that already ended come first
        except Exception as exc:
            log.error("run %s: final step states were not all committed: %s", run.id, exc)
            run.error = run.error or f"engine error: {exc}"
        ex.closed = ex.draining = True
        now = self._clock()
        stopped: list[StepRun] = []
        for node in ex.order:
            sr = node.sr
            if node.settled or sr.state.finished:
                continue
            node.settled = True
            if ex.timed_out is not None and sr.started_at is not None:
                sr.state = StepState.FAILED
                sr.error = (
                    f"timed out: stopped by the workflow's {format_duration(ex.timed_out)} limit"
                )
            elif ex.timed_out is not None:
                sr.state = StepState.CANCELLED
                sr.error = (
                    f"not started: the workflow timed out after {format_duration(ex.timed_out)}"
                )
            else:
                sr.state = StepState.CANCELLED
                sr.error = ex.stop_reason or "cancelled"
            if sr.started_at is not None and sr.finished_at is None:
                sr.finished_at = now
            self._count(ex, node)
            stopped.append(sr)
        if stopped:
            self._store.append_steps([step_row(sr) for sr in stopped])
        if cancelled or ex.stop_reason:
            run.state = (
                RunState.INTERRUPTED if ex.stop_reason == "interrupted" else RunState.CANCELLED
            )
            run.error = run.error or (
                "interrupted: the engine stopped while the run was active"
                if run.state is RunState.INTERRUPTED
                else "cancelled by the operator"
            )
        elif run.error:
            run.state = RunState.FAILED
        else:
            # A skipped step never fails the run by itself: either a `when:` condition was
            # false, or the failure that caused the skip is counted already.
            bad = run.steps_done - run.steps_succeeded - run.steps_skipped - ex.tolerated
            run.state = RunState.FAILED if bad else RunState.SUCCEEDED
            if bad:
                failed = next(
                    (
                        n
                        for n in ex.order
                        if n.sr.state is StepState.FAILED and not n.step.continue_on_failure
                    ),
                    None,
                )
                run.error = f"step {failed.step.id} failed: {failed.sr.error}" if failed else None
        run.finished_at = now
        ex.dirty = False
        try:
            if holding:
                self._store.append_runs([run_row(run)])
            else:
                await self._store.save_run(run)
        except Exception as exc:
            log.error("run %s: final state not saved: %s", run.id, exc)
        for sr in stopped:
            if sr.state is StepState.FAILED:
                self._emit_step(ex, "step:failed", sr, {"error": sr.error, "timed_out": True})
            else:
                self._emit_step(ex, "step:cancelled", sr, {"reason": sr.error})
        self._events.emit(
            f"workflow:{run.state.value}",
            SOURCE,
            {
                "workflow_id": run.workflow_id,
                "name": run.workflow_name,
                "state": run.state.value,
                "duration": run.duration,
                "error": run.error,
                "succeeded": run.steps_succeeded,
                "failed": run.steps_failed,
                "skipped": run.steps_skipped,
                "cancelled": run.steps_cancelled,
                "timed_out": ex.timed_out is not None,
            },
            priority=Priority.HIGH,
            correlation_id=run.id,
        )

    # ------------------------------------------------------------------ steps

    def _emit_progress(self, ex: _RunExec) -> None:
        """One `workflow:progress` per commit per run, however many steps it covered."""
        if ex.closed:
            return
        run = ex.run
        self._events.emit(
            "workflow:progress",
            SOURCE,
            {
                "done": run.steps_done,
                "total": run.steps_total,
                "succeeded": run.steps_succeeded,
                "failed": run.steps_failed,
                "skipped": run.steps_skipped,
                "cancelled": run.steps_cancelled,
            },
            priority=Priority.LOW,
            correlation_id=run.id,
        )

    def _emit_step(
        self,
        ex: _RunExec,
        type_: str,
        sr: StepRun,
        extra: dict[str, Any] | None = None,
        priority: Priority = Priority.NORMAL,
    ) -> None:
        data: dict[str, Any] = {
            "step": sr.step_id,
            "state": sr.state.value,
            "attempt": sr.attempt,
            "max_attempts": sr.max_attempts,
            "agent": sr.agent_id,
        }
        if extra:
            data.update(extra)
        self._events.emit(type_, SOURCE, data, priority=priority, correlation_id=ex.run.id)

    def _cache_key(self, ex: _RunExec, step: Step, upstream: dict[str, Any]) -> str:
        definition = step.model_dump(mode="json", exclude={"retry", "timeout", "priority", "name"})
        return stable_key(ex.workflow.id, definition, ex.run.inputs, upstream)

    async def _run_step(self, ex: _RunExec, node: _Node) -> None:
        step, sr = node.step, node.sr
        nodes = ex.nodes
        upstream = {d: nodes[d].sr.output for d in step.depends_on}

        previous = ex.reuse.get(step.id)
        if previous is not None and ex.resumed:
            # The same run continuing: a step that ended keeps its ending, failures included
            # (running it again would repeat its side effects).
            node.sr = sr = previous.model_copy()
            if sr.state.ok:
                self._settle(ex, node, "step:succeeded", {"resumed": True, "duration": sr.duration})
            elif sr.state is StepState.SKIPPED:
                self._settle(ex, node, "step:skipped", {"reason": sr.error, "resumed": True})
            else:
                self._fail(ex, node, sr.error or "failed", sr.duration)
            return
        if previous is not None and previous.state.ok:
            sr.state = StepState.SUCCEEDED
            sr.output = previous.output
            sr.attempt = previous.attempt
            sr.agent_id = previous.agent_id
            sr.queued_at = previous.queued_at
            sr.started_at = previous.started_at
            sr.finished_at = previous.finished_at
            sr.reused_from = previous.reused_from or previous.run_id
            self._settle(ex, node, "step:succeeded", {"reused_from": sr.reused_from})
            return

        if step.when is not None and not self._condition_holds(ex, node):
            return
        if step.run.approval is not None:
            await self._approval_step(ex, node)
            return
        if step.map is not None:
            await self._run_map(ex, node, upstream)
            return
        done = await self._perform(ex, step, sr, upstream)
        if done.error is not None:
            self._fail(ex, node, done.error, done.duration)
        else:
            self._settle(ex, node, done.event, done.extra)

    async def _perform(
        self, ex: _RunExec, step: Step, sr: StepRun, upstream: dict[str, Any]
    ) -> _Outcome:
        """The cache, then attempts with retries, until success or final failure; `sr` holds
        the latest attempt. Shared by DAG steps and map children."""
        cache_key = None
        if step.cache is not None:
            cache_key = self._cache_key(ex, step, upstream)
            hit = self._cache.get(cache_key, step.cache.namespace, default=_MISS)
            if hit is _MISS:  # a result stored by an earlier process still counts
                found, stored = await self._store.cache_get(cache_key, self._clock())
                if found:
                    hit = stored
                    self._cache.set(cache_key, stored, step.cache.namespace, ttl=step.cache.ttl)
            if hit is not _MISS:
                now = self._clock()
                sr.state = StepState.CACHED
                sr.cached = True
                sr.output = hit
                sr.started_at = sr.finished_at = now
                return _Outcome("step:cached", {"output": _preview(hit)})

        policy = self._policy(ex.workflow, step)
        coord = self._coord
        attempt = 0
        while True:
            attempt += 1
            sr.attempt = attempt
            sr.error = None
            sr.exit_code = None
            sr.queued_at = self._clock()
            try:
                agent = coord.try_acquire(step)
                if agent is None:
                    sr.state = StepState.WAITING
                    self._emit_step(
                        ex, "step:waiting", sr, {"requires": step.requires}, Priority.LOW
                    )
                    agent = await coord.acquire(step, run_id=ex.run.id)
            except StepError as exc:
                sr.finished_at = self._clock()
                return _Outcome("step:failed", error=str(exc))
            sr.state = StepState.RUNNING
            sr.agent_id = agent.id
            sr.started_at = self._clock()
            sr.finished_at = None
            self._store.append_steps([step_row(sr)])
            self._emit_step(
                ex,
                "step:started",
                sr,
                {"type": step.type, "kind": step.run.kind, "queue_wait": sr.queue_wait},
            )
            ctx = StepContext(
                run_id=ex.run.id,
                step=step,
                attempt=attempt,
                inputs=ex.run.inputs,
                upstream=upstream,
                base_dir=ex.base_dir,
                run_dir=ex.run_dir,
                emit=(sink := self._output_sink(ex, step.id, attempt)),
                on_spawn=self._spawn_recorder(sr),
                cancel_grace=self._cancel_grace,
                settings=self._settings,
                limits=self._limits,
                budget=ex.budget,
                on_usage=self._usage_recorder(ex, sr),
                on_rate_limited=self._limit_reporter(ex, sr),
            )
            started = self._timer()
            error: str | None = None
            retryable = True
            over_budget = False
            try:
                try:
                    if step.timeout is None:
                        output = await agent.execute(ctx)
                    else:
                        async with asyncio.timeout(step.timeout):
                            output = await agent.execute(ctx)
                finally:
                    sink.close()
            except TimeoutError:
                error = f"timed out after {format_duration(step.timeout)}"
            except StepError as exc:
                error = str(exc)
                retryable = exc.retryable
                sr.exit_code = exc.exit_code
                over_budget = isinstance(exc, BudgetExceededError)
            except asyncio.CancelledError:
                coord.release(agent, latency=self._timer() - started, success=None)
                sr.finished_at = self._clock()
                raise
            except Exception as exc:  # an agent bug must fail the step, not the engine
                log.exception("agent %s raised", agent.id)
                error = f"{type(exc).__name__}: {exc}"
            latency = self._timer() - started
            if error is not None:
                error = self.secrets.mask(error)
            if over_budget and ex.budget is not None and ex.budget.spec.on_exceed == "approve":
                # Refused before the call went out: nothing of the agent's failed, and the
                # person decides without the step holding the agent.
                coord.release(agent, latency=latency, success=None)
                sr.pid = sr.pid_started = None
                assert error is not None
                refused = await self._budget_approval(ex, step, sr, error)
                if refused is None:
                    attempt -= 1  # the same attempt, now allowed past the budget
                    continue
                sr.finished_at = self._clock()
                return _Outcome("step:failed", error=refused, duration=sr.duration)
            will_retry = error is not None and should_retry(
                policy, attempt, error, retryable=retryable
            )
            # A retried attempt is not a failure of the agent's yet: only the final outcome
            # counts against it (and a cancellation never does).
            coord.release(agent, latency=latency, success=error is None, final=not will_retry)
            sr.finished_at = self._clock()
            sr.pid = sr.pid_started = None

            if error is None:
                sr.state = StepState.SUCCEEDED
                sr.output = output = self.secrets.mask_value(output)
                if cache_key is not None and step.cache is not None:
                    ttl = step.cache.ttl
                    self._cache.set(cache_key, output, step.cache.namespace, ttl=ttl)
                    expires = None if ttl is None else self._clock() + ttl
                    await self._store.cache_put(cache_key, output, expires)
                return _Outcome(
                    "step:succeeded", {"duration": sr.duration, "output": _preview(output)}
                )

            if will_retry:
                delay = backoff_delay(policy, attempt, self._rng)
                sr.state = StepState.RETRYING
                sr.error = error
                self._store.append_steps([step_row(sr)])
                self._emit_step(
                    ex,
                    "step:retrying",
                    sr,
                    {
                        "error": error,
                        "delay": round(delay, 3),
                        "next_attempt": attempt + 1,
                        "duration": sr.duration,
                    },
                    Priority.HIGH,
                )
                await asyncio.sleep(delay)
                continue
            return _Outcome("step:failed", error=error, duration=sr.duration)

    # ------------------------------------------------------------------ agent operations

    def _condition_holds(self, ex: _RunExec, node: _Node) -> bool:
        """Evaluate `when:`; false skips the step (dependents follow the skip rules), and a
        condition that cannot be read (a missing key) fails it, saying what was missing."""
        step, sr = node.step, node.sr
        assert step.when is not None
        try:
            holds = evaluate(
                step.when, ex.run.inputs, self._step_view(ex, referenced_steps(step.when))
            )
        except ConditionError as exc:
            sr.finished_at = self._clock()
            self._fail(ex, node, str(exc), None)
            return False
        if not holds:
            sr.state = StepState.SKIPPED
            sr.error = "condition false"
            self._settle(ex, node, "step:skipped", {"reason": sr.error, "condition": step.when})
        return holds

    async def _approval_step(self, ex: _RunExec, node: _Node) -> None:
        """Wait for a person's decision without an agent slot (and without counting against
        `max_parallel` meanwhile); approved succeeds with the decision as output, rejected
        (or timed out to reject) fails the step."""
        step, sr = node.step, node.sr
        call = step.run.approval
        assert call is not None
        sr.attempt += 1
        sr.state = StepState.WAITING
        sr.queued_at = sr.started_at = self._clock()
        sr.finished_at = None
        carried = None
        if ex.run.replay_of is not None and ex.run.replay_mode == "failed":
            # Approved after the engine that ran the original died: that decision stands.
            carried = await self._store.get_approval(ex.run.replay_of, step.id)
        request = await self.approvals.ask(ex.run.id, step.id, call, carried=carried)
        if ex.resumed:  # the same question since it was first asked, across the restart
            sr.queued_at = sr.started_at = request.requested_at
        decision = await self._decision(ex, sr, request, own_slot=True, extra={})
        sr.output = decision.output()
        sr.finished_at = self._clock()
        if decision.decision == "approved":
            sr.state = StepState.SUCCEEDED
            self._settle(ex, node, "step:succeeded", {"output": _preview(sr.output)})
            return
        reason = f"rejected by {decision.by} via {decision.via}"
        self._fail(ex, node, reason + (f": {decision.comment}" if decision.comment else ""), None)

    async def _decision(
        self,
        ex: _RunExec,
        sr: StepRun,
        request: Approval,
        *,
        own_slot: bool,
        extra: dict[str, Any],
    ) -> Approval:
        """Report the question, wait for the answer without the step's slot (`own_slot`: a
        person's decision is not work, so other steps may run and, with nothing else at work,
        the run is `waiting`), report the answer and return it."""
        self._store.append_steps([step_row(sr)])
        reason = "awaiting approval: over budget" if extra.get("budget") else "awaiting approval"
        self._emit_step(ex, "step:waiting", sr, {"reason": reason}, Priority.LOW)
        asked = {
            "prompt": request.prompt,
            "timeout_at": request.timeout_at,
            "requested_at": request.requested_at,
            "on_timeout": request.on_timeout,
        }
        self._emit_step(ex, "step:approval_requested", sr, asked | extra, Priority.HIGH)
        if own_slot:
            ex.inflight -= 1
            ex.asking += 1
            self._launch(ex)
            if ex.inflight == 0:
                self._run_waits(ex, True)
        try:
            decision = await self.approvals.wait(request)
        finally:
            if own_slot:
                ex.inflight += 1
                ex.asking -= 1
        if own_slot:
            self._run_waits(ex, False)
        answer = {
            "decision": decision.decision,
            "by": decision.by,
            "via": decision.via,
            "comment": decision.comment,
        }
        self._emit_step(ex, "step:approval_decided", sr, answer | extra, Priority.HIGH)
        return decision

    async def _budget_approval(
        self, ex: _RunExec, step: Step, sr: StepRun, error: str
    ) -> str | None:
        """`budget: {on_exceed: approve}`: ask a person whether this step may spend past the
        run's budget. None when approved (its calls are then allowed); else why it failed."""
        assert ex.budget is not None
        spec = ex.budget.spec
        call = ApprovalCall(
            prompt=f"{error}. Approve to let step {step.id!r} spend past the run's budget.",
            timeout=spec.approve_timeout,
            on_timeout="reject",
        )
        sr.state = StepState.WAITING
        sr.finished_at = None
        request = await self.approvals.ask(ex.run.id, step.id, call)
        # A map child's slot is its map's (counted once in `inflight`): only a step of the
        # DAG itself gives its slot back while it waits.
        own_slot = step.id in ex.nodes
        decision = await self._decision(ex, sr, request, own_slot=own_slot, extra={"budget": True})
        if decision.decision == "approved":
            ex.budget.allow(step.id)
            return None
        why = f"{error}; spending past the budget was rejected by {decision.by} via {decision.via}"
        return why + (f": {decision.comment}" if decision.comment else "")

    def _step_view(self, ex: _RunExec, step_ids: set[str]) -> dict[str, dict[str, Any]]:
        """What expressions may read of these steps: output, state, error."""
        return {
            sid: {
                "output": ex.nodes[sid].sr.output,
                "state": ex.nodes[sid].sr.state.value,
                "error": ex.nodes[sid].sr.error,
            }
            for sid in step_ids
            if sid in ex.nodes
        }

    async def _run_map(self, ex: _RunExec, node: _Node, upstream: dict[str, Any]) -> None:
        """Dynamic fan-out: one child `ID[i]` per item, at most `map.max_parallel` at once,
        each with its own attempts, log and cache key; the step's output is the children's
        outputs in item order. On replay --failed, children that succeeded are reused."""
        step, sr = node.step, node.sr
        spec = step.map
        assert spec is not None
        sr.attempt += 1
        sr.state = StepState.RUNNING
        sr.queued_at = sr.started_at = self._clock()
        sr.finished_at = None
        try:
            seen = self._step_view(ex, referenced_steps(spec.over))
            items = value(spec.over, ex.run.inputs, seen, what="map.over")
        except ConditionError as exc:
            self._fail(ex, node, str(exc), None)
            return
        if not isinstance(items, list | tuple):
            kind = "null" if items is None else type(items).__name__
            self._fail(ex, node, f"map.over {spec.over!r} gave a {kind}, not a list", None)
            return
        if len(items) > self._max_map_children:
            self._fail(
                ex,
                node,
                f"map.over {spec.over!r} gave {len(items):,} items, more than the "
                f"{self._max_map_children:,} children a map may have; raise max_map_children "
                "in the config or split the list",
                None,
            )
            return
        total = len(items)
        self._store.append_steps([step_row(sr)])
        self._emit_step(
            ex, "step:started", sr, {"type": step.type, "kind": "map", "children": total}
        )
        outputs: list[Any] = [None] * total
        errors: dict[int, str] = {}
        counts = {"running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
        gate = asyncio.Semaphore(spec.max_parallel)
        stop = asyncio.Event()  # fail_fast: set at the first failed child
        policy = self._policy(ex.workflow, step)

        def progress() -> None:
            self._emit_step(ex, "step:map_progress", sr, {"total": total, **counts}, Priority.LOW)

        async def child(index: int, item: Any) -> None:
            cid = f"{step.id}[{index}]"
            csr = StepRun(run_id=ex.run.id, step_id=cid, max_attempts=policy.max_attempts)
            previous = ex.reuse.get(cid)
            async with gate:
                if stop.is_set():
                    return  # never started: a replay --failed runs it
                if previous is not None and previous.state.ok:
                    csr = previous.model_copy(
                        update={
                            "run_id": ex.run.id,
                            "reused_from": previous.reused_from or previous.run_id,
                        }
                    )
                    done = _Outcome("step:succeeded", {"reused_from": csr.reused_from})
                else:
                    counts["running"] += 1
                    progress()
                    cstep = step.model_copy(
                        update={
                            "id": cid,
                            "params": {**step.params, "item": item, "index": index},
                            "map": None,
                            "when": None,
                        }
                    )
                    try:
                        done = await self._perform(ex, cstep, csr, upstream)
                    except asyncio.CancelledError:
                        counts["running"] -= 1
                        counts["cancelled"] += 1
                        csr.state = StepState.CANCELLED
                        csr.error = "cancelled: another child failed (fail_fast)"
                        csr.finished_at = self._clock()
                        self._store.append_steps([step_row(csr)])
                        cancelled = {"reason": csr.error, "map": step.id, "index": index}
                        self._journal.after_commit(
                            ex,
                            lambda c=csr, d=cancelled: self._emit_step(ex, "step:cancelled", c, d),
                        )
                        raise
                    counts["running"] -= 1
            if done.error is not None:
                csr.state = StepState.FAILED
                csr.error = done.error
                csr.finished_at = csr.finished_at or self._clock()
                errors[index] = done.error
                counts["failed"] += 1
                if spec.on_failure == "fail_fast":
                    stop.set()
            else:
                outputs[index] = csr.output
                counts["succeeded"] += 1
            self._store.append_steps([step_row(csr)])
            extra = {**done.extra, "map": step.id, "index": index}
            if done.error is not None:
                extra["error"] = done.error
            event = "step:failed" if done.error is not None else done.event

            def report(
                csr: StepRun = csr, event: str = event, extra: dict[str, Any] = extra
            ) -> None:
                self._emit_step(ex, event, csr, extra)
                progress()

            self._journal.after_commit(ex, report)

        tasks = [asyncio.create_task(child(i, item)) for i, item in enumerate(items)]
        try:
            pending = set(tasks)
            while pending:
                finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    task.result()  # an engine bug in a child ends the run, as for a step
                if stop.is_set():
                    for task in pending:
                        task.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
                    break
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        sr.output = outputs
        sr.finished_at = self._clock()
        if errors:
            first = min(errors)
            how = "stopped at the first failure" if spec.on_failure == "fail_fast" else "all ran"
            self._fail(
                ex,
                node,
                f"{len(errors)} of {total} children failed ({how}); "
                f"{step.id}[{first}]: {errors[first]}",
                sr.duration,
            )
            return
        sr.state = StepState.SUCCEEDED
        self._settle(
            ex, node, "step:succeeded", {"duration": sr.duration, "output": _preview(outputs)}
        )

    def _usage_recorder(self, ex: _RunExec, sr: StepRun) -> Callable[[Usage], None]:
        """Add one LLM call's tokens and cost to the step, its run and the engine's totals.

        O(1) per call; the step and run carry their sums and are saved with their next change.
        """

        def record(usage: Usage) -> None:
            sr.usage = usage if sr.usage is None else sr.usage.plus(usage)
            ex.run.usage = usage if ex.run.usage is None else ex.run.usage.plus(usage)
            self.usage.record(sr.agent_id, usage)
            self._journal.mark_dirty(ex)
            self._emit_step(
                ex,
                "step:usage",
                sr,
                {
                    "model": usage.model,
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "cost_usd": usage.cost_usd,
                    "priced": usage.priced,
                    "step_usage": sr.usage.model_dump(),
                    "run_usage": ex.run.usage.model_dump(),
                },
                Priority.LOW,
            )

        return record

    def _limit_reporter(self, ex: _RunExec, sr: StepRun) -> Callable[[float | None, str], None]:
        """A step waiting for a rate limit says until when; the balancer steers away."""

        def report(until: float | None, reason: str) -> None:
            if until is not None and sr.agent_id is not None:
                self._coord.balancer.mark_limited(sr.agent_id, until)
            self._emit_step(ex, "step:rate_limited", sr, {"until": until, "reason": reason})

        return report

    def _fail(self, ex: _RunExec, node: _Node, error: str, duration: float | None) -> None:
        sr = node.sr
        sr.state = StepState.FAILED
        sr.error = error
        sr.finished_at = sr.finished_at or self._clock()
        self._settle(ex, node, "step:failed", {"error": error, "duration": duration}, Priority.HIGH)

    def _spawn_recorder(self, sr: StepRun) -> Callable[[int], None]:
        """Save the child's process group so a restart after a crash can end it."""

        def record(pid: int) -> None:
            sr.pid = pid
            sr.pid_started = process_start_time(pid)
            self._store.append_steps([step_row(sr)])

        return record

    def _output_sink(self, ex: _RunExec, step_id: str, attempt: int) -> _OutputSink:
        return _OutputSink(
            self, ex.run.id, step_id, attempt, ex.run_dir, self._log_lines, self._live_lines
        )


class _OutputSink:
    """Where a step attempt's output lines go: the store's log, live events, and a spill file.

    A chatty step must not sink the engine (issue: 200 MB of output took 5 GB of memory and a
    1 GB database). The store keeps the first `max_lines` lines of an attempt; the rest go to
    `RUN_DIR/logs/STEP.ATTEMPT.log` (0600), with a marker line in the log saying so. Live
    `step:output` events are limited to `live_lines` per second per attempt; the lines beyond
    that are in the log only, and one event per second says how many were not shown live.
    """

    __slots__ = (
        "_attempt",
        "_live_lines",
        "_manager",
        "_max_lines",
        "_run_dir",
        "_run_id",
        "_spill",
        "_spill_path",
        "_step_id",
        "_window",
        "_window_lines",
        "hidden",
        "lines",
    )

    def __init__(
        self,
        manager: WorkflowManager,
        run_id: str,
        step_id: str,
        attempt: int,
        run_dir: Path,
        max_lines: int,
        live_lines: int,
    ) -> None:
        self._manager = manager
        self._run_id = run_id
        self._step_id = step_id
        self._attempt = attempt
        self._run_dir = run_dir
        self._max_lines = max_lines
        self._live_lines = live_lines
        self._spill: Any = None
        self._spill_path: Path | None = None
        self._window = 0.0
        self._window_lines = 0
        self.lines = 0
        self.hidden = 0

    def __call__(self, stream: Literal["stdout", "stderr", "engine"], line: str) -> None:
        m = self._manager
        line = m.secrets.mask(line)
        now = m._clock()
        self.lines += 1
        if self.lines <= self._max_lines:
            self._store_line(stream, line, now)
        else:
            self._spill_line(stream, line, now)
        if now - self._window >= 1.0:
            if self.hidden:
                self._emit(
                    "engine",
                    f"[voltui] {self.hidden} line(s) not shown live; the step's log has them",
                    now,
                )
                self.hidden = 0
            self._window = now
            self._window_lines = 0
        if self._window_lines < self._live_lines:
            self._window_lines += 1
            self._emit(stream, line, now)
        else:
            self.hidden += 1

    def _emit(self, stream: str, line: str, now: float) -> None:
        self._manager._events.emit(
            "step:output",
            SOURCE,
            {"step": self._step_id, "attempt": self._attempt, "stream": stream, "line": line},
            priority=Priority.LOW,
            correlation_id=self._run_id,
        )

    def _store_line(
        self, stream: Literal["stdout", "stderr", "engine"], line: str, now: float
    ) -> None:
        self._manager._store.append_log(
            [
                LogLine(
                    run_id=self._run_id,
                    step_id=self._step_id,
                    attempt=self._attempt,
                    stream=stream,
                    ts=now,
                    line=line,
                )
            ]
        )

    def _spill_line(self, stream: str, line: str, now: float) -> None:
        if self._spill is None:
            folder = self._run_dir / "logs"
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._spill_path = folder / f"{self._step_id}.{self._attempt}.log"
            fd = os.open(
                self._spill_path,
                os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0),
                0o600,
            )
            self._spill = os.fdopen(fd, "a", encoding="utf-8", errors="replace")
        self._spill.write(f"{stream}\t{line}\n")

    def close(self) -> None:
        """End of the attempt: close the spill file and say in the log where the rest is."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None
            extra = self.lines - self._max_lines
            self._store_line(
                "engine",
                f"[voltui] output truncated: {extra} more line(s) are in {self._spill_path}",
                self._manager._clock(),
            )
        if self.hidden:
            self._emit(
                "engine",
                f"[voltui] {self.hidden} line(s) not shown live; the step's log has them",
                self._manager._clock(),
            )
            self.hidden = 0


def _workflow_folder(source: str | None) -> Path:
    """Where relative paths of a run's steps resolve: once per run (it touches the disk)."""
    return Path(source).resolve().parent if source else Path.cwd()


class _Miss:
    """Sentinel so a cached `None` output is still a hit."""


_MISS: Any = _Miss()
