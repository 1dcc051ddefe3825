"""DashboardState: the dashboard's data, a fold of one snapshot plus every later event.

DESIGN.md rule 3 ("the screen is a fold over events"): widgets render only from this object, and
the app repaints only the panels `apply` reports as changed. Nothing here imports Textual, so the
fold is tested against a real engine without an app, and the same code serves embedded mode,
attached mode and the replay of a recorded run.

`apply` sits on the hot path (thousands of events per second folded at about 10 Hz), so the
per-event work is a dict dispatch on the event type, in-place updates of existing objects and no
pydantic validation for the frequent types (`step:*`, `agent:load`). Rare events (a run queued,
health, metrics, cache figures) build validated models, since their cost does not matter.

Memory stays bounded however long the dashboard runs: the event ring buffer has `MAX_EVENTS`
entries, runs beyond `MAX_RUNS` are dropped (oldest finished first), hit-rate histories keep 60
samples, and the rate counter keeps a fixed number of time buckets.

Untrusted text that the state derives and keeps (a step's last output line, step/run errors,
health messages and reasons) is cleaned with `voltui.safetext.clean` when stored. Events in
`events` are kept as received: whoever renders them cleans them (see `voltui.summaries`).
"""

from __future__ import annotations

import fnmatch
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from voltui.engine.api import EngineSnapshot
from voltui.engine.models import (
    AgentLoad,
    CacheStats,
    ComponentStatus,
    Event,
    HealthStatus,
    Run,
    RunDetail,
    RunState,
    StepRun,
    StepState,
    SystemMetrics,
    Usage,
)
from voltui.safetext import clean
from voltui.summaries import summarize

log = logging.getLogger(__name__)

PANELS = ("header", "health", "agents", "runs", "dag", "events", "cache")

HISTORY_SAMPLES = 60
"""Hit-rate samples kept per cache namespace (one per `cache:stats` event), for the sparkline."""

LINE_CHARS = 500
"""Longest `last_line` kept; a step printing a megabyte without a newline costs nothing more."""

ERROR_CHARS = 2000
"""Longest error or health message kept."""

RATE_WINDOW = 5.0
"""Seconds of the sliding window behind `events_per_second`."""

_BUCKETS_PER_SECOND = 4
_MAX_BUCKETS = int(RATE_WINDOW * _BUCKETS_PER_SECOND) + 2

_STEP_STATES: dict[str, StepState] = {s.value: s for s in StepState}
_FINAL_STEP_STATES = frozenset(s for s in StepState if s.finished)
_RUN_STATES: dict[str, RunState] = {s.value: s for s in RunState}
_HEALTH_STATES: dict[str, HealthStatus] = {s.value: s for s in HealthStatus}
_AGENT_FIELDS = frozenset(AgentLoad.model_fields)
_LIVE_RUN_STATES = (RunState.CANCELLING, RunState.WAITING, RunState.RUNNING)
"""Active-run states announced by `workflow:<state>` events after the run started."""
_RUN_RANK = {  # finished: 2
    RunState.QUEUED: 0,
    RunState.RUNNING: 1,
    RunState.WAITING: 1,
    RunState.CANCELLING: 1,
}

# What each kind of event can change, besides "events" (which every folded event changes).
_NONE: frozenset[str] = frozenset()
_RUN_CHANGE = frozenset({"runs", "dag", "header"})  # header shows the active-run count
_PROGRESS_CHANGE = frozenset({"runs", "dag"})
_STEP_CHANGE = frozenset({"dag"})
_APPROVAL_CHANGE = frozenset({"dag", "header"})
_HEADER = frozenset({"header"})
_HEADER_AND_AGENTS = frozenset({"header", "agents"})
"""An approval asked or decided: the step in the DAG, and the banner (drawn with the header)."""
_AGENTS_CHANGE = frozenset({"agents"})
_COMPONENT_CHANGE = frozenset({"health"})
_SYSTEM_CHANGE = frozenset({"health", "header"})
_CACHE_CHANGE = frozenset({"cache"})


def _text(value: object, limit: int = ERROR_CHARS) -> str | None:
    """Cleaned text, or None for a missing or empty value.

    Slices before cleaning so a huge value costs only `limit` characters of regex work; a cut
    escape sequence loses its ESC byte in `clean` and shows as harmless text.
    """
    if value is None or value == "":
        return None
    raw = value if isinstance(value, str) else str(value)
    return clean(raw[: limit * 2], max_len=limit)


def map_child(step_id: object) -> tuple[str, int] | None:
    """`("review", 3)` for the id of a map's child `review[3]`; None for any other id. Step ids
    cannot contain brackets, so the split is unambiguous."""
    if step_id.__class__ is not str or not step_id.endswith("]"):  # type: ignore[attr-defined]
        return None
    sid: str = step_id  # type: ignore[assignment]
    cut = sid.rfind("[")
    digits = sid[cut + 1 : -1]
    if cut <= 0 or not digits.isdigit():
        return None
    return sid[:cut], int(digits)


def map_note(
    total: object,
    running: object = 0,
    succeeded: object = 0,
    failed: object = 0,
    cancelled: object = 0,
) -> str:
    """A map step's note, counting its children: `▶ 3 ✓ 41 ✗ 1 / 50` (running, failed and
    cancelled only when there are some: a finished map reads `✓ 50 / 50` in a narrow panel)."""
    parts = [f"▶ {running}"] if running else []
    parts.append(f"✓ {succeeded}")
    if failed:
        parts.append(f"✗ {failed}")
    if cancelled:
        parts.append(f"■ {cancelled}")
    return f"{' '.join(parts)} / {total}"


# --------------------------------------------------------------------------- views


@dataclass(slots=True, frozen=True)
class PendingApproval:
    """An approval step waiting for a person, as the banner shows it (prompt already clean)."""

    run_id: str
    step_id: str
    prompt: str
    timeout_at: float | None = None


