"""A step's log, worth living in: follow, wrap, search, and a line to copy.

A Line API widget (like the events log): lines are kept as cleaned plain strings and only the
rows in view are drawn, so a 2,000-line log costs what 30 rows cost. With wrap on, each line
is cut into rows of the panel's width (the row map is rebuilt on a resize or a toggle, and
extended on an append). Search is a case-insensitive regex (a literal if the pattern is not a
valid regex), every match highlighted, the current one strongest; `next_match` moves through
them. An empty log says so ("(no output)") instead of staying blank.

Lines must already be cleaned (`voltui.safetext.clean`): they are drawn as plain text, never
markup.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from typing import ClassVar

from rich.cells import cell_len, chop_cells
from rich.segment import Segment
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

NO_OUTPUT = "(no output)"


def compile_search(pattern: str | None) -> re.Pattern[str] | None:
    """A case-insensitive regex, or the pattern matched literally if it is not one."""
    if not pattern:
        return None
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error:
        return re.compile(re.escape(pattern), re.IGNORECASE)


class LogView(ScrollView, can_focus=True):
    """Plain log lines; `follow` keeps the newest in view, `wrap` folds long lines, `search`
    highlights matches and `next_match` moves between them.

    Component classes (theme colours from CSS): `log-view--match`, `log-view--current`,
    `log-view--note` (attempt separators and the empty-log placeholder).
    """

    ALLOW_SELECT = True
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "scroll_down", "Down", show=False, id="nav.down"),
        Binding("k", "scroll_up", "Up", show=False, id="nav.up"),
        Binding("g", "scroll_home", "Top", show=False, id="nav.first"),
        Binding("G", "scroll_end", "Bottom", show=False, id="nav.last"),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "log-view--match",
        "log-view--current",
        "log-view--note",
    }
    DEFAULT_CSS = """
    LogView {
        background: $surface;
        color: $foreground;
        overflow: scroll;
        scrollbar-size-horizontal: 0;
        scrollbar-size-vertical: 1;
    }
    LogView > .log-view--match { background: $warning 40%; }
    LogView > .log-view--current { background: $warning; color: $background; text-style: bold; }
    LogView > .log-view--note { color: $text-muted; text-style: italic; }
    """

    def __init__(
        self,
        *,
        max_lines: int = 2000,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.max_lines = max_lines
        self._lines: deque[str] = deque(maxlen=max_lines)
        self._notes: set[int] = set()
        """Absolute numbers of the lines that are notes (attempt separators)."""
        self._first = 0
        """Absolute number of `_lines[0]` (lines dropped off the front still count)."""
        self.auto_scroll = True
        """Follow: keep the newest line in view as lines arrive."""
        self.wrap = False
        self.empty_text = NO_OUTPUT
        """Shown when there are no lines."""
        self._width = 0
        self._rows: list[tuple[int, int, int]] = []
        """With wrap: (line index, start, end) of every row."""
        self._wrap_width = 0
        self._search: re.Pattern[str] | None = None
        self._matches: list[int] = []
        """Absolute numbers of the lines that match the search, in order."""
        self.current_match: int | None = None
        """Index into the matches of the highlighted one."""

    # ------------------------------------------------------------------ content

    @property
    def lines(self) -> list[str]:
        return list(self._lines)

    @property
    def line_count(self) -> int:
        return len(self._lines)

    def clear(self) -> None:
        self._lines.clear()
        self._notes.clear()
        self._first = 0
        self._width = 0
        self._matches = []
        self.current_match = None
        self._relayout()

    def write_lines(
        self, lines: Iterable[str], *, scroll_end: bool | None = None, note: bool = False
    ) -> None:
        """Append lines (already cleaned); `note` marks them as the viewer's own remarks."""
        new = list(lines)
        if not new:
            return
        buffer = self._lines
        start = self._first + len(buffer)
        overflow = max(0, len(buffer) + len(new) - self.max_lines)
        buffer.extend(new)
        if overflow:
            self._first += overflow
            self._notes = {n for n in self._notes if n >= self._first}
            self._matches = [n for n in self._matches if n >= self._first]
        if note:
            self._notes.update(range(start, start + len(new)))
        self._width = max(self._width, *(cell_len(line) for line in new))
        if self._search is not None:
            search = self._search.search
            self._matches += [start + i for i, line in enumerate(new) if search(line)]
        if overflow or self.wrap:
            self._relayout()
        else:
            self._set_size()
        follow = self.auto_scroll if scroll_end is None else scroll_end
        if follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    def write_note(self, text: str) -> None:
        """A line of the viewer's own (`── attempt 2 ──`), drawn muted."""
        self.write_lines([text], note=True)

    # ------------------------------------------------------------------ layout

    def _row_count(self) -> int:
        return len(self._rows) if self.wrap else len(self._lines)

    def _set_size(self) -> None:
        rows = max(1, self._row_count())
        width = self.scrollable_content_region.width if self.wrap else self._width
        self.virtual_size = Size(max(width, 1), rows)

    def _relayout(self) -> None:
        if self.wrap:
            width = max(1, self.scrollable_content_region.width)
            self._wrap_width = width
            rows: list[tuple[int, int, int]] = []
            for index, line in enumerate(self._lines):
                if not line:
                    rows.append((index, 0, 0))
                    continue
                start = 0
                for chunk in chop_cells(line, width):
                    rows.append((index, start, start + len(chunk)))
                    start += len(chunk)
            self._rows = rows
        self._set_size()
        self.refresh()

    def on_resize(self) -> None:
        if self.wrap and self.scrollable_content_region.width != self._wrap_width:
            self._relayout()
            if self.auto_scroll:
                self.scroll_end(animate=False, x_axis=False)

    def set_wrap(self, wrap: bool) -> None:
        """Fold long lines into the panel's width, or keep one row per line."""
        top = self._line_at_row(int(self.scroll_y))
        self.wrap = wrap
        self.scroll_x = 0
        self._relayout()
        if self.auto_scroll:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        elif top is not None:
            self.scroll_to(y=self._row_of_line(top), animate=False, immediate=True)

    def _line_at_row(self, row: int) -> int | None:
        if self.wrap:
            return self._rows[row][0] if 0 <= row < len(self._rows) else None
        return row if 0 <= row < len(self._lines) else None

    def _row_of_line(self, index: int) -> int:
        if not self.wrap:
            return index
        for row, (line, _start, _end) in enumerate(self._rows):
            if line >= index:
                return row
        return max(0, len(self._rows) - 1)

    # ------------------------------------------------------------------ search

    @property
    def search_pattern(self) -> str | None:
        return None if self._search is None else self._search.pattern

    @property
    def match_count(self) -> int:
        return len(self._matches)

    def search(self, pattern: str | None) -> int:
        """Highlight the lines matching `pattern` and go to the first match at or after the
        top of the view; how many lines match."""
        self._search = compile_search(pattern)
        if self._search is None:
            self._matches = []
            self.current_match = None
            self.refresh()
            return 0
        search = self._search.search
        self._matches = [self._first + i for i, line in enumerate(self._lines) if search(line)]
        self.current_match = None
        if self._matches:
            top = self._line_at_row(int(self.scroll_y)) or 0
            first = next(
                (n for n, line in enumerate(self._matches) if line - self._first >= top), 0
            )
            self._go_to_match(first)
        self.refresh()
        return len(self._matches)

    def next_match(self, step: int = 1) -> bool:
        """Move to the next (`step=1`) or previous (`-1`) match, wrapping around."""
        if not self._matches:
            return False
        current = -1 if self.current_match is None and step > 0 else (self.current_match or 0)
        self._go_to_match((current + step) % len(self._matches))
        return True

    def _go_to_match(self, n: int) -> None:
        self.current_match = n
        self.auto_scroll = False  # looking at a match: stop following
        index = self._matches[n] - self._first
        row = self._row_of_line(index)
        height = max(1, self.scrollable_content_region.height)
        if not self.scroll_y <= row < self.scroll_y + height:
            self.scroll_to(y=max(0, row - height // 2), animate=False, immediate=True)
        self.refresh()

    def current_line(self) -> str | None:
        """The current match's line, else the newest line in view (what `y` copies)."""
        if self.current_match is not None and self._matches:
            index = self._matches[self.current_match] - self._first
            if 0 <= index < len(self._lines):
                return self._lines[index]
        if not self._lines:
            return None
        bottom = int(self.scroll_y) + max(1, self.scrollable_content_region.height) - 1
        index = self._line_at_row(min(bottom, self._row_count() - 1))
        return self._lines[index] if index is not None else None

    # ------------------------------------------------------------------ drawing

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        row = scroll_y + y
        width = self.scrollable_content_region.width
        style = self.rich_style
        if not self._lines:
            if y == 0:
                note = self.get_component_rich_style("log-view--note")
                return Strip([Segment(self.empty_text, style + note)]).crop_extend(0, width, style)
            return Strip.blank(width, style)
        if self.wrap:
            if row >= len(self._rows):
                return Strip.blank(width, style)
            index, start, end = self._rows[row]
        else:
            if row >= len(self._lines):
                return Strip.blank(width, style)
            index, start, end = row, 0, len(self._lines[row])
        line = self._lines[index]
        text = Text(line[start:end], style=style, no_wrap=True, end="")
        absolute = self._first + index
        if absolute in self._notes:
            text.stylize(self.get_component_rich_style("log-view--note"))
        if self._search is not None and self._matches:
            current = self._matches[self.current_match] if self.current_match is not None else None
            mark = self.get_component_rich_style(
                "log-view--current" if absolute == current else "log-view--match"
            )
            for m in self._search.finditer(line):
                a, b = max(m.start(), start), min(m.end(), end)
                if a < b:
                    text.stylize(mark, a - start, b - start)
        segments = list(text.render(self.app.console))
        strip = Strip(segments, text.cell_len)
        x = 0 if self.wrap else scroll_x
        return strip.crop_extend(x, x + width, style)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self.refresh()
