"""Schedules with a fake clock: DST changes, downtime, restarts, overlap, several engines.

The Scheduler is driven through its real loop (`run`) or its `tick`, with its real durable state
(a SQLite file in tmp_path); only time and the engine behind `start` are fakes, so a two-hour
outage costs nothing and every instant is exact.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from voltui.engine.api import StartRequest
from voltui.engine.automation_state import AutomationState
from voltui.engine.models import Event, Run, RunState, Workflow
from voltui.engine.schedules import COUNT_LIMIT, Scheduler, due_instants, next_after

BERLIN = ZoneInfo("Europe/Berlin")
QUARTER = 15 * 60


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def wf(schedule: dict[str, Any], wid: str = "report") -> Workflow:
    w = Workflow.model_validate(
        {
            "id": wid,
            "inputs": {"mode": {"default": "full"}},
            "schedules": [schedule],
            "steps": [{"id": "s", "run": {"simulated": {"duration": "1ms"}}}],
        }
    )
    return w


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeEngine:
    """Records starts; runs stay in the state the test gives them (RUNNING by default)."""

    clock: Clock
    finish_at_once: bool = True
    runs: list[Run] = field(default_factory=list)
    requests: list[StartRequest] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    ids: Any = field(default_factory=lambda: itertools.count(1))

    async def start(self, request: StartRequest) -> Run:
        self.requests.append(request)
        run = Run(
            id=f"r{next(self.ids)}",
            workflow_id=request.workflow,
            workflow_name=request.workflow,
            inputs=request.inputs,
            created_at=self.clock(),
            trigger=request.trigger,
            trigger_ref=request.trigger_ref,
            state=RunState.SUCCEEDED if self.finish_at_once else RunState.RUNNING,
        )
        self.runs.append(run)
        return run

    async def list_runs(self, workflow_id: str) -> list[Run]:
        return list(reversed(self.runs))

    async def cancel(self, run_id: str) -> None:
        self.cancelled.append(run_id)
        for run in self.runs:
            if run.id == run_id:
                run.state = RunState.CANCELLED


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, type: str, source: str, data: dict | None = None, **kw: Any) -> Event:
        event = Event(seq=len(self.events) + 1, ts=0, type=type, source=source, data=data or {})
        self.events.append(event)
        return event

    def of(self, type_: str) -> list[Event]:
        return [e for e in self.events if e.type == type_]


def scheduler(
    db: Path, clock: Clock, engine: FakeEngine, events: Recorder | None = None, **kw: Any
) -> Scheduler:
    return Scheduler(
        AutomationState(db, clock=clock),
        events or Recorder(),
        start=engine.start,
        runs=engine.list_runs,
        cancel=engine.cancel,
        clock=clock,
        **kw,
    )


class StopLoop(Exception):
    pass


def fake_sleep(clock: Clock, until: float, delays: list[float] | None = None):
    """A `sleep` that moves the fake clock instead of waiting, and ends the loop at `until`."""

    async def sleep(delay: float) -> None:
        if delays is not None:
            delays.append(delay)
        clock.now += delay
        if clock.now >= until:
            raise StopLoop
        await asyncio.sleep(0)

    return sleep


# ------------------------------------------------------------------------- instants


@pytest.mark.parametrize(
    ("start", "end", "local_gap"),
    [
        # Spring forward: 02:00 CET becomes 03:00 CEST; local 01:45 is followed by 03:00.
        (utc(2024, 3, 30, 23, 0), utc(2024, 3, 31, 3, 0), ("01:45", "03:00")),
        # Fall back: 03:00 CEST becomes 02:00 CET; local 02:00-02:45 happens twice.
        (utc(2024, 10, 26, 23, 0), utc(2024, 10, 27, 3, 0), ("02:45", "02:00")),
    ],
    ids=["spring-forward", "fall-back"],
)
async def test_every_quarter_hour_fires_at_the_right_instants_across_dst(
    tmp_path: Path, start: float, end: float, local_gap: tuple[str, str]
) -> None:
    """`*/15` in Europe/Berlin keeps firing every 900 s of real time through both changes:
    no fire lost in the hour that does not exist, none doubled in the hour that repeats."""
    clock = Clock(start)
    engine = FakeEngine(clock)
    sched = scheduler(tmp_path / "s.db", clock, engine, sleep=fake_sleep(clock, end))
    workflows = [wf({"cron": "*/15 * * * *", "timezone": "Europe/Berlin"})]

    async def catalogue() -> list[Workflow]:
        return workflows

    with pytest.raises(StopLoop):
        await sched.run(catalogue)

    fired = [r.created_at for r in engine.runs]
    expected = [start + QUARTER * k for k in range(1, int((end - start) / QUARTER))]
    assert fired == expected  # created at the exact instant: the loop slept exactly until it
    locals_ = [datetime.fromtimestamp(t, BERLIN).strftime("%H:%M") for t in fired]
    i = locals_.index(local_gap[0], 4)
    assert locals_[i + 1] == local_gap[1]
    assert all(r.trigger == "schedule" and r.trigger_ref == "report:1" for r in engine.runs)


def test_specific_hour_runs_once_when_the_clocks_go_back() -> None:
    spec = wf({"cron": "30 2 * * *", "timezone": "Europe/Berlin"}).schedules[0]
    first = next_after(spec, utc(2024, 10, 26, 12, 0))
    second = next_after(spec, first)
    assert datetime.fromtimestamp(first, BERLIN).strftime("%d %H:%M %Z") == "27 02:30 CEST"
    assert datetime.fromtimestamp(second, BERLIN).strftime("%d %H:%M %Z") == "28 02:30 CET"


def test_every_is_aligned_to_the_epoch_and_counts_missed_instants() -> None:
    spec = wf({"every": "10m"}).schedules[0]
    assert next_after(spec, 1_000_000.0) == 1_000_200.0  # next multiple of 600
    due, earlier, bound = due_instants(spec, 0.0, 6000.0, keep=3)
    assert due == [4800.0, 5400.0, 6000.0]
    assert (earlier, bound) == (7, False)


def test_a_very_long_outage_is_counted_to_a_bound_not_walked_to_the_end() -> None:
    spec = wf({"cron": "* * * * *"}).schedules[0]
    due, earlier, bound = due_instants(spec, utc(2024, 1, 1), utc(2024, 4, 1), keep=1)
    assert due == [utc(2024, 4, 1)]
    assert bound and earlier == COUNT_LIMIT


# ------------------------------------------------------------------------- downtime


T0 = utc(2024, 6, 1, 12, 0)  # a quarter-hour instant


async def first_fire_then_downtime(
    tmp_path: Path, schedule: dict[str, Any], *, finish: bool = True
) -> tuple[FakeEngine, Recorder, list[Run], Clock]:
    """Engine A sees the schedule at T0 and fires at T0+15m; it is down for two hours; a new
    engine B (same file) ticks at T0+15m+2h+5m. Returns B's engine, events and started runs."""
    db = tmp_path / "state.db"
    workflows = [wf(schedule)]
    clock = Clock(T0)
    engine = FakeEngine(clock, finish_at_once=finish)
    a = scheduler(db, clock, engine)
    assert await a.tick(workflows) == []  # first sighting: nothing old fires
    clock.now = T0 + QUARTER
    assert len(await a.tick(workflows)) == 1
    clock.now = T0 + QUARTER + 2 * 3600 + 300  # restart after two hours (and five minutes)
    events = Recorder()
    b = scheduler(db, clock, engine, events)
    started = await b.tick(workflows)
    assert await b.tick(workflows) == []  # ticking again at once fires nothing twice
    return engine, events, started, clock


