"""WorkflowManager: runs workflow DAGs step by step with retries, timeouts and cancellation.

Each run is one asyncio task that launches a step task as soon as the step's dependencies have
succeeded, up to the workflow's `max_parallel`; runs beyond `max_concurrent_workflows` wait queued.
Every state change is saved to the RunStore before the matching event is emitted, so what a
dashboard shows as succeeded is already on disk (durable before reported).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from voltui.engine.agents.base import StepContext
from voltui.engine.cache import CacheManager, stable_key
from voltui.engine.concurrency import ConcurrencyGate
from voltui.engine.coordination import CoordinationEngine
from voltui.engine.durations import format_duration
from voltui.engine.errors import NotFoundError, StepError
from voltui.engine.events import EventDispatcher
from voltui.engine.models import (
    LogLine,
    Priority,
    RetryPolicy,
    Run,
    RunState,
    RunTrigger,
    Step,
    StepRun,
    StepState,
    Workflow,
    validate_dag,
)
from voltui.engine.reaper import process_start_time
from voltui.engine.retry import backoff_delay, should_retry
from voltui.engine.secrets import Masker, MaskingEmitter, MaskingStore
from voltui.engine.store import RunStore

log = logging.getLogger(__name__)

SOURCE = "workflows"
PREVIEW_CHARS = 300


def new_run_id() -> str:
    """Short random ids: 12 hex digits are unique enough and easy to type by prefix."""
    return uuid.uuid4().hex[:12]


def _preview(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


@dataclass
class _RunExec:
    """The live state of one run inside this process."""

    run: Run
    workflow: Workflow
    steps: dict[str, StepRun]
    run_dir: Path
    reuse: dict[str, StepRun] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    stop_reason: Literal["cancelled", "interrupted"] | None = None


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
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        new_id: Callable[[], str] = new_run_id,
        gate: ConcurrencyGate | None = None,
    ) -> None:
        # Secrets are masked at the two doors step text leaves by: the store and the events.
        self.secrets = Masker()
        self._events: EventDispatcher = MaskingEmitter(dispatcher, self.secrets)  # type: ignore[assignment]
        self._coord = coordination
        self._cache = cache
        self._store: RunStore = MaskingStore(store, self.secrets)  # type: ignore[assignment]
        self.gate = gate or ConcurrencyGate(dispatcher)
        self._runs_dir = runs_dir
        self._slots = asyncio.Semaphore(max_concurrent_workflows)
        self._default_retry = default_retry or RetryPolicy()
        self._workflow_timeout = workflow_timeout
        self._cancel_grace = cancel_grace
        self._settings = settings or {}
        self._clock = clock
        self._timer = timer
        self._new_id = new_id
        self._rng = rng or random.Random()
        self._active: dict[str, _RunExec] = {}
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ public

    def active_runs(self) -> list[Run]:
        return [ex.run.model_copy() for ex in self._active.values()]

    def live(self, run_id: str) -> tuple[Run, Workflow, list[StepRun]] | None:
        """State of a run held in memory (None once it finished and left)."""
        ex = self._active.get(run_id)
        if ex is None:
            return None
        steps = [ex.steps[s.id].model_copy() for s in ex.workflow.steps]
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
    ) -> Run:
        """Record a new run and schedule it; returns at once with the run queued."""
        problems = validate_dag(workflow)
        if problems:
            raise ValueError("; ".join(p.message for p in problems))
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
        steps = {
            s.id: StepRun(
                run_id=run_id, step_id=s.id, max_attempts=self._policy(workflow, s).max_attempts
            )
            for s in workflow.steps
        }
        ex = _RunExec(run, workflow, steps, Path(run.run_dir or ""), reuse or {})
        self.secrets.add_names(workflow.secrets)
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
                "replay_of": replay_of,
                "replay_mode": replay_mode,
                "trigger": trigger,
                "trigger_ref": trigger_ref,
            },
            correlation_id=run_id,
        )
        ex.task = asyncio.create_task(self._run(ex), name=f"run-{run_id}")
        return run.model_copy()

    async def cancel(self, run_id: str) -> Run:
        """Stop a run: running steps get their processes terminated, the rest are cancelled.

        Returns once the work has stopped, so the state it reports is the final one.
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

    async def _stop_run(self, ex: _RunExec, reason: Literal["cancelled", "interrupted"]) -> None:
        if ex.run.state.finished:
            return
        if ex.stop_reason is None:
            ex.stop_reason = reason
        if ex.task is not None and not ex.task.done():
            ex.task.cancel()
        await ex.done.wait()

    def _policy(self, workflow: Workflow, step: Step) -> RetryPolicy:
        return step.retry or workflow.retry or self._default_retry

    async def _run(self, ex: _RunExec) -> None:
        run = ex.run
        try:
            if not await self.gate.enter(run, ex.workflow):  # concurrency key busy, policy skip
                await self._finish(ex, cancelled=True)
                return
            async with self._slots:
                run.state = RunState.RUNNING
                run.started_at = self._clock()
                ex.run_dir.mkdir(parents=True, exist_ok=True)
                await self._store.save_run(run)
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
                    run.error = f"workflow timed out after {format_duration(timeout)}"
            await self._finish(ex)
        except asyncio.CancelledError:
            await self._finish(ex, cancelled=True)
        except Exception as exc:  # a bug in the engine: record it rather than lose the run
            log.exception("run %s crashed", run.id)
            run.error = f"engine error: {type(exc).__name__}: {exc}"
            await self._finish(ex)
        finally:
            self.gate.release(run.id)
            ex.done.set()
            self._active.pop(run.id, None)

    async def _schedule(self, ex: _RunExec) -> None:
        """Launch steps as their dependencies finish; skip those below a failure."""
        wf = ex.workflow
        by_id = {s.id: s for s in wf.steps}
        remaining = {s.id for s in wf.steps}
        running: dict[asyncio.Task[None], str] = {}
        try:
            while remaining or running:
                progressed = True
                while progressed:
                    progressed = False
                    for sid in [s.id for s in wf.steps if s.id in remaining]:
                        step = by_id[sid]
                        deps = [ex.steps[d] for d in step.depends_on]
                        if any(not d.state.finished for d in deps):
                            continue
                        blocked = [
                            d.step_id
                            for d in deps
                            if not d.state.ok and not by_id[d.step_id].continue_on_failure
                        ]
                        if blocked:
                            remaining.discard(sid)
                            await self._skip(ex, step, blocked)
                            progressed = True
                        elif len(running) < wf.max_parallel:
                            remaining.discard(sid)
                            task = asyncio.create_task(self._run_step(ex, step))
                            running[task] = sid
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    running.pop(task)
                    task.result()
        finally:
            if running:
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)

    async def _finish(self, ex: _RunExec, *, cancelled: bool = False) -> None:
        run = ex.run
        now = self._clock()
        for sr in ex.steps.values():
            if not sr.state.finished:
                sr.state = StepState.CANCELLED
                sr.finished_at = sr.finished_at or (now if sr.started_at else None)
                sr.error = sr.error or (ex.stop_reason or "cancelled")
                await self._store.save_step(sr)
                self._emit_step(ex, "step:cancelled", sr, {"reason": sr.error})
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
            bad = [
                sr.step_id
                for sr in ex.steps.values()
                if not sr.state.ok
                and not (
                    sr.state is StepState.FAILED
                    and ex.workflow.step(sr.step_id).continue_on_failure
                )
            ]
            run.state = RunState.FAILED if bad else RunState.SUCCEEDED
            if bad:
                failed = [s for s in bad if ex.steps[s].state is StepState.FAILED]
                run.error = (
                    f"step {failed[0]} failed: {ex.steps[failed[0]].error}" if failed else None
                )
        run.finished_at = now
        run.steps_done = sum(1 for sr in ex.steps.values() if sr.state.finished)
        await self._store.save_run(run)
        self._events.emit(
            f"workflow:{run.state.value}",
            SOURCE,
            {
                "workflow_id": run.workflow_id,
                "name": run.workflow_name,
                "state": run.state.value,
                "duration": run.duration,
                "error": run.error,
            },
            priority=Priority.HIGH,
            correlation_id=run.id,
        )

    # ------------------------------------------------------------------ steps

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

    async def _progress(self, ex: _RunExec) -> None:
        run = ex.run
        run.steps_done = sum(1 for sr in ex.steps.values() if sr.state.finished)
        await self._store.save_run(run)
        self._events.emit(
            "workflow:progress",
            SOURCE,
            {"done": run.steps_done, "total": run.steps_total},
            priority=Priority.LOW,
            correlation_id=run.id,
        )

    async def _skip(self, ex: _RunExec, step: Step, blocked: list[str]) -> None:
        sr = ex.steps[step.id]
        sr.state = StepState.SKIPPED
        sr.error = f"skipped because {', '.join(blocked)} did not succeed"
        await self._store.save_step(sr)
        self._emit_step(ex, "step:skipped", sr, {"reason": sr.error})
        await self._progress(ex)

    def _cache_key(self, ex: _RunExec, step: Step, upstream: dict[str, Any]) -> str:
        definition = step.model_dump(mode="json", exclude={"retry", "timeout", "priority", "name"})
        return stable_key(ex.workflow.id, definition, ex.run.inputs, upstream)

    async def _run_step(self, ex: _RunExec, step: Step) -> None:
        sr = ex.steps[step.id]
        upstream = {d: ex.steps[d].output for d in step.depends_on}

        previous = ex.reuse.get(step.id)
        if previous is not None and previous.state.ok:
            sr.state = StepState.SUCCEEDED
            sr.output = previous.output
            sr.attempt = previous.attempt
            sr.agent_id = previous.agent_id
            sr.started_at = previous.started_at
            sr.finished_at = previous.finished_at
            sr.reused_from = previous.reused_from or previous.run_id
            await self._store.save_step(sr)
            self._emit_step(ex, "step:succeeded", sr, {"reused_from": sr.reused_from})
            await self._progress(ex)
            return

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
                await self._store.save_step(sr)
                self._emit_step(ex, "step:cached", sr, {"output": _preview(hit)})
                await self._progress(ex)
                return

        policy = self._policy(ex.workflow, step)
        attempt = 0
        while True:
            attempt += 1
            sr.attempt = attempt
            sr.error = None
            sr.exit_code = None
            sr.state = StepState.WAITING
            self._emit_step(ex, "step:waiting", sr, {"requires": step.requires}, Priority.LOW)
            try:
                agent = await self._coord.acquire(step, run_id=ex.run.id)
            except StepError as exc:
                await self._fail(ex, sr, str(exc), None)
                return
            sr.state = StepState.RUNNING
            sr.agent_id = agent.id
            sr.started_at = self._clock()
            sr.finished_at = None
            await self._store.save_step(sr)
            self._emit_step(ex, "step:started", sr, {"type": step.type, "kind": step.run.kind})
            ctx = StepContext(
                run_id=ex.run.id,
                step=step,
                attempt=attempt,
                inputs=ex.run.inputs,
                upstream=upstream,
                base_dir=self._base_dir(ex),
                run_dir=ex.run_dir,
                emit=self._output_sink(ex, step.id, attempt),
                on_spawn=self._spawn_recorder(sr),
                cancel_grace=self._cancel_grace,
                settings=self._settings,
            )
            started = self._timer()
            error: str | None = None
            retryable = True
            try:
                async with asyncio.timeout(step.timeout):
                    output = await agent.execute(ctx)
            except TimeoutError:
                error = f"timed out after {format_duration(step.timeout)}"
            except StepError as exc:
                error = str(exc)
                retryable = exc.retryable
                sr.exit_code = exc.exit_code
            except asyncio.CancelledError:
                self._coord.release(agent, latency=self._timer() - started, success=False)
                sr.finished_at = self._clock()
                raise
            except Exception as exc:  # an agent bug must fail the step, not the engine
                log.exception("agent %s raised", agent.id)
                error = f"{type(exc).__name__}: {exc}"
            latency = self._timer() - started
            self._coord.release(agent, latency=latency, success=error is None)
            sr.finished_at = self._clock()
            sr.pid = sr.pid_started = None

            if error is None:
                sr.state = StepState.SUCCEEDED
                sr.output = output
                await self._store.save_step(sr)  # durable before reported
                if cache_key is not None and step.cache is not None:
                    ttl = step.cache.ttl
                    self._cache.set(cache_key, output, step.cache.namespace, ttl=ttl)
                    expires = None if ttl is None else self._clock() + ttl
                    await self._store.cache_put(cache_key, output, expires)
                self._emit_step(
                    ex, "step:succeeded", sr, {"duration": latency, "output": _preview(output)}
                )
                await self._progress(ex)
                return

            if should_retry(policy, attempt, error, retryable=retryable):
                delay = backoff_delay(policy, attempt, self._rng)
                sr.state = StepState.RETRYING
                sr.error = error
                await self._store.save_step(sr)
                self._emit_step(
                    ex,
                    "step:retrying",
                    sr,
                    {"error": error, "delay": round(delay, 3), "next_attempt": attempt + 1},
                    Priority.HIGH,
                )
                await asyncio.sleep(delay)
                continue
            await self._fail(ex, sr, error, latency)
            return

    async def _fail(self, ex: _RunExec, sr: StepRun, error: str, latency: float | None) -> None:
        sr.state = StepState.FAILED
        sr.error = error
        sr.finished_at = sr.finished_at or self._clock()
        await self._store.save_step(sr)
        self._emit_step(ex, "step:failed", sr, {"error": error, "duration": latency}, Priority.HIGH)
        await self._progress(ex)

    def _spawn_recorder(self, sr: StepRun) -> Callable[[int], None]:
        """Save the child's process group so a restart after a crash can end it."""

        def record(pid: int) -> None:
            sr.pid = pid
            sr.pid_started = process_start_time(pid)
            task = asyncio.create_task(self._store.save_step(sr))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        return record

    def _base_dir(self, ex: _RunExec) -> Path:
        source = ex.run.workflow_path
        return Path(source).resolve().parent if source else Path.cwd()

    def _output_sink(
        self, ex: _RunExec, step_id: str, attempt: int
    ) -> Callable[[Literal["stdout", "stderr", "engine"], str], None]:
        run_id = ex.run.id

        def sink(stream: Literal["stdout", "stderr", "engine"], line: str) -> None:
            now = self._clock()
            self._store.append_log(
                [
                    LogLine(
                        run_id=run_id,
                        step_id=step_id,
                        attempt=attempt,
                        stream=stream,
                        ts=now,
                        line=line,
                    )
                ]
            )
            self._events.emit(
                "step:output",
                SOURCE,
                {"step": step_id, "attempt": attempt, "stream": stream, "line": line},
                priority=Priority.LOW,
                correlation_id=run_id,
            )

        return sink


class _Miss:
    """Sentinel so a cached `None` output is still a hit."""


_MISS: Any = _Miss()
