"""Re-enact a finished run from the event store, one recorded event at a time.

The dashboard is a fold over events (`DashboardState`), so the state of a run at any moment of
its history is the fold of its events up to that moment. Stepping forward folds one more event;
stepping back folds again from the start, which takes milliseconds even for thousands of events
and keeps a single code path (no undo logic to get wrong).

Playing follows the recorded timestamps, scaled by the speed; an idle gap longer than `MAX_GAP`
seconds of run time is shortened to it, so a run that slept for an hour replays in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import ClassVar, TypeVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.content import Content
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Log, Static

from voltui.engine.api import EngineAPI
from voltui.engine.models import Event, EventQuery, RunDetail
from voltui.safetext import clean
from voltui.summaries import summarize
from voltui.tui.calls import engine_call
from voltui.tui.state import DashboardState, RunView
from voltui.tui.widgets.dag import DagView

T = TypeVar("T")

SPEEDS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
MAX_GAP = 5.0
"""Longest pause (in run time) kept while playing; longer idle gaps are shortened to this."""
TICK = 0.05
"""Seconds between play steps; several due events are folded in one tick."""
MAX_LINES = 2000


def speed_text(speed: float) -> str:
    return f"{speed:g}x"


def replay_line(event: Event, t0: float) -> str:
    """`t+1.23s  step:started  summary`; the summary is already cleaned."""
    offset = f"t+{event.ts - t0:.2f}s"
    return f"{offset:>9}  {clean(event.type, max_len=24):<18} {summarize(event)}"


def queued_event(detail: RunDetail) -> Event:
    """A `workflow:queued` event built from the stored run, for a run whose own was not kept.

    It carries the DAG, so the fold knows every step before the first recorded event.
    """
    run = detail.run
    return Event(
        seq=0,
        ts=run.created_at,
        type="workflow:queued",
        source="replay",
        correlation_id=run.id,
        data={
            "workflow_id": run.workflow_id,
            "name": run.workflow_name,
            "inputs": run.inputs,
            "steps_total": len(detail.workflow.steps),
            "dag": [[s.id, list(s.depends_on)] for s in detail.workflow.steps],
            "replay_of": run.replay_of,
            "replay_mode": run.replay_mode,
        },
    )


class ReplayDag(DagView):
    """The dashboard's DAG panel (levels, folding, only visible rows rendered), timed against
    replay time: a step running at this point of the replay shows how long it had been
    running then, not since the wall clock's now."""

    def _now(self) -> float | None:
        screen = self.screen
        return screen.now if isinstance(screen, ReplayScreen) else None