MISSED = 8  # T0+30m ... T0+2h15m: eight quarter hours passed while no engine ran


async def test_catchup_none_drops_late_fires_and_says_so(tmp_path: Path) -> None:
    _engine, events, started, _clock = await first_fire_then_downtime(
        tmp_path, {"cron": "*/15 * * * *", "catchup": "none"}
    )
    assert started == []
    (missed,) = events.of("schedule:missed")
    assert missed.data["count"] == MISSED and missed.data["firing"] == 0


async def test_catchup_latest_fires_once_for_the_whole_outage(tmp_path: Path) -> None:
    engine, events, started, _clock = await first_fire_then_downtime(
        tmp_path, {"cron": "*/15 * * * *", "catchup": "latest"}
    )
    assert len(started) == 1
    (fired,) = events.of("schedule:fired")
    assert fired.data["scheduled_for"] == T0 + QUARTER + 2 * 3600  # the latest missed instant
    assert events.of("schedule:missed")[0].data["count"] == MISSED - 1
    assert len(engine.runs) == 2  # A's one fire and B's one catch-up


async def test_catchup_all_fires_every_missed_instant_in_order(tmp_path: Path) -> None:
    _engine, events, started, _clock = await first_fire_then_downtime(
        tmp_path, {"cron": "*/15 * * * *", "catchup": "all"}
    )
    fired = [e.data["scheduled_for"] for e in events.of("schedule:fired")]
    assert fired == [T0 + QUARTER * k for k in range(2, 2 + MISSED)]
    assert len(started) == MISSED
    assert events.of("schedule:missed") == []


