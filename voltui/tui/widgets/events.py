"""The event stream: newest at the bottom, bounded, pausable.

A `Log` (Line API, plain strings, never markup) renders only the visible lines, so a long
history costs nothing per frame; lines are written in batches by the app's refresh timer.
"""

from __future__ import annotations

from textual.widgets import Log

from voltui.engine.models import Event
from voltui.safetext import clean
from voltui.summaries import summarize
from voltui.tui.state import DashboardState
from voltui.tui.widgets._util import clock

MAX_LINES = 2000
TITLE = "4 Events"


def event_line(event: Event) -> str:
    """`time  type  summary`, all untrusted parts already cleaned."""
    return f"{clock(event.ts)}  {clean(event.type, max_len=24):<18} {summarize(event)}"


class EventsLog(Log):
    """Engine events as one line each. While paused, nothing new is written (scrolling still
    works) and the border title says PAUSED; resuming writes what arrived meanwhile."""

    ALLOW_MAXIMIZE = True

    def __init__(self, *, name: str | None = None, id: str | None = None) -> None:
        super().__init__(max_lines=MAX_LINES, auto_scroll=True, name=name, id=id)
        self.paused = False
        self._last_seq = 0
        self.border_title = TITLE

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.border_title = f"{TITLE} — PAUSED" if paused else TITLE

    def refresh_from(self, state: DashboardState) -> None:
        if self.paused:
            return
        new: list[Event] = []
        for event in reversed(state.events):  # newest first; stop at what is already shown
            if event.seq <= self._last_seq:
                break
            new.append(event)
        if not new:
            return
        new.reverse()
        self._last_seq = new[-1].seq
        self.write_lines([event_line(e) for e in new[-MAX_LINES:]])