class ReplayScreen(Screen[None]):
    """Step through a recorded run: `]`/`[` one event, `p`/space play, `+`/`-` speed."""

    DEFAULT_CSS = """
    ReplayScreen { layout: vertical; }
    ReplayScreen #replay-status {
        height: 1; padding: 0 1; background: $primary 20%; text-style: bold;
    }
    ReplayScreen #replay-body { height: 1fr; }
    ReplayScreen #replay-dag {
        width: 2fr; border: round $primary 50%; padding: 0 1;
    }
    ReplayScreen #replay-log { width: 3fr; border: round $primary 50%; }
    ReplayScreen.-narrow #replay-body { layout: vertical; }
    ReplayScreen.-narrow #replay-dag { width: 1fr; height: 1fr; }
    ReplayScreen.-narrow #replay-log { width: 1fr; height: 1fr; }
    """
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [
        (0, "-narrow"),
        (110, "-wide"),
    ]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("right_square_bracket", "step(1)", "Next", key_display="]", id="replay.next"),
        Binding("left_square_bracket", "step(-1)", "Prev", key_display="[", id="replay.prev"),
        Binding("p,space", "toggle_play", "Play/pause", id="replay.play"),
        Binding("plus,equals_sign", "speed(1)", "Faster", key_display="+", id="replay.faster"),
        Binding("minus", "speed(-1)", "Slower", key_display="-", id="replay.slower"),
        Binding("home", "seek_start", "Start", show=False, id="replay.home"),
        Binding("end", "seek_end", "End", show=False, id="replay.end"),
        Binding("escape", "back", "Back", id="replay.back"),
    ]

    def __init__(self, engine: EngineAPI, run_id: str) -> None:
        super().__init__()
        self.engine = engine
        self.run_id = run_id
        self.detail: RunDetail | None = None
        self.events: list[Event] = []
        """The run's recorded events in seq order (the synthetic queued event is not one)."""
        self.position = 0
        """How many of `events` are folded into `state` (0 = before the first)."""
        self.state = DashboardState(seq=-1)
        self.loaded = False
        self.playing = False
        self.speed = 1.0
        self._seed: Event | None = None
        self._shown = 0
        """The position the event log was last drawn at (its last line is event _shown-1)."""
        self._owed = 0.0
        """Run time played since the last folded event (while playing)."""
        self._last_tick = 0.0
        self._timer: Timer | None = None

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Static(
            Content(f"Replay of run {clean(self.run_id[:12])}: loading…"), id="replay-status"
        )
        with Horizontal(id="replay-body"):
            dag = ReplayDag(id="replay-dag")
            dag.can_focus = False  # home/end/space belong to the replay, not the DAG
            dag.border_title = "DAG"
            yield dag
            log = Log(id="replay-log", max_lines=MAX_LINES, auto_scroll=True)
            log.can_focus = False  # home/end/space belong to the replay, not the log
            log.border_title = "Events"
            yield log
        yield Footer()

    async def on_mount(self) -> None:
        self._timer = self.set_interval(TICK, self._tick, pause=True, name="replay-play")
        self.run_worker(self._load(), group="replay-load", exclusive=True)

    async def _call(self, call: Awaitable[T]) -> T | None:
        return await engine_call(self.app, call)

    async def _load(self) -> None:
        detail = await self._call(self.engine.get_run(self.run_id))
        if detail is None:
            self.query_one("#replay-status", Static).update(
                Content(f"Replay of run {clean(self.run_id[:12])}: not available")
            )
            return
        events = await self._call(self.engine.events(EventQuery(correlation_id=self.run_id)))
        self.detail = detail
        self.events = sorted(events or [], key=lambda e: e.seq)
        # Always fold a queued event built from the stored run first, so position 0 already
        # shows the whole DAG as pending; the recorded one, folded later, changes nothing.
        self._seed = queued_event(detail)
        self.loaded = True
        if not detail.run.state.finished:
            self.app.notify(
                "this run is still active: replaying what is recorded so far", markup=False
            )
        self._seek(0)

    # ------------------------------------------------------------------ position

    @property
    def t0(self) -> float:
        """Replay time zero: the run's creation (or its first event, if that is earlier)."""
        first = [self._seed.ts] if self._seed is not None else []
        if self.events:
            first.append(self.events[0].ts)
        return min(first, default=0.0)

    @property
    def now(self) -> float:
        """Replay time: the timestamp of the last folded event."""
        if self.position:
            return self.events[self.position - 1].ts
        return self.t0

    @property
    def view(self) -> RunView | None:
        return self.state.runs.get(self.run_id)

    def _seek(self, position: int) -> None:
        """Fold up to `position`: forward from here, or again from the start when going back."""
        position = max(0, min(len(self.events), position))
        if position < self.position or position == 0:
            self.state = DashboardState(seq=-1)
            if self._seed is not None:
                self.state.apply([self._seed])
            self.position = 0
        if position > self.position:
            self.state.apply(self.events[self.position : position])
            self.position = position
        self._owed = 0.0
        if self.playing and self.position >= len(self.events):
            self._set_playing(False)
        self._paint()

    # ------------------------------------------------------------------ rendering

    def status_text(self) -> str:
        n = len(self.events)
        mode = "PLAYING" if self.playing else "PAUSED"
        elapsed = self.now - self.t0
        return (
            f"Replay {clean(self.run_id[:12])}  event {self.position}/{n}  t+{elapsed:.1f}s  "
            f"speed {speed_text(self.speed)}  {mode}"
        )

    def dag_text(self) -> str:
        """Every row of the DAG as shown at this point of the replay (for tests)."""
        return self.query_one(ReplayDag).text()

    def on_dag_view_step_chosen(self, message: DagView.StepChosen) -> None:
        message.stop()  # the recorded run is shown as it was, not opened live

    def _paint(self) -> None:
        if not self.loaded:
            return
        self.query_one("#replay-status", Static).update(Content(self.status_text()))
        self.query_one(ReplayDag).refresh_from(self.view)
        log = self.query_one("#replay-log", Log)
        t0 = self.t0
        if self.position >= self._shown and self._shown > 0:
            new = self.events[self._shown : self.position]
        else:
            log.clear()
            new = self.events[max(0, self.position - MAX_LINES) : self.position]
        if new:
            log.write_lines([replay_line(e, t0) for e in new[-MAX_LINES:]])
        self._shown = self.position

    def log_lines(self) -> list[str]:
        return list(self.query_one("#replay-log", Log).lines)

    # ------------------------------------------------------------------ playing

    def _set_playing(self, playing: bool) -> None:
        self.playing = playing
        if self._timer is not None:
            if playing:
                self._last_tick = time.monotonic()
                self._timer.resume()
            else:
                self._timer.pause()

    def _tick(self) -> None:
        if not self.playing:
            return
        now = time.monotonic()
        self._owed += (now - self._last_tick) * self.speed
        self._last_tick = now
        target = self.position
        owed = self._owed
        prev = self.now
        while target < len(self.events):
            gap = min(MAX_GAP, max(0.0, self.events[target].ts - prev))
            if gap > owed:
                break
            owed -= gap
            prev = self.events[target].ts
            target += 1
        if target != self.position:
            self._seek(target)  # resets _owed; keep what was left over
            self._owed = owed
        elif target >= len(self.events):
            self._set_playing(False)
            self._paint()

    # ------------------------------------------------------------------ actions

    def action_step(self, delta: int) -> None:
        if self.loaded:
            self._seek(self.position + delta)

    def action_seek_start(self) -> None:
        if self.loaded:
            self._seek(0)

    def action_seek_end(self) -> None:
        if self.loaded:
            self._seek(len(self.events))

    def action_toggle_play(self) -> None:
        if not self.loaded:
            return
        if not self.playing and self.position >= len(self.events):
            self._seek(0)  # play at the end starts over
        self._set_playing(not self.playing)
        self._owed = 0.0
        self._paint()

    def action_speed(self, direction: int) -> None:
        index = SPEEDS.index(self.speed) if self.speed in SPEEDS else SPEEDS.index(1.0)
        self.speed = SPEEDS[max(0, min(len(SPEEDS) - 1, index + direction))]
        self._paint()

    def action_back(self) -> None:
        self._set_playing(False)
        self.app.pop_screen()