@dataclass(slots=True)
class StepView:
    """One step of a run as the dashboard shows it (its latest attempt)."""

    id: str
    depends_on: list[str]
    state: StepState = StepState.PENDING
    attempt: int = 0
    max_attempts: int = 1
    agent: str | None = None
    started_at: float | None = None
    """Event ts of `step:started` (of the latest attempt)."""
    finished_at: float | None = None
    """Event ts of the final step event; None while the step can still change."""
    error: str | None = None
    last_line: str | None = None
    """Last `step:output` line, already cleaned with `voltui.safetext.clean`."""
    took: float | None = None
    """The engine's own duration of the final attempt (the `duration` of its final event):
    attempt start to end, the figure the run detail, the CLI and the event line show."""
    waiting_at: float | None = None
    """Event ts of `step:waiting` (of the latest attempt): the start of its queue wait."""
    queue_wait: float | None = None
    """Seconds the latest attempt waited for an agent (`step:waiting` to `step:started`),
    shown apart from the duration."""
    reused_from: str | None = None
    """The run whose stored result this step reused (a replay of the failed steps), cleaned."""
    map_total: int | None = None
    """Children of a map step (`ID[0]` ... `ID[n-1]`, in `RunView.children`); None for a step
    that is not a map, or a map not started yet."""

    @property
    def duration(self) -> float | None:
        """Attempt start to end (DESIGN.md rule 10): the engine's figure when its final event
        carried one, else the span between the attempt's events; None while still going."""
        if self.finished_at is None or self.started_at is None:
            return None
        if self.took is not None:
            return self.took
        return max(0.0, self.finished_at - self.started_at)

    def elapsed(self, now: float) -> float | None:
        """`duration` once finished; while running, the time since the attempt started."""
        if self.started_at is None:
            return None
        if self.finished_at is not None:
            return self.duration
        return max(0.0, now - self.started_at)

    @property
    def seen(self) -> bool:
        """Whether the fold has seen this step do anything (so its figures are first-hand)."""
        return self.attempt > 0 or self.state is not StepState.PENDING


@dataclass(frozen=True, slots=True)
class Progress:
    """A run's progress in steps: how many ended which way, of `total`."""

    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    """Cancelled or skipped: ended without running to an outcome."""
    total: int = 0
    unknown: int = 0
    """Steps known to have ended, but not how (a run whose steps are not loaded yet)."""


@dataclass
class RunView:
    """One run with its steps; `levels` groups step ids by dependency depth for the DAG layout."""

    run: Run
    steps: dict[str, StepView] = field(default_factory=dict)
    levels: list[list[str]] = field(default_factory=list)
    queued_reason: str | None = None
    """Why a queued run waits, when the engine said (`key busy`: its concurrency key is taken)."""
    detail_loaded: bool = False
    """True once the DAG is known (from `workflow:queued` or `add_run_detail`). Runs first seen
    in a snapshot have empty `steps` and `levels` until the app calls `add_run_detail`."""
    early_steps: dict[str, StepView] = field(default_factory=dict)
    """Steps folded before the DAG was known; merged into `steps` by `add_run_detail`, so an
    event that arrives while `get_run` is in flight is not lost."""
    watched: bool = False
    """Whether the DAG panel shows this run (it sets and clears the flag): only then does the
    fold record `changed_steps`."""
    changed_steps: set[str] = field(default_factory=set)
    """Ids of steps whose state changed since the DAG panel last looked (kept only while
    `watched`). The panel takes and clears it, so its per-level counts cost what changed, not
    the size of the run. A new `steps` dict (a loaded DAG) means "look at everything again".
    A map step whose number of children changed is recorded here too."""
    children: dict[str, StepView] = field(default_factory=dict)
    """The children of the run's map steps by id (`review[3]`), created as their first event
    (or the loaded detail) names them: an event costs one dict lookup, whatever the number of
    children. A child not here has not started."""

    def progress(self) -> Progress:
        """Succeeded / failed / cancelled of total, from the run's own counters (the engine
        keeps them per step, `Run.steps_succeeded` ...; the fold copies them from every
        `workflow:progress` and final event). Counters that do not add up to `steps_done`
        (an older engine without them) say only how many steps ended (`unknown`), except for
        a run that succeeded, whose steps all did."""
        run = self.run
        total = run.steps_total or len(self.steps)
        succeeded = run.steps_succeeded
        failed = run.steps_failed
        stopped = run.steps_cancelled + run.steps_skipped
        if succeeded + failed + stopped == run.steps_done:
            return Progress(succeeded=succeeded, failed=failed, cancelled=stopped, total=total)
        if run.state is RunState.SUCCEEDED:
            return Progress(succeeded=run.steps_done, total=total)
        return Progress(total=total, unknown=run.steps_done)

    def ordered_steps(self) -> list[StepView]:
        """Steps level by level (the DAG's reading order)."""
        steps = self.steps
        return [steps[sid] for level in self.levels for sid in level if sid in steps]


def compute_levels(dag: Iterable[tuple[str, Sequence[str]] | Sequence[Any]]) -> list[list[str]]:
    """Step ids grouped by depth (0 = no dependencies, else 1 + the deepest dependency).

    Iterative (Kahn's algorithm), so a 1,000-step chain cannot hit the recursion limit, in any
    order (`voltui.engine.models.dag_levels` recurses and fails on a long chain listed from its
    end). Within a level, steps keep their workflow order.
    Tolerant of input the engine would have rejected: unknown and self dependencies are ignored,
    duplicate ids keep their first entry, and steps on a cycle go on one extra last level.
    """
    order: list[str] = []
    raw: dict[str, Sequence[str]] = {}
    for sid, deps in dag:
        if sid not in raw:
            order.append(sid)
            raw[sid] = deps or ()
    deps_of: dict[str, set[str]] = {}
    remaining: dict[str, int] = {}
    children: dict[str, list[str]] = {}
    for sid in order:
        ds = {d for d in raw[sid] if d in raw and d != sid}
        deps_of[sid] = ds
        remaining[sid] = len(ds)
        for d in ds:
            children.setdefault(d, []).append(sid)
    depth: dict[str, int] = {}
    ready = [sid for sid in order if not remaining[sid]]
    i = 0
    while i < len(ready):
        sid = ready[i]
        i += 1
        ds = deps_of[sid]
        depth[sid] = 1 + max(depth[d] for d in ds) if ds else 0
        for child in children.get(sid, ()):
            remaining[child] -= 1
            if not remaining[child]:
                ready.append(child)
    if len(depth) < len(order):  # a cycle: show its steps rather than lose them
        last = max(depth.values(), default=-1) + 1
        for sid in order:
            depth.setdefault(sid, last)
    levels: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for sid in order:
        levels[depth[sid]].append(sid)
    return levels