async def test_restart_without_downtime_neither_double_fires_nor_drops(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    workflows = [wf({"cron": "*/15 * * * *"})]
    clock = Clock(T0)
    engine = FakeEngine(clock)
    a = scheduler(db, clock, engine)
    await a.tick(workflows)
    clock.now = T0 + QUARTER + 1
    assert len(await a.tick(workflows)) == 1
    clock.now += 10  # restart ten seconds later: that instant is done
    b = scheduler(db, clock, engine)
    assert await b.tick(workflows) == []
    clock.now = T0 + 2 * QUARTER  # and the next one is not lost
    assert len(await b.tick(workflows)) == 1
    assert [r.created_at for r in engine.runs] == [T0 + QUARTER + 1, T0 + 2 * QUARTER]


# ------------------------------------------------------------------------- overlap


async def test_overlap_skip_runs_one_and_skips_the_rest_while_it_is_active(
    tmp_path: Path,
) -> None:
    engine, events, started, _clock = await first_fire_then_downtime(
        tmp_path, {"cron": "*/15 * * * *", "catchup": "all", "overlap": "skip"}, finish=False
    )
    # A's run from T0+15m is still RUNNING, so every catch-up fire is skipped.
    assert started == []
    assert len(events.of("schedule:skipped")) == MISSED
    assert events.of("schedule:skipped")[0].data["active"] == [engine.runs[0].id]


async def test_overlap_cancel_previous_cancels_each_active_run_first(tmp_path: Path) -> None:
    engine, _events, started, _clock = await first_fire_then_downtime(
        tmp_path,
        {"cron": "*/15 * * * *", "catchup": "all", "overlap": "cancel_previous"},
        finish=False,
    )
    assert len(started) == MISSED
    # Each fire cancelled the run before it: A's run, then each of B's but the last.
    assert engine.cancelled == [r.id for r in engine.runs[:-1]]
    assert [r.state for r in engine.runs].count(RunState.RUNNING) == 1


async def test_overlap_queue_starts_every_fire(tmp_path: Path) -> None:
    """The queueing itself is the ConcurrencyGate's (test_concurrency.py); here every fire
    reaches the engine even though the previous run is active."""
    _engine, _events, started, _clock = await first_fire_then_downtime(
        tmp_path, {"cron": "*/15 * * * *", "catchup": "all", "overlap": "queue"}, finish=False
    )
    assert len(started) == MISSED


# ------------------------------------------------------------------------- several engines


async def test_two_engines_on_one_file_fire_each_instant_once(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    workflows = [wf({"every": "1m"})]
    clock = Clock(T0)
    engine = FakeEngine(clock)
    a, b = scheduler(db, clock, engine), scheduler(db, clock, engine)
    await a.tick(workflows)
    await b.tick(workflows)
    for minute in range(1, 6):
        clock.now = T0 + 60 * minute
        results = await asyncio.gather(a.tick(workflows), b.tick(workflows))
        assert sum(len(r) for r in results) == 1
    assert len(engine.runs) == 5


async def test_fires_left_pending_by_a_dead_engine_are_fired_once(tmp_path: Path) -> None:
    """Engine A claimed two instants and died after starting the first run but before noting
    it; the next engine starts only the second."""
    db = tmp_path / "state.db"
    workflows = [wf({"every": "1m"})]
    clock = Clock(T0)
    engine = FakeEngine(clock)
    state = AutomationState(db, clock=clock)
    await state.ensure("report:1", T0)
    dead_pid = 999_999_999
    assert await state.claim("report:1", T0, T0 + 120, [T0 + 60, T0 + 120], dead_pid)
    clock.now = T0 + 125
    await engine.start(StartRequest(workflow="report", trigger="schedule", trigger_ref="report:1"))
    events = Recorder()
    b = scheduler(db, clock, engine, events, is_alive=lambda pid: pid != dead_pid)
    started = await b.tick(workflows)
    assert len(started) == 1
    assert events.of("schedule:recovered")[0].data["fires"] == 1
    assert (await state.get("report:1")).pending == []  # type: ignore[union-attr]
    assert await b.tick(workflows) == []


async def test_pending_fires_without_a_run_are_all_fired(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    clock = Clock(T0)
    engine = FakeEngine(clock)
    state = AutomationState(db, clock=clock)
    await state.ensure("report:1", T0)
    assert await state.claim("report:1", T0, T0 + 120, [T0 + 60, T0 + 120], 999_999_999)
    clock.now = T0 + 125
    b = scheduler(db, clock, engine, is_alive=lambda pid: False)
    assert len(await b.tick([wf({"every": "1m"})])) == 2


# ------------------------------------------------------------------------- pause


async def test_paused_schedule_does_not_fire_and_resume_does_not_catch_up(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state.db"
    workflows = [wf({"cron": "*/15 * * * *", "catchup": "all"})]
    clock = Clock(T0)
    engine = FakeEngine(clock)
    sched = scheduler(db, clock, engine)
    await sched.tick(workflows)
    state = AutomationState(db, clock=clock)  # as `voltui schedules pause` from another process
    await state.set_paused("report:1", True)
    clock.now = T0 + 4 * QUARTER
    assert await sched.tick(workflows) == []
    await state.set_paused("report:1", False)
    assert await sched.tick(workflows) == []  # the paused hour is not made up for
    clock.now = T0 + 5 * QUARTER
    assert len(await sched.tick(workflows)) == 1


async def test_a_schedule_that_cannot_start_reports_and_others_still_fire(
    tmp_path: Path,
) -> None:
    clock = Clock(T0)
    engine = FakeEngine(clock)
    events = Recorder()

    async def start(request: StartRequest) -> Run:
        if request.workflow == "broken":
            raise ValueError("input mode: expected one of full, quick")
        return await engine.start(request)

    sched = Scheduler(
        AutomationState(tmp_path / "s.db", clock=clock),
        events,
        start=start,
        runs=engine.list_runs,
        cancel=engine.cancel,
        clock=clock,
    )
    workflows = [wf({"every": "1m"}, "broken"), wf({"every": "1m"}, "fine")]
    await sched.tick(workflows)
    clock.now = T0 + 60
    started = await sched.tick(workflows)
    assert [r.workflow_id for r in started] == ["fine"]
    assert "expected one of" in events.of("schedule:error")[0].data["error"]


async def test_loop_sleeps_until_the_next_instant(tmp_path: Path) -> None:
    clock = Clock(T0 + 10)
    engine = FakeEngine(clock)
    delays: list[float] = []
    sleep = fake_sleep(clock, T0 + 3 * QUARTER + 1, delays)
    sched = scheduler(tmp_path / "s.db", clock, engine, sleep=sleep, idle=3600.0)

    async def catalogue() -> list[Workflow]:
        return [wf({"cron": "*/15 * * * *"})]

    with pytest.raises(StopLoop):
        await sched.run(catalogue)
    assert delays[:3] == [QUARTER - 10, QUARTER, QUARTER]
    assert len(engine.runs) == 3
