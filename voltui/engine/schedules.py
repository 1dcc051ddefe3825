"""Scheduler: starts workflow runs on cron expressions and fixed intervals.

Time is whatever `clock()` says and waiting is whatever `sleep()` does, both injected, so tests
drive a schedule across a DST change or a two-hour outage without waiting for either. Cron
expressions are read by `cronsim` in the schedule's time zone (a `*/15` keeps its 15 minutes
across DST; `30 2 * * *` runs once on the night the clocks go back, and at 03:00 on the night they
go forward, as cron does). `every` intervals are aligned to the Unix epoch, so every process and
every restart agree on the instants without storing an anchor.

Durability (shared with other processes through the engine's SQLite file, automation_state.py):
each schedule has a cursor, the latest instant already dealt with. A tick finds the instants
after the cursor that are due, decides per `catchup` which to fire, and moves the cursor with a
compare-and-swap *before* firing, so two engines on one file never fire the same instant twice.
The instants it is about to fire are recorded as pending and removed one by one; if the process
dies in between, the next engine finds them, checks the store for the runs that did start, and
fires the rest: a restart neither double-fires nor silently drops. Whatever a policy drops on
purpose is reported as a `schedule:missed` event.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from voltui.engine.api import ScheduleInfo, StartRequest
from voltui.engine.automation_state import AutomationState, ScheduleState
from voltui.engine.events import EventEmitter
from voltui.engine.models import Priority, Run, ScheduleSpec, Workflow
from voltui.engine.store import default_is_alive

__all__ = [
    "MISFIRE_GRACE",
    "ScheduleEntry",
    "Scheduler",
    "due_instants",
    "local_time",
    "next_after",
    "schedule_entries",
    "schedule_infos",
]

log = logging.getLogger(__name__)

SOURCE = "scheduler"
MISFIRE_GRACE = 60.0
"""Seconds a fire may be late and still count as on time (for `catchup: none`)."""
MAX_CATCHUP = 100
"""Most missed instants one schedule fires after downtime with `catchup: all` (the latest
ones); any older are reported as missed."""
COUNT_LIMIT = 10_000
"""Missed instants counted one by one (about 7 µs each) before the count is reported as a
lower bound, so a long outage of a per-minute schedule costs the loop tens of ms, not seconds."""
IDLE = 30.0
"""Longest sleep between ticks, so edited workflow files and pauses are seen soon enough."""

StartFn = Callable[[StartRequest], Awaitable[Run]]
RunsFn = Callable[[str], Awaitable[list[Run]]]
CancelFn = Callable[[str], Awaitable[Any]]
SleepFn = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class ScheduleEntry:
    """One schedule of one loaded workflow; `key` (`workflow:name`) names it everywhere."""

    key: str
    workflow: Workflow
    spec: ScheduleSpec


def schedule_entries(workflows: list[Workflow]) -> list[ScheduleEntry]:
    return [
        ScheduleEntry(f"{wf.id}:{spec.name(i)}", wf, spec)
        for wf in workflows
        for i, spec in enumerate(wf.schedules)
    ]


# --------------------------------------------------------------------------- instants


def _cron_iter(spec: ScheduleSpec, start: float, *, reverse: bool = False) -> Iterator[float]:
    from cronsim import CronSim  # imported here: only engines with schedules pay for it

    assert spec.cron is not None
    zone = ZoneInfo(spec.timezone)
    for dt in CronSim(spec.cron, datetime.fromtimestamp(start, zone), reverse=reverse):
        yield dt.timestamp()


def next_after(spec: ScheduleSpec, after: float) -> float:
    """The first fire instant strictly after `after`."""
    if spec.every is not None:
        return (math.floor(after / spec.every) + 1) * spec.every
    return next(_cron_iter(spec, after))


def due_instants(
    spec: ScheduleSpec, after: float, upto: float, keep: int
) -> tuple[list[float], int, bool]:
    """Instants in `(after, upto]`: the latest `keep` of them (oldest first), how many earlier
    ones there are, and whether that count stopped at COUNT_LIMIT (then it is a lower bound)."""
    if upto <= after:
        return [], 0, False
    if spec.every is not None:
        step = spec.every
        first = math.floor(after / step) + 1
        last = math.floor(upto / step)
        if last < first:
            return [], 0, False
        total = last - first + 1
        kept = [k * step for k in range(max(first, last - keep + 1), last + 1)]
        return kept, total - len(kept), False
    latest: list[float] = []
    earlier = 0
    # Backwards from `upto` (cronsim's reverse mode is exclusive, so start a second later and
    # drop anything past `upto`): the latest instants are the ones kept.
    for ts in _cron_iter(spec, upto + 1.0, reverse=True):
        if ts > upto:
            continue
        if ts <= after:
            break
        if len(latest) < keep:
            latest.append(ts)
            continue
        earlier += 1
        if earlier >= COUNT_LIMIT:
            return list(reversed(latest)), earlier, True
    return list(reversed(latest)), earlier, False


# --------------------------------------------------------------------------- scheduler


class Scheduler:
    """Fires the schedules of the workflows it is given; see the module docstring."""

    def __init__(
        self,
        state: AutomationState,
        events: EventEmitter,
        *,
        start: StartFn,
        runs: RunsFn,
        cancel: CancelFn,
        clock: Callable[[], float] = time.time,
        sleep: SleepFn = asyncio.sleep,
        is_alive: Callable[[int | None], bool] = default_is_alive,
        pid: int | None = None,
        max_catchup: int = MAX_CATCHUP,
        grace: float = MISFIRE_GRACE,
        idle: float = IDLE,
    ) -> None:
        """`start` starts a run, `runs(workflow_id)` lists that workflow's recent runs (newest
        first, from the store: every process's), `cancel` cancels one by id."""
        self._state = state
        self._events = events
        self._start = start
        self._runs = runs
        self._cancel = cancel
        self._clock = clock
        self._sleep = sleep
        self._is_alive = is_alive
        self._pid = os.getpid() if pid is None else pid
        self._max_catchup = max_catchup
        self._grace = grace
        self._idle = idle
        self.next_wake: float | None = None
        """Earliest next fire over the schedules seen by the last tick (None: none active)."""

    # ------------------------------------------------------------------ loop

    async def run(self, catalogue: Callable[[], Awaitable[list[Workflow]]]) -> None:
        """Tick, sleep until the next fire (at most `idle`), forever."""
        while True:
            try:
                await self.tick(await catalogue())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or a locked file must not end scheduling
                log.exception("scheduler tick failed")
                self._emit("schedule:error", {"error": f"{type(exc).__name__}: {exc}"})
            now = self._clock()
            wake = self.next_wake
            delay = self._idle if wake is None else min(max(0.0, wake - now), self._idle)
            await self._sleep(delay)

    async def tick(self, workflows: list[Workflow], now: float | None = None) -> list[Run]:
        """Fire everything due at `now` (default: the clock); returns the runs started."""
        now = self._clock() if now is None else now
        states = await self._state.schedules()
        started: list[Run] = []
        wake: float | None = None
        for entry in schedule_entries(workflows):
            state = states.get(entry.key)
            if state is None:  # first sighting: start counting from now, fire nothing old
                state = await self._state.ensure(entry.key, now)
            if state.pending:
                started += await self._recover(entry, state)
            if not state.paused:
                started += await self._due(entry, state, now)
                fresh = await self._state.get(entry.key)
                cursor = fresh.cursor if fresh is not None else now
                upcoming = next_after(entry.spec, max(cursor, now))
                wake = upcoming if wake is None else min(wake, upcoming)
        self.next_wake = wake
        return started

    # ------------------------------------------------------------------ one schedule

    async def _due(self, entry: ScheduleEntry, state: ScheduleState, now: float) -> list[Run]:
        spec = entry.spec
        keep = {"none": 1, "latest": 1, "all": self._max_catchup}[spec.catchup]
        due, earlier, lower_bound = due_instants(spec, state.cursor, now, keep)
        if not due:
            return []
        fires = due
        if spec.catchup == "none" and now - due[-1] > self._grace:
            fires = []
        missed = earlier + len(due) - len(fires)
        if not await self._state.claim(entry.key, state.cursor, due[-1], fires, self._pid):
            return []  # another engine on this file took these instants (or it was paused)
        if missed:
            self._emit(
                "schedule:missed",
                {
                    "schedule": entry.key,
                    "workflow_id": entry.workflow.id,
                    "count": missed,
                    "at_least": lower_bound,
                    "firing": len(fires),
                    "catchup": spec.catchup,
                },
                priority=Priority.HIGH,
            )
        return await self._fire_all(entry, fires, now)

    async def _recover(self, entry: ScheduleEntry, state: ScheduleState) -> list[Run]:
        """Fire what a process that died mid-fire left pending (and did not start yet)."""
        if state.pending_pid == self._pid or self._is_alive(state.pending_pid):
            return []
        if not await self._state.take_over(entry.key, state.pending_pid, self._pid):
            return []
        pending = list(state.pending)
        since = state.pending_since or 0.0
        runs = await self._runs(entry.workflow.id)
        if any(r.trigger_ref == entry.key and r.created_at >= since for r in runs):
            pending = pending[1:]  # its run started; only the bookkeeping after it was lost
        self._emit(
            "schedule:recovered",
            {"schedule": entry.key, "workflow_id": entry.workflow.id, "fires": len(pending)},
        )
        state.pending = []
        return await self._fire_all(entry, pending, self._clock())

    async def _fire_all(self, entry: ScheduleEntry, fires: list[float], now: float) -> list[Run]:
        started: list[Run] = []
        for i, at in enumerate(fires):
            run = await self._fire(entry, at, now)
            await self._state.fired(entry.key, fires[i + 1 :], run.id if run else None, at)
            if run is not None:
                started.append(run)
        return started

    async def _fire(self, entry: ScheduleEntry, at: float, now: float) -> Run | None:
        spec, key, wf = entry.spec, entry.key, entry.workflow
        if spec.overlap in ("skip", "cancel_previous"):
            active = [
                r for r in await self._runs(wf.id) if r.trigger_ref == key and not r.state.finished
            ]
            if active and spec.overlap == "skip":
                self._emit(
                    "schedule:skipped",
                    {
                        "schedule": key,
                        "workflow_id": wf.id,
                        "scheduled_for": at,
                        "reason": "the previous run is still active (overlap: skip)",
                        "active": [r.id for r in active],
                    },
                )
                return None
            for previous in active:
                try:
                    await self._cancel(previous.id)
                except Exception as exc:
                    self._emit(
                        "schedule:error",
                        {
                            "schedule": key,
                            "workflow_id": wf.id,
                            "error": f"cannot cancel the previous run {previous.id}: {exc}",
                        },
                    )
        request = StartRequest(
            workflow=wf.source or wf.id,
            inputs=dict(spec.inputs),
            trigger="schedule",
            trigger_ref=key,
        )
        try:
            run = await self._start(request)
        except Exception as exc:  # a broken file or input must not stop the other schedules
            self._emit(
                "schedule:error",
                {"schedule": key, "workflow_id": wf.id, "scheduled_for": at, "error": str(exc)},
                priority=Priority.HIGH,
            )
            return None
        self._emit(
            "schedule:fired",
            {
                "schedule": key,
                "workflow_id": wf.id,
                "scheduled_for": at,
                "late": round(max(0.0, now - at), 3),
                "run_id": run.id,
            },
            correlation_id=run.id,
        )
        return run

    def _emit(
        self,
        type_: str,
        data: dict[str, Any],
        *,
        priority: Priority = Priority.NORMAL,
        correlation_id: str | None = None,
    ) -> None:
        self._events.emit(type_, SOURCE, data, priority=priority, correlation_id=correlation_id)


# --------------------------------------------------------------------------- listing


async def schedule_infos(
    state: AutomationState, workflows: list[Workflow], now: float
) -> dict[str, list[ScheduleInfo]]:
    """What `voltui schedules` and the dashboard show, per workflow id."""
    states = await state.schedules()
    out: dict[str, list[ScheduleInfo]] = {}
    for entry in schedule_entries(workflows):
        st = states.get(entry.key)
        paused = bool(st and st.paused)
        cursor = st.cursor if st is not None else now
        out.setdefault(entry.workflow.id, []).append(
            ScheduleInfo(
                id=entry.key,
                spec=entry.spec.spec_text,
                next_fire_at=None if paused else next_after(entry.spec, max(cursor, now)),
                paused=paused,
                last_fired_at=st.last_fired_at if st else None,
                overlap=entry.spec.overlap,
                catchup=entry.spec.catchup,
            )
        )
    return out


def local_time(ts: float, zone: str | None = None) -> str:
    """`2024-03-31 03:00 CEST` for tables."""
    tz = ZoneInfo(zone) if zone else None
    dt = datetime.fromtimestamp(ts, tz) if tz else datetime.fromtimestamp(ts).astimezone()
    return dt.strftime("%Y-%m-%d %H:%M %Z")