def compile_filter(text: str | None) -> Callable[[str], bool] | None:
    """The `/` filter: a case-insensitive regex, `!` in front inverts it.

    A pattern that is not a valid regex is matched literally, so typing `(` mid-filter never
    errors. None or an empty pattern means no filter.
    """
    if not text:
        return None
    invert = text.startswith("!")
    body = text[1:] if invert else text
    if not body:
        return None
    try:
        rx = re.compile(body, re.IGNORECASE)
    except re.error:
        rx = re.compile(re.escape(body), re.IGNORECASE)
    search = rx.search
    if invert:
        return lambda s: search(s) is None
    return lambda s: search(s) is not None


def event_line(event: Event) -> str:
    """The text the `/` filter searches: type, source, run id and the cleaned summary."""
    return f"{event.type} {event.source} {event.correlation_id or ''} {summarize(event)}"


# --------------------------------------------------------------------------- the state


class DashboardState:
    """Snapshot + fold(events): everything the dashboard renders.

    Build it with `from_snapshot`, feed every later event to `apply` (events with a seq at or
    below `seq` are ignored, so overlapping batches are harmless), and call `add_run_detail`
    with `get_run()` for a run whose DAG is not known yet (`RunView.detail_loaded` is False).
    Objects handed in (snapshot models, run details) are owned and updated in place afterwards.
    """

    MAX_EVENTS = 2000
    MAX_RUNS = 200

    def __init__(
        self,
        *,
        seq: int = 0,
        started_at: float | None = None,
        health: HealthStatus = HealthStatus.UNKNOWN,
        clock: Callable[[], float] = time.monotonic,
        max_events: int | None = None,
        max_runs: int | None = None,
    ) -> None:
        """An empty state (e.g. for replaying recorded events); `from_snapshot` is the usual way.

        `clock` is a local monotonic clock used only to let `events_per_second` decay while no
        events arrive; it is never compared with event timestamps, so a remote engine's clock
        skew does not matter.
        """
        self.seq = seq
        self.started_at = time.time() if started_at is None else started_at
        self.health = health
        self.health_reasons: list[str] = []
        self.components: dict[str, ComponentStatus] = {}
        self.metrics: SystemMetrics | None = None
        self.agents: dict[str, AgentLoad] = {}
        self.runs: dict[str, RunView] = {}
        self.cache: dict[str, CacheStats] = {}
        self.hit_rate_history: dict[str, deque[float]] = {}
        self.max_events = max_events or self.MAX_EVENTS
        self.max_runs = max_runs or self.MAX_RUNS
        self.events: deque[Event] = deque(maxlen=self.max_events)
        self.touched_runs: set[str] = set()
        """Run ids changed by the last `apply`, so the DAG panel can skip an untouched run."""
        self.usage = Usage()
        """LLM tokens and cost of every call the engine made since it started (the header)."""
        self.usage_by_agent: dict[str, Usage] = {}
        """The same per agent (the agents table's `llm` column)."""
        self.approvals: dict[tuple[str, str], PendingApproval] = {}
        """Approval steps waiting for a decision, oldest first (the banner and `a`/`x`)."""
        self.fold_errors = 0
        """Events whose data could not be folded (malformed or from a newer engine)."""
        self.stale_since: float | None = None
        """Local monotonic time at which the engine became unreachable, or None while it is
        reachable. A stale state is never folded back to life: the app replaces it with one
        built from a fresh snapshot when the link returns (DESIGN.md rule 9)."""
        self.frozen_at: float | None = None
        """The wall-clock "now" that durations and uptime stop at while stale: the last moment
        the engine was known to be there."""
        self._clock = clock
        # Rate counter: [bucket, count] pairs, a bucket being 1/_BUCKETS_PER_SECOND s of event
        # time. Engine time "now" = _anchor_ts + local time elapsed since _anchor_clock.
        self._buckets: deque[list[int]] = deque(maxlen=_MAX_BUCKETS)
        self._anchor_ts = 0.0
        self._anchor_clock = clock()
        self._first_ts: float | None = None
        self._handlers: dict[str, Callable[[Event], frozenset[str]]] = {
            "step:output": self._on_step_output,
            "step:rate_limited": self._on_step_rate_limited,
            "step:approval_requested": self._on_approval_requested,
            "step:approval_decided": self._on_approval_decided,
            "step:map_progress": self._on_map_progress,
            "step:usage": self._on_step_usage,
            "agent:load": self._on_agent_load,
            "workflow:queued": self._on_run_queued,
            "workflow:started": self._on_run_started,
            "workflow:progress": self._on_run_progress,
            "agent:registered": self._on_agent_registered,
            "agent:unregistered": self._on_agent_unregistered,
            "health:changed": self._on_health_changed,
            "health:system": self._on_health_system,
            "metrics:system": self._on_metrics,
            "cache:stats": self._on_cache_stats,
        }
        self._handlers["health:checked"] = self._on_health_checked
        for state in StepState:
            if state is not StepState.PENDING:
                self._handlers[f"step:{state.value}"] = self._on_step_timed
        self._handlers["step:started"] = self._on_step_timed  # the engine's "now running"
        for run_state in RunState:
            if run_state.finished:
                self._handlers[f"workflow:{run_state.value}"] = self._on_run_counted
        self._handlers["workflow:progress"] = self._on_run_counted
        for live in _LIVE_RUN_STATES:
            self._handlers[f"workflow:{live.value}"] = self._on_run_live_state

    @classmethod
    def from_snapshot(
        cls, snapshot: EngineSnapshot, *, clock: Callable[[], float] = time.monotonic
    ) -> DashboardState:
        """The state as of `snapshot.seq`; subscribe with `since_seq=snapshot.seq` and `apply`."""
        st = cls(
            seq=snapshot.seq, started_at=snapshot.started_at, health=snapshot.health, clock=clock
        )
        st.components = {c.id: c for c in snapshot.components}
        st.metrics = snapshot.metrics
        st.agents = {a.id: a for a in snapshot.agents}
        for run in sorted(snapshot.runs, key=lambda r: r.created_at):
            if run.error:
                run.error = _text(run.error)
            st.runs[run.id] = RunView(run=run)
        st._set_cache(snapshot.cache)
        st.usage = snapshot.usage.total.model_copy()
        st.usage_by_agent = {a: u.model_copy() for a, u in snapshot.usage.by_agent.items()}
        for approval in snapshot.approvals:
            st.approvals[(approval.run_id, approval.step_id)] = PendingApproval(
                approval.run_id,
                approval.step_id,
                clean(approval.prompt, max_len=ERROR_CHARS),
                approval.timeout_at,
            )
        # recent_events is read after `seq` was taken, so it may hold events the subscription
        # will deliver again; keep only those the snapshot covers, or they would show twice.
        recent = sorted((e for e in snapshot.recent_events if e.seq <= snapshot.seq), key=_seq)
        st.events.extend(recent)
        st._count(recent)
        st._anchor_ts = snapshot.ts
        st._anchor_clock = clock()
        st._first_ts = snapshot.started_at
        st._evict_runs()
        return st

    # ------------------------------------------------------------------ folding

    def apply(self, events: Iterable[Event]) -> set[str]:
        """Fold events in seq order; returns the names (from PANELS) of the panels that changed.

        Events at or below `seq` are skipped (duplicates after a resubscribe, or ones the
        snapshot already covers). A malformed event is counted in `fold_errors` and skipped
        rather than stopping the fold.
        """
        changed: set[str] = set()
        touched = self.touched_runs = set()
        seq = self.seq
        handlers = self._handlers
        append = self.events.append
        buckets = self._buckets
        cur = buckets[-1] if buckets else _NO_BUCKET
        newest = self._anchor_ts
        folded = 0
        for ev in events:
            s = ev.seq
            if s <= seq:
                continue
            seq = s
            folded += 1
            append(ev)
            ts = ev.ts
            if ts > newest:
                newest = ts
            b = int(ts * _BUCKETS_PER_SECOND)
            if b == cur[0]:
                cur[1] += 1
            else:
                cur = [b, 1]
                buckets.append(cur)
            handler = handlers.get(ev.type)
            if handler is None:
                continue
            try:
                panels = handler(ev)
            except Exception:
                self.fold_errors += 1
                log.debug("could not fold event %s (%s)", ev.seq, ev.type, exc_info=True)
                continue
            if panels:
                changed |= panels
                if ev.correlation_id is not None:
                    touched.add(ev.correlation_id)
        if not folded:
            return changed
        self.seq = seq
        changed.add("events")
        now = self._clock()
        self._anchor_ts = max(self._anchor_ts + max(0.0, now - self._anchor_clock), newest)
        self._anchor_clock = now
        if self._first_ts is None:
            self._first_ts = min(e[0] for e in buckets) / _BUCKETS_PER_SECOND
        if len(self.runs) > self.max_runs:
            self._evict_runs()
        return changed

    def _count(self, events: Iterable[Event]) -> None:
        """Add events to the rate counter without folding them (snapshot seeding)."""
        buckets = self._buckets
        cur = buckets[-1] if buckets else _NO_BUCKET
        for ev in events:
            b = int(ev.ts * _BUCKETS_PER_SECOND)
            if b == cur[0]:
                cur[1] += 1
            else:
                cur = [b, 1]
                buckets.append(cur)

    @property
    def events_per_second(self) -> float:
        """Events per second over a sliding 5 s window of event timestamps (1/4 s buckets).

        The window ends at engine time "now", estimated as the newest event ts (or snapshot ts)
        plus the local time since it was folded, so the rate decays to zero when events stop.
        Shortly after the engine started, the window is the time since the start (at least 1 s).
        """
        if self._first_ts is None or not self._buckets:
            return 0.0
        end = self._anchor_ts + max(0.0, self._clock() - self._anchor_clock)
        lo = (end - RATE_WINDOW) * _BUCKETS_PER_SECOND
        count = sum(n for b, n in self._buckets if b >= lo)
        span = max(1.0, min(RATE_WINDOW, end - self._first_ts))
        return count / span

    # ------------------------------------------------------------------ runs

    def _on_run_queued(self, ev: Event) -> frozenset[str]:
        cid = ev.correlation_id
        if not cid:
            return _NONE
        d = ev.data
        dag = d.get("dag") or []
        rv = self.runs.get(cid)
        if rv is None:
            workflow_id = d.get("workflow_id") or "?"
            run = Run(
                id=cid,
                workflow_id=workflow_id,
                workflow_name=d.get("name") or workflow_id,
                inputs=d.get("inputs") or {},
                created_at=ev.ts,
                steps_total=d.get("steps_total") or len(dag),
                replay_of=d.get("replay_of"),
                replay_mode=d.get("replay_mode"),
            )
            trigger = d.get("trigger")
            if trigger in ("manual", "schedule", "trigger", "replay"):
                run.trigger = trigger
                run.trigger_ref = _text(d.get("trigger_ref")) or None
            rv = self.runs[cid] = RunView(run=run)
        elif d.get("resumed"):
            # An interrupted run continued by an engine: live again, its end no longer known.
            rv.run.state = RunState.QUEUED
            rv.run.finished_at = None
            rv.run.error = None
        reason = d.get("reason")
        rv.queued_reason = _text(reason) if reason and rv.run.state is RunState.QUEUED else None
        if not rv.detail_loaded:
            old = rv.early_steps
            rv.early_steps = {}
            rv.steps = {}
            for sid, deps in dag:
                sv = old.get(sid) or StepView(id=sid, depends_on=list(deps))
                sv.depends_on = list(deps)
                rv.steps[sid] = sv
            rv.levels = compute_levels(dag)
            rv.detail_loaded = True
        return _RUN_CHANGE

    def _on_run_started(self, ev: Event) -> frozenset[str]:
        rv = self.runs.get(ev.correlation_id or "")
        if rv is None:
            return _NONE
        run = rv.run
        if not run.state.finished:
            run.state = RunState.RUNNING
        run.started_at = ev.ts
        rv.queued_reason = None
        return _RUN_CHANGE

    def _on_run_progress(self, ev: Event) -> frozenset[str]:
        rv = self.runs.get(ev.correlation_id or "")
        if rv is None:
            return _NONE
        d = ev.data
        run = rv.run
        done = d.get("done")
        total = d.get("total")
        if done is not None:
            run.steps_done = done
        if total is not None:
            run.steps_total = total
        return _PROGRESS_CHANGE

    def _on_run_finished(self, ev: Event) -> frozenset[str]:
        rv = self.runs.get(ev.correlation_id or "")
        if rv is None:
            return _NONE
        d = ev.data
        state = _RUN_STATES.get(d.get("state") or ev.type[9:])  # 9 == len("workflow:")
        if state is None or not state.finished:
            return _NONE
        run = rv.run
        run.state = state
        run.finished_at = ev.ts
        run.error = _text(d.get("error") or d.get("reason"))
        for key in [k for k in self.approvals if k[0] == run.id]:  # a handful at most
            del self.approvals[key]
        if rv.steps:
            run.steps_done = sum(1 for sv in rv.steps.values() if sv.state.finished)
        return _RUN_CHANGE

    # ------------------------------------------------------------------ steps

    def _step_view(self, rv: RunView, sid: Any) -> StepView | None:
        """The step's view; for a run whose DAG is not loaded yet, one kept aside until it is.
        A map's child (`review[3]`) has its own view in `RunView.children`."""
        if rv.detail_loaded:
            sv = rv.steps.get(sid)
            if sv is None:
                sv = rv.children.get(sid)
                if sv is None:
                    parsed = map_child(sid)
                    if parsed is not None and parsed[0] in rv.steps:
                        sv = rv.children[sid] = StepView(id=sid, depends_on=[])
            return sv
        sv = rv.early_steps.get(sid)
        if sv is None and isinstance(sid, str):
            sv = rv.early_steps[sid] = StepView(id=sid, depends_on=[])
        return sv

    def _event_step(self, ev: Event) -> StepView | None:
        """The view of the step a `step:*` event is about, if its run is known."""
        rv = self.runs.get(ev.correlation_id)  # type: ignore[arg-type]
        return None if rv is None else self._step_view(rv, ev.data.get("step"))

    def _on_approval_requested(self, ev: Event) -> frozenset[str]:
        run_id, step_id = ev.correlation_id, ev.data.get("step")
        if not isinstance(run_id, str) or not isinstance(step_id, str):
            return _NONE
        prompt = _text(ev.data.get("prompt")) or "(no prompt)"
        timeout_at = ev.data.get("timeout_at")
        self.approvals[(run_id, step_id)] = PendingApproval(
            run_id, step_id, prompt, timeout_at if isinstance(timeout_at, int | float) else None
        )
        sv = self._event_step(ev)
        if sv is not None:
            sv.state = StepState.WAITING
            sv.last_line = f"awaiting approval: {prompt}"
            # The DAG times the wait as the engine does: from when the question was first
            # asked (before a restart, for a resumed run), not from this event.
            asked = ev.data.get("requested_at")
            sv.started_at = asked if isinstance(asked, int | float) else ev.ts
            sv.finished_at = None
        return _APPROVAL_CHANGE

    def _on_approval_decided(self, ev: Event) -> frozenset[str]:
        key = (ev.correlation_id, ev.data.get("step"))
        self.approvals.pop(key, None)  # type: ignore[arg-type]
        sv = self._event_step(ev)
        if sv is not None:
            by = _text(ev.data.get("by"), 60) or "?"
            sv.last_line = f"{_text(ev.data.get('decision'), 20) or 'decided'} by {by}"
        return _APPROVAL_CHANGE

    def _on_step_usage(self, ev: Event) -> frozenset[str]:
        """One LLM call: add it to the engine's totals and keep the run's own sum."""
        d = ev.data
        call = Usage(
            prompt_tokens=int(d.get("prompt_tokens") or 0),
            completion_tokens=int(d.get("completion_tokens") or 0),
            calls=1,
            model=d.get("model") if isinstance(d.get("model"), str) else None,
            cost_usd=float(d.get("cost_usd") or 0.0),
            priced=bool(d.get("priced", True)),
        )
        self.usage = self.usage.plus(call)
        rv = self.runs.get(ev.correlation_id or "")
        if rv is not None and isinstance(d.get("run_usage"), dict):
            rv.run.usage = Usage.model_validate(d["run_usage"])
        agent = d.get("agent")
        if not isinstance(agent, str):
            return _HEADER
        before = self.usage_by_agent.get(agent)
        self.usage_by_agent[agent] = call if before is None else before.plus(call)
        return _HEADER_AND_AGENTS

    def _on_map_progress(self, ev: Event) -> frozenset[str]:
        """A map step's note counts its children: `▶ 3 ✓ 41 ✗ 1 / 50`."""
        sv = self._event_step(ev)
        if sv is None:
            return _NONE
        d = ev.data
        total = d.get("total")
        sv.last_line = map_note(
            "?" if total is None else total,
            d.get("running", 0),
            d.get("succeeded", 0),
            d.get("failed", 0),
            d.get("cancelled", 0),
        )
        if total.__class__ is int:
            self._set_map_total(ev, sv, total)  # type: ignore[arg-type]
        return _STEP_CHANGE

    def _set_map_total(self, ev: Event, sv: StepView, total: int) -> None:
        """A map step's number of children, from its `step:started` or `step:map_progress`."""
        if sv.map_total == total or total < 0:
            return
        sv.map_total = total
        rv = self.runs.get(ev.correlation_id)  # type: ignore[arg-type]
        if rv is not None and rv.watched:
            rv.changed_steps.add(sv.id)  # an open group's rows change

    def _on_step(self, ev: Event) -> frozenset[str]:
        rv = self.runs.get(ev.correlation_id)  # type: ignore[arg-type]
        if rv is None:
            return _NONE
        d = ev.data
        sv = self._step_view(rv, d.get("step"))
        if sv is None:
            return _NONE
        state = _STEP_STATES.get(d.get("state") or ev.type[5:])  # 5 == len("step:")
        if state is None:
            return _NONE
        if rv.watched and state is not sv.state and sv.id in rv.steps:
            rv.changed_steps.add(sv.id)
        sv.state = state
        attempt = d.get("attempt")
        if attempt is not None:
            sv.attempt = attempt
        max_attempts = d.get("max_attempts")
        if max_attempts is not None:
            sv.max_attempts = max_attempts
        if "agent" in d:
            sv.agent = d["agent"]
        if state is StepState.RUNNING:
            sv.started_at = ev.ts
            sv.finished_at = None
            sv.error = None
            sv.reused_from = None
        elif state is StepState.WAITING:
            sv.error = None
        elif state is StepState.RETRYING:
            sv.error = _text(d.get("error"))
        else:  # a final state
            if self.approvals:
                self.approvals.pop((ev.correlation_id, sv.id), None)  # type: ignore[arg-type]
            sv.finished_at = ev.ts
            if state is StepState.CACHED and sv.started_at is None:
                sv.started_at = ev.ts
            if state.ok:
                sv.error = None
                reused = d.get("reused_from")
                # (a run resumed in place after a restart keeps its own results: not a reuse)
                own = reused == ev.correlation_id
                sv.reused_from = _text(reused, 64) if reused and not own else None
            else:
                sv.error = _text(d.get("error") or d.get("reason")) or sv.error
        return _STEP_CHANGE

    def _on_step_output(self, ev: Event) -> frozenset[str]:
        sv = self._event_step(ev)
        if sv is None:
            return _NONE
        d = ev.data
        line = d.get("line")
        if not isinstance(line, str):
            line = "" if line is None else str(line)
        sv.last_line = clean(line[: LINE_CHARS * 2], max_len=LINE_CHARS)
        return _STEP_CHANGE

    def _on_step_timed(self, ev: Event) -> frozenset[str]:
        """`_on_step`, plus the step's figures by the one definition: the engine's own
        duration of a finished attempt (its final event's `duration`: attempt start to end)
        and the queue wait (`step:waiting` to `step:started`)."""
        changed = self._on_step(ev)
        if changed is _NONE:
            return changed
        rv = self.runs[ev.correlation_id]  # type: ignore[index]
        if not rv.detail_loaded:
            return changed
        d = ev.data
        sv = self._step_view(rv, d["step"])
        if sv is None:
            return changed
        state = sv.state
        if state is StepState.RUNNING:
            sv.took = None
            if d.get("kind") == "map" and d.get("children").__class__ is int:
                self._set_map_total(ev, sv, d["children"])
            wait = d.get("queue_wait")
            if wait.__class__ is float or wait.__class__ is int:
                sv.queue_wait = max(0.0, float(wait))  # type: ignore[arg-type]
            else:
                waited = sv.waiting_at
                sv.queue_wait = None if waited is None else max(0.0, ev.ts - waited)
        elif state is StepState.WAITING:
            sv.waiting_at = ev.ts
            sv.queue_wait = None
        elif state in _FINAL_STEP_STATES:
            took = d.get("duration")
            sv.took = (
                float(took)  # type: ignore[arg-type]
                if (took.__class__ is float or took.__class__ is int) and took >= 0  # type: ignore[operator]
                else None
            )
        return changed

    def _on_run_counted(self, ev: Event) -> frozenset[str]:
        """`workflow:progress` and the final `workflow:*` events, plus the run's step
        counters they carry (succeeded, failed, skipped, cancelled): progress by outcome."""
        handler = self._on_run_progress if ev.type == "workflow:progress" else self._on_run_finished
        changed = handler(ev)
        rv = self.runs.get(ev.correlation_id or "")
        if rv is None or not changed:
            return changed
        d = ev.data
        counts = [d.get(k) for k in ("succeeded", "failed", "skipped", "cancelled")]
        if all(isinstance(n, int) for n in counts):
            run = rv.run
            (run.steps_succeeded, run.steps_failed, run.steps_skipped, run.steps_cancelled) = counts  # type: ignore[assignment]
            run.steps_done = sum(counts)  # type: ignore[arg-type]
        return changed

    def _on_run_live_state(self, ev: Event) -> frozenset[str]:
        """`cancelling` (a cancel waits for work that cannot be interrupted), `waiting`
        (nothing at work but an approval) or `running` again. An ended run stays ended, and
        a cancelling one is not made to look as if it went on."""
        rv = self.runs.get(ev.correlation_id or "")
        state = RunState(ev.type[9:])  # 9 == len("workflow:")
        if rv is None or rv.run.state.finished:
            return _NONE
        if rv.run.state is RunState.CANCELLING and state is not RunState.CANCELLING:
            return _NONE
        rv.run.state = state
        return _RUN_CHANGE

    def _on_step_rate_limited(self, ev: Event) -> frozenset[str]:
        """The step's note becomes `rate limited until 12:04:31` (local time), which the DAG
        shows next to the step until its next output line."""
        sv = self._event_step(ev)
        if sv is None:
            return _NONE
        until = ev.data.get("until")
        if isinstance(until, int | float):
            note = f"rate limited until {time.strftime('%H:%M:%S', time.localtime(until))}"
        else:
            note = f"rate limited: {_text(ev.data.get('reason')) or 'waiting for a slot'}"
        sv.last_line = note
        return _STEP_CHANGE

    # ------------------------------------------------------------------ agents

    def _on_agent_load(self, ev: Event) -> frozenset[str]:
        d = ev.data
        aid = d["id"]
        agent = self.agents.get(aid)
        if agent is None:
            self.agents[aid] = AgentLoad.model_validate(d)
        elif d.keys() <= _AGENT_FIELDS:
            # Same fields, same JSON types: update in place, no validation on the hot path.
            agent.__dict__.update(d)
        else:  # a newer engine sent extra fields: keep only the known ones
            agent.__dict__.update({k: v for k, v in d.items() if k in _AGENT_FIELDS})
        return _AGENTS_CHANGE

    def _on_agent_registered(self, ev: Event) -> frozenset[str]:
        d = ev.data
        aid = d["agent"]
        if aid not in self.agents:
            self.agents[aid] = AgentLoad(
                id=aid,
                kind=d.get("kind") or "?",
                capabilities=list(d.get("capabilities") or []),
                capacity=d.get("capacity") or 1,
            )
        return _AGENTS_CHANGE

    def _on_agent_unregistered(self, ev: Event) -> frozenset[str]:
        return _AGENTS_CHANGE if self.agents.pop(ev.data["agent"], None) is not None else _NONE

    # ------------------------------------------------------------------ health, metrics, cache

    def _on_health_changed(self, ev: Event) -> frozenset[str]:
        d = ev.data
        cid = d["component"]
        status = _HEALTH_STATES.get(d.get("status"), HealthStatus.UNKNOWN)  # type: ignore[arg-type]
        old = self.components.get(cid)
        self.components[cid] = ComponentStatus(
            id=cid,
            name=_text(d.get("name"), 200) or (old.name if old else cid),
            kind=old.kind if old else "?",
            status=status,
            last_check=ev.ts,
            latency=d.get("latency"),
            message=_text(d.get("message")) or "",
        )
        return _COMPONENT_CHANGE

    def _on_health_checked(self, ev: Event) -> frozenset[str]:
        """Every check as it happens (`health:checked`): its time, latency and message, so
        the panel is live, not frozen at the last change of status."""
        d = ev.data
        cid = d["component"]
        old = self.components.get(cid)
        status = _HEALTH_STATES.get(d.get("status"), HealthStatus.UNKNOWN)  # type: ignore[arg-type]
        checked = d.get("checked_at")
        self.components[cid] = ComponentStatus(
            id=cid,
            name=_text(d.get("name"), 200) or (old.name if old else cid),
            kind=old.kind if old else d.get("kind") or "?",
            status=status,
            last_check=checked if isinstance(checked, int | float) else ev.ts,
            latency=d.get("latency"),
            message=_text(d.get("message")) or "",
        )
        return _COMPONENT_CHANGE

    def _on_health_system(self, ev: Event) -> frozenset[str]:
        d = ev.data
        self.health = _HEALTH_STATES.get(d.get("status"), HealthStatus.UNKNOWN)  # type: ignore[arg-type]
        self.health_reasons = [_text(r) or "" for r in d.get("reasons") or []]
        return _SYSTEM_CHANGE

    def _on_metrics(self, ev: Event) -> frozenset[str]:
        self.metrics = SystemMetrics.model_validate(ev.data)
        return _SYSTEM_CHANGE

    def _on_cache_stats(self, ev: Event) -> frozenset[str]:
        self._set_cache([CacheStats.model_validate(n) for n in ev.data["namespaces"]])
        return _CACHE_CHANGE

    def _set_cache(self, stats: Iterable[CacheStats]) -> None:
        """Replace the cache figures and add one hit-rate sample per namespace."""
        self.cache = {s.namespace: s for s in stats}
        history = self.hit_rate_history
        for ns in [ns for ns in history if ns not in self.cache]:
            del history[ns]  # a namespace that went away must not keep its history forever
        for ns, s in self.cache.items():
            samples = history.get(ns)
            if samples is None:
                samples = history[ns] = deque(maxlen=HISTORY_SAMPLES)
            samples.append(s.hit_rate)

    # ------------------------------------------------------------------ link and resync

    def mark_stale(self, monotonic_now: float, wall_now: float) -> None:
        """The engine is unreachable from now on: stop the clocks at `wall_now`. Marking a state
        already stale keeps its first moment."""
        if self.stale_since is None:
            self.stale_since = monotonic_now
            self.frozen_at = wall_now

    @property
    def stale(self) -> bool:
        return self.stale_since is not None

    def add_run(self, run: Run) -> RunView:
        """Show a run the app just started or replayed, before its first event arrives.

        `start_workflow` returns the run at once, while its `workflow:queued` event reaches the
        fold a tick or two later: adding it here puts its row on screen now. The event then
        fills in the DAG as for any other run. A run the fold already knows is left as it is.
        """
        rv = self.runs.get(run.id)
        if rv is None:
            run = run.model_copy()
            run.error = _text(run.error)
            rv = self.runs[run.id] = RunView(run=run)
            if len(self.runs) > self.max_runs:
                self._evict_runs()
        return rv

    # ------------------------------------------------------------------ run details

    def add_run_detail(self, detail: RunDetail) -> None:
        """Merge `get_run()` into the run's view: its DAG, and the figures the fold lacks.

        The fold is gap-free from `seq` on, so a step it has seen change keeps its first-hand
        figures (the detail may be older or newer than the last folded event; either way the
        fold converges). Steps the fold has not seen, and the DAG itself, come from the detail.
        A run unknown to the state (older than the snapshot's recent runs) is added.
        """
        run = detail.run.model_copy()
        run.error = _text(run.error)
        rv = self.runs.get(run.id)
        if rv is None:
            rv = self.runs[run.id] = RunView(run=run)
        else:
            rv.run = _merge_run(rv.run, run)
        by_id: dict[str, StepRun] = {s.step_id: s for s in detail.steps}
        old = rv.steps if rv.detail_loaded else rv.early_steps
        rv.early_steps = {}
        steps: dict[str, StepView] = {}
        for step in detail.workflow.steps:
            sv = old.get(step.id)
            if sv is not None and sv.seen:
                sv.depends_on = list(step.depends_on)
            else:
                fresh = _step_from_run(step.id, step.depends_on, by_id.get(step.id))
                if sv is not None:
                    fresh.last_line = sv.last_line
                sv = fresh
            steps[step.id] = sv
        rv.steps = steps
        rv.levels = compute_levels((s.id, s.depends_on) for s in detail.workflow.steps)
        rv.detail_loaded = True
        self._add_children(rv, detail, old, by_id)
        if rv.run.state.finished:
            rv.run.steps_done = sum(1 for sv in steps.values() if sv.state.finished)
        if len(self.runs) > self.max_runs:
            self._evict_runs()

    def _add_children(
        self,
        rv: RunView,
        detail: RunDetail,
        old: dict[str, StepView],
        by_id: dict[str, StepRun],
    ) -> None:
        """The children of the run's map steps, from the detail (`RunDetail.children`, the
        store's rows) and what the fold saw first-hand; each map step's number of children
        and its counting note. Once per loaded detail: O(children), never per event."""
        steps = rv.steps
        maps = {s.id for s in detail.workflow.steps if s.map is not None}
        before = rv.children
        kept: dict[str, StepView] = {}
        for sid, sv in (*old.items(), *before.items()):
            parsed = map_child(sid)
            if parsed is not None and parsed[0] in steps and sv.seen:
                kept[sid] = sv
        children: dict[str, StepView] = {}
        for sr in getattr(detail, "children", None) or ():
            parsed = map_child(sr.step_id)
            if parsed is None or parsed[0] not in steps:
                continue
            maps.add(parsed[0])
            children[sr.step_id] = kept.get(sr.step_id) or _step_from_run(sr.step_id, (), sr)
        for sid, sv in kept.items():
            children.setdefault(sid, sv)
        rv.children = children
        if not maps:
            return
        tally: dict[str, dict[StepState, int]] = {m: {} for m in maps if m in steps}
        highest: dict[str, int] = {}
        for sid, sv in children.items():
            parent, index = map_child(sid)  # type: ignore[misc]
            counts = tally.get(parent)
            if counts is None:
                continue
            counts[sv.state] = counts.get(sv.state, 0) + 1
            highest[parent] = max(highest.get(parent, -1), index)
        for map_id, counts in tally.items():
            sv = steps[map_id]
            sr = by_id.get(map_id)
            output = None if sr is None else sr.output
            total = len(output) if isinstance(output, list) else highest.get(map_id, -1) + 1
            if not total and sv.state in (StepState.PENDING, StepState.SKIPPED):
                continue  # not started (or never will): not a group yet
            if sv.map_total is None or sv.map_total < total:
                sv.map_total = total
            if not (sv.seen and sv.last_line):  # the fold's own counts are first-hand
                sv.last_line = map_note(
                    sv.map_total,
                    counts.get(StepState.RUNNING, 0) + counts.get(StepState.RETRYING, 0),
                    counts.get(StepState.SUCCEEDED, 0) + counts.get(StepState.CACHED, 0),
                    counts.get(StepState.FAILED, 0),
                    counts.get(StepState.CANCELLED, 0),
                )

    def _evict_runs(self) -> None:
        """Keep at most `max_runs`: drop the oldest finished runs, then (rarely) the oldest."""
        excess = len(self.runs) - self.max_runs
        if excess <= 0:
            return
        finished = sorted(
            (rv for rv in self.runs.values() if rv.run.state.finished),
            key=lambda rv: rv.run.created_at,
        )
        for rv in finished[:excess]:
            del self.runs[rv.run.id]
        excess = len(self.runs) - self.max_runs
        if excess > 0:
            oldest = sorted(self.runs.values(), key=lambda rv: rv.run.created_at)
            for rv in oldest[:excess]:
                del self.runs[rv.run.id]

    # ------------------------------------------------------------------ queries

    def runs_newest_first(self) -> list[RunView]:
        return sorted(self.runs.values(), key=lambda rv: rv.run.created_at, reverse=True)

    def active_runs(self) -> int:
        return sum(1 for rv in self.runs.values() if not rv.run.state.finished)

    def run_by_prefix(self, prefix: str) -> RunView | None:
        """The run whose id is `prefix` or uniquely starts with it; None if none or ambiguous."""
        exact = self.runs.get(prefix)
        if exact is not None:
            return exact
        found = [rv for rid, rv in self.runs.items() if rid.startswith(prefix)]
        return found[0] if len(found) == 1 else None

    def filtered_events(
        self,
        pattern: str | None = None,
        text: str | None = None,
        correlation_id: str | None = None,
    ) -> list[Event]:
        """Buffered events, oldest first, that match every filter given.

        `pattern` is an fnmatch pattern on the type (`step:*`), as in `subscribe`; `text` is the
        `/` filter (see `compile_filter`) applied to `event_line(event)`; `correlation_id` keeps
        one run's events.
        """
        match = compile_filter(text)
        out: list[Event] = []
        for ev in self.events:
            if correlation_id is not None and ev.correlation_id != correlation_id:
                continue
            if pattern and pattern != "*" and not fnmatch.fnmatchcase(ev.type, pattern):
                continue
            if match is not None and not match(event_line(ev)):
                continue
            out.append(ev)
        return out


_NO_BUCKET: list[Any] = [None, 0]


def _seq(event: Event) -> int:
    return event.seq


def _run_rank(state: RunState) -> int:
    return _RUN_RANK.get(state, 2)


def _merge_run(view: Run, detail: Run) -> Run:
    """The detail's run, except where the fold has already seen it further along."""
    if _run_rank(view.state) > _run_rank(detail.state):
        return detail.model_copy(
            update={
                "state": view.state,
                "started_at": view.started_at or detail.started_at,
                "finished_at": view.finished_at,
                "error": view.error,
                "steps_done": view.steps_done,
            }
        )
    return detail


def _step_from_run(step_id: str, depends_on: Sequence[str], sr: StepRun | None) -> StepView:
    if sr is None:
        return StepView(id=step_id, depends_on=list(depends_on))
    return StepView(
        id=step_id,
        depends_on=list(depends_on),
        state=sr.state,
        attempt=sr.attempt,
        max_attempts=sr.max_attempts,
        agent=sr.agent_id,
        started_at=sr.started_at,
        finished_at=sr.finished_at,
        error=_text(sr.error),
        reused_from=_text(sr.reused_from, 64) if sr.reused_from != sr.run_id else None,
    )
