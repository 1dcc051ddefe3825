"""The event stream: newest at the bottom, bounded, pausable, filterable.

A `Log` (Line API, plain strings, never markup) renders only the visible lines, so a long
history costs nothing per frame; lines are written in batches by the app's refresh timer.
The `/` filter and the "only this run" filter are applied here, to new events as they arrive
and to the whole buffered history (`DashboardState.events`) when a filter changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rich.text import Text
from textual.widgets import Log

from voltui.engine.models import Event
from voltui.safetext import clean
from voltui.summaries import summarize
from voltui.tui import state as st
from voltui.tui.state import DashboardState
from voltui.tui.widgets._util import clock

MAX_LINES = 2000
TITLE = "4 Events"


def event_line(event: Event) -> str:
    """`time  type  summary`, all untrusted parts already cleaned."""
    return f"{clock(event.ts)}  {clean(event.type, max_len=24):<18} {summarize(event)}"


def events_title(
    text: str | None = None, run_id: str | None = None, *, paused: bool = False
) -> Text:
    """The border title: panel name, active filters, PAUSED. A `Text`, so a filter containing
    `[` is shown as typed, never read as markup."""
    title = Text(TITLE)
    if text:
        title.append("  ")
        title.append(f"/{clean(text, max_len=40)}/", style="bold")
    if run_id:
        title.append(f"  run {run_id[:8]}", style="bold")
    if paused:
        title.append(" — PAUSED", style="bold reverse")
    return title


class EventsLog(Log):
    """Engine events as one line each. While paused, nothing new is written (scrolling still
    works) and the border title says PAUSED; resuming writes what arrived meanwhile.

    `filter_text` is the `/` filter (`voltui.tui.state.compile_filter`: a case-insensitive regex
    over `voltui.tui.state.event_line`, `!` inverts); `run_filter` keeps one run's events.
    """

    ALLOW_MAXIMIZE = True

    def __init__(self, *, name: str | None = None, id: str | None = None) -> None:
        super().__init__(max_lines=MAX_LINES, auto_scroll=True, name=name, id=id)
        self.paused = False
        self.filter_text: str | None = None
        self.run_filter: str | None = None
        self._match: Callable[[str], bool] | None = None
        self._last_seq = 0
        self.border_title = events_title()

    def _update_title(self) -> None:
        self.border_title = events_title(self.filter_text, self.run_filter, paused=self.paused)

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self._update_title()

    def set_filter(
        self, state: DashboardState | None, text: str | None, run_id: str | None
    ) -> None:
        """Apply new filters and rewrite the log from the buffered events. While paused, the
        rewrite stops at the last event shown, so the paused view does not move on."""
        self.filter_text = text or None
        self.run_filter = run_id or None
        self._match = st.compile_filter(self.filter_text)
        self._update_title()
        self.clear()
        if state is None:
            return
        upto = self._last_seq if self.paused else None
        shown = [e for e in self._select(state.events) if upto is None or e.seq <= upto]
        if not self.paused and state.events:
            self._last_seq = state.events[-1].seq
        self.write_lines([event_line(e) for e in shown[-MAX_LINES:]])

    def _select(self, events: Iterable[Event]) -> list[Event]:
        run = self.run_filter
        match = self._match
        return [
            e
            for e in events
            if (run is None or e.correlation_id == run)
            and (match is None or match(st.event_line(e)))
        ]

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
        shown = self._select(new) if self._match or self.run_filter else new
        if shown:
            self.write_lines([event_line(e) for e in shown[-MAX_LINES:]])
