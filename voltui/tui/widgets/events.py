"""The event stream: newest at the bottom, bounded, pausable, filterable.

A Line API widget over a ring buffer of events: a line is formatted only when it is drawn, so
a flood of thousands of events per second costs a deque append per event, and each frame
formats the dozen lines in view (cached by event seq). Lines are plain strings drawn as `Text`,
never markup. The app hands over new events from its refresh timer, in batches.
The `/` filter and the "only this run" filter are applied here, to new events as they arrive
and to the whole buffered history (`DashboardState.events`) when a filter changes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.selection import Selection
from textual.strip import Strip

from voltui.engine.models import Event
from voltui.safetext import clean
from voltui.summaries import summarize
from voltui.tui import state as st
from voltui.tui.state import DashboardState

MAX_LINES = 2000
MEASURED_PER_WRITE = 200
"""Lines whose width `EventsLog.write_events` measures per batch (the newest ones)."""
TITLE = "4 Events"

_clock_cache: dict[int, str] = {}
_type_cache: dict[str, str] = {}


def _clock(ts: float) -> str:
    """`HH:MM:SS` of a timestamp, cached per second (a flood shares a handful of seconds)."""
    second = int(ts)
    text = _clock_cache.get(second)
    if text is None:
        if len(_clock_cache) > 256:
            _clock_cache.clear()
        text = _clock_cache[second] = time.strftime("%H:%M:%S", time.localtime(second))
    return text


def _type(event_type: str) -> str:
    text = _type_cache.get(event_type)
    if text is None:
        if len(_type_cache) > 256:  # types come from the engine, but stay bounded anyway
            _type_cache.clear()
        text = _type_cache[event_type] = f"{clean(event_type, max_len=24):<18}"
    return text


WORKFLOW_CHARS = 14
"""Characters of the workflow id in the run column (longer ids end in `…`)."""
HEARTBEATS = frozenset({"metrics:system", "health:checked"})
"""Event types that repeat on a timer whether anything happens or not: hidden by default (they
bury the real events when idle), shown with `M`."""

WorkflowOf = Callable[[str], str | None]


def _run_column(event: Event, workflow_of: WorkflowOf | None) -> str:
    """`5aa3ce4b code_review   `: short run id and workflow id, so two runs of one workflow
    can be told apart; blank for events about no run."""
    cid = event.correlation_id
    if not cid:
        return " " * (9 + WORKFLOW_CHARS)
    workflow = (workflow_of(cid) if workflow_of is not None else None) or ""
    if len(workflow) > WORKFLOW_CHARS:
        workflow = workflow[: WORKFLOW_CHARS - 1] + "…"
    return f"{cid[:8]:<8} {workflow:<{WORKFLOW_CHARS}}"


def event_line(event: Event, workflow_of: WorkflowOf | None = None) -> str:
    """`time  type  run workflow  summary`, all untrusted parts cleaned."""
    run = _run_column(event, workflow_of)
    return clean(f"{_clock(event.ts)}  {_type(event.type)} {run}  {summarize(event)}").expandtabs()


def events_title(
    text: str | None = None,
    run_id: str | None = None,
    *,
    paused: bool = False,
    heartbeats: bool = False,
) -> Text:
    """The border title: panel name, active filters, PAUSED. A `Text`, so a filter containing
    `[` is shown as typed, never read as markup."""
    title = Text(TITLE)
    if text:
        title.append("  ")
        title.append(f"/{clean(text, max_len=40)}/", style="bold")
    if run_id:
        title.append(f"  run {clean(run_id[:8])}", style="bold")
    if heartbeats:
        title.append("  +heartbeats", style="bold")
    if paused:
        title.append(" — PAUSED", style="bold reverse")
    return title


class EventsLog(ScrollView, can_focus=True):
    """Engine events as one line each. While paused, nothing new is written (scrolling still
    works) and the border title says PAUSED; resuming writes what arrived meanwhile.

    `filter_text` is the `/` filter (`voltui.tui.state.compile_filter`: a case-insensitive regex
    over `voltui.tui.state.event_line`, `!` inverts); `run_filter` keeps one run's events.
    Scrolled away from the bottom, the view stays on the same lines while new ones arrive.
    """

    ALLOW_MAXIMIZE = True
    ALLOW_SELECT = True
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "scroll_down", "Down", show=False, id="nav.down"),
        Binding("k", "scroll_up", "Up", show=False, id="nav.up"),
        Binding("g", "scroll_home", "Oldest", show=False, id="nav.first"),
        Binding("G", "scroll_end", "Newest", show=False, id="nav.last"),
    ]
    DEFAULT_CSS = """
    EventsLog {
        background: $surface;
        color: $text;
        overflow: scroll;
        &:focus { background-tint: $foreground 5%; }
    }
    """

    def __init__(self, *, name: str | None = None, id: str | None = None) -> None:
        super().__init__(name=name, id=id)
        self.paused = False
        self.show_heartbeats = False
        """Whether `HEARTBEATS` events (metrics samples, health checks) are shown."""
        self.filter_text: str | None = None
        self.run_filter: str | None = None
        self._match: Callable[[str], bool] | None = None
        self._last_seq = 0
        self._events: deque[Event] = deque(maxlen=MAX_LINES)
        self._texts: LRUCache[int, str] = LRUCache(512)
        """Formatted lines by event seq: the newest are measured, then soon drawn."""
        self._strips: LRUCache[int, tuple[Style, Strip]] = LRUCache(512)
        """Drawn lines by event seq (with the style they were drawn in), before cropping."""
        self._workflow_of: WorkflowOf | None = None
        self._width = 0
        """Widest line drawn so far: the scrollable width grows as wider lines come into view."""
        self._width_pending = False
        self._follow = True
        """Whether the view keeps to the newest line: until the user scrolls up, and again once
        they scroll back to the bottom. Kept as a flag, since the bottom moves by a line when
        the horizontal scrollbar comes or goes, and the panel's height changes on a resize."""
        self.border_title = events_title()

    # ------------------------------------------------------------------ content

    @property
    def lines(self) -> list[str]:
        """The text of every buffered line, oldest first (formats them all: for tests)."""
        return [event_line(e, self._workflow_of) for e in self._events]

    def line_in_view(self) -> str | None:
        """The newest line in view (the bottom one), for `y`."""
        if not self._events:
            return None
        index = min(len(self._events) - 1, int(self.scroll_y) + max(1, self.size.height) - 1)
        return self._text(self._events[index])

    @property
    def line_count(self) -> int:
        return len(self._events)

    def clear(self) -> None:
        self._events.clear()
        self._texts.clear()
        self._strips.clear()
        self._width = 0
        self._set_virtual_size()
        self.refresh()

    def write_events(self, events: Sequence[Event], *, measure: int = MEASURED_PER_WRITE) -> None:
        """Append events (oldest first). More than `MAX_LINES` at once keeps only the newest:
        the others would have scrolled out of the buffer anyway.

        The scrollable width follows the widest line, measured here for the newest `measure`
        events (all of them in a quiet moment, so the width is then exact) and for every line
        drawn; under a flood, a line that scrolls away unseen is not formatted at all."""
        if not events:
            return
        follow = self._follow and not self.is_vertical_scrollbar_grabbed
        buffer = self._events
        if len(events) > MAX_LINES:
            events = events[-MAX_LINES:]
        dropped = max(0, len(buffer) + len(events) - MAX_LINES)
        buffer.extend(events)
        if measure > 0:
            self._width = max(self._width, *(self._line_width(e) for e in events[-measure:]))
        self._set_virtual_size()
        if follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        elif dropped and self.scroll_y > 0:
            # keep the lines being read in view while older ones leave the buffer
            self.scroll_to(y=max(0, self.scroll_y - dropped), animate=False, immediate=True)
        self.refresh()

    def _text(self, event: Event) -> str:
        text = self._texts.get(event.seq)
        if text is None:
            text = self._texts[event.seq] = event_line(event, self._workflow_of)
        return text

    def _line_width(self, event: Event) -> int:
        return cell_len(self._text(event))

    def _set_virtual_size(self) -> None:
        self.virtual_size = Size(self._width, len(self._events))

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._follow = round(new_value) >= self.max_scroll_y

    def on_resize(self) -> None:
        if self._follow:
            self.scroll_end(animate=False, x_axis=False)

    # ------------------------------------------------------------------ filters and pause

    def _update_title(self) -> None:
        self.border_title = events_title(
            self.filter_text, self.run_filter, paused=self.paused, heartbeats=self.show_heartbeats
        )

    def _use_state(self, state: DashboardState) -> None:
        """Look workflow ids up in `state` (the run column)."""
        if self._workflow_of is None or self._state is not state:
            self._state = state
            runs = state.runs

            def workflow_of(run_id: str) -> str | None:
                view = runs.get(run_id)
                return None if view is None else view.run.workflow_id

            self._workflow_of = workflow_of

    _state: DashboardState | None = None

    def set_heartbeats(self, state: DashboardState | None, shown: bool) -> None:
        """Show or hide metrics samples and health checks (`HEARTBEATS`)."""
        self.show_heartbeats = shown
        self.set_filter(state, self.filter_text, self.run_filter)

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
        self._use_state(state)
        upto = self._last_seq if self.paused else None
        shown = [e for e in self._select(state.events) if upto is None or e.seq <= upto]
        if not self.paused and state.events:
            self._last_seq = state.events[-1].seq
        self.write_events(shown, measure=MAX_LINES)  # once, on a key: measure every line

    def _select(self, events: Iterable[Event]) -> list[Event]:
        run = self.run_filter
        match = self._match
        hidden = _NO_TYPES if self.show_heartbeats else HEARTBEATS
        workflow_of = self._workflow_of
        return [
            e
            for e in events
            if e.type not in hidden
            and (run is None or e.correlation_id == run)
            and (match is None or match(_filter_line(e, workflow_of)))
        ]

    def refresh_from(self, state: DashboardState) -> None:
        self._use_state(state)
        if self.paused:
            return
        new: list[Event] = []
        last = self._last_seq
        for event in reversed(state.events):  # newest first; stop at what is already shown
            if event.seq <= last:
                break
            new.append(event)
        if not new:
            return
        new.reverse()
        self._last_seq = new[-1].seq
        self.write_events(self._select(new))

    # ------------------------------------------------------------------ drawing

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        style = self.rich_style
        if index >= len(self._events):
            return Strip.blank(width, style)
        strip = self._line_strip(index, style)
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_offsets(scroll_x, index)

    def _line_strip(self, index: int, style: Style) -> Strip:
        event = self._events[index]
        selection = self.text_selection
        if selection is None:
            cached = self._strips.get(event.seq)
            if cached is not None and cached[0] == style:
                return cached[1]
        line = self._text(event)
        span = selection.get_span(index) if selection is not None else None
        if span is None:
            segments = [Segment(line, style)]
        else:
            start, end = span
            text = Text(line, no_wrap=True)
            text.stylize(style)
            text.stylize(
                self.screen.get_component_rich_style("screen--selection"),
                start,
                len(line) if end == -1 else end,
            )
            segments = list(text.render(self.app.console))
        width = cell_len(line)
        strip = Strip(segments, width)
        if selection is None:
            self._strips[event.seq] = (style, strip)
        if width > self._width:
            self._width = width
            if not self._width_pending:  # not from inside a render: after it
                self._width_pending = True
                self.call_later(self._grow_width)
        return strip

    def _grow_width(self) -> None:
        self._width_pending = False
        if self.virtual_size.width < self._width:
            self._set_virtual_size()
            if self._follow:  # a horizontal scrollbar may have appeared: the bottom moved
                self.scroll_end(animate=False, x_axis=False)

    def get_selection(self, selection: Selection) -> tuple[str, str] | None:
        return selection.extract("\n".join(self.lines)), "\n"

    def selection_updated(self, selection: Selection | None) -> None:
        self._strips.clear()
        self.refresh()


_NO_TYPES: frozenset[str] = frozenset()


def _filter_line(event: Event, workflow_of: WorkflowOf | None) -> str:
    """What the `/` filter searches: `voltui.tui.state.event_line` plus the workflow id."""
    line = st.event_line(event)
    cid = event.correlation_id
    if cid and workflow_of is not None:
        workflow = workflow_of(cid)
        if workflow:
            return f"{line} {workflow}"
    return line
