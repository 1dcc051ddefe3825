"""A DataTable with keyed rows that are updated cell by cell, never rebuilt per refresh.

Also the keys operators expect in every table (k9s, lazygit): `j`/`k` move the cursor, `g`/`Home`
go to the first row and `G`/`End` to the last (DataTable's own Home/End scroll sideways), and no
horizontal scrollbar row: a table wider than its panel still scrolls sideways with the arrow
keys, but does not spend a line of a small panel on a scrollbar.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import ClassVar, TypeVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

from voltui import states

Sig = TypeVar("Sig", bound=Hashable)

NAV_BINDINGS: list[BindingType] = [
    Binding("j", "cursor_down", "Down", show=False, id="nav.down"),
    Binding("k", "cursor_up", "Up", show=False, id="nav.up"),
    Binding("g,home", "scroll_top", "First row", show=False, id="nav.first"),
    Binding("G,end", "scroll_bottom", "Last row", show=False, id="nav.last"),
]
"""Cursor keys for any DataTable (the run detail's steps table uses them too)."""


class NavTable(DataTable[Text]):
    """A row-cursor DataTable with the navigation keys of `NAV_BINDINGS`, state colours as
    component classes (`state--failed`, ... from `voltui.states`), and no horizontal
    scrollbar line."""

    BINDINGS: ClassVar[list[BindingType]] = NAV_BINDINGS
    COMPONENT_CLASSES: ClassVar[set[str]] = set(states.COMPONENT_CLASSES)
    DEFAULT_CSS = (
        "NavTable { scrollbar-size-horizontal: 0; scrollbar-size-vertical: 1; }\n"
        + states.component_css("NavTable")
    )

    def state_styles(self) -> dict[str, object]:
        """Each state's rich Style from the theme (for `Text` cells, which cannot use theme
        variables). Part of a row's signature, so a theme change repaints the rows."""
        return {
            name: self.get_component_rich_style(states.component_class(name), partial=True)
            for name in states.STATES
        }


class KeyedTable(NavTable):
    """Rows keyed by an id; `sync` touches only the rows, and in them the cells, that changed.

    Cells are always `Text`, so names and messages from workflows are never read as markup
    (a plain `str` cell would be).

    `COLUMNS` lists every column a row renders; `show_columns` picks the ones shown (the runs
    table drops its bar and times when narrow). When rows come in above the cursor (an ordered
    table, cursor not on the first row), the border subtitle says "N new above" until the
    cursor goes back to the top.
    """

    COLUMNS: Sequence[str] = ()

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        """Textual's DataTable measures new rows' widths on idle but keeps lines it cached at
        the old widths, so a repaint in between showed cut-off columns until the next change.
        Clearing the caches once the widths are known fixes that."""
        new_rows = list(new_rows)
        super()._update_dimensions(new_rows)
        if new_rows:
            self._clear_caches()
            self.refresh()

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, cursor_type="row")
        self._shown: tuple[int, ...] = tuple(range(len(self.COLUMNS)))
        self._widths: tuple[int | None, ...] = (None,) * len(self.COLUMNS)
        for label in self.COLUMNS:
            self.add_column(label, key=label)
        self._sigs: dict[str, Hashable] = {}
        self._cells: dict[str, list[Text]] = {}
        self.new_above = 0
        """Rows that arrived above the cursor since it was last on the first row."""
        self._rebuilding = False
        self.note = ""
        """A standing remark for the border subtitle (after "N new above")."""

    # ------------------------------------------------------------------ columns

    @property
    def shown_columns(self) -> list[str]:
        return [self.COLUMNS[i] for i in self._shown]

    def show_columns(self, shown: Sequence[str], widths: Mapping[str, int] | None = None) -> bool:
        """Show only `shown` (in `COLUMNS` order), each at its width in `widths` (others size
        to their content). Rebuilds the table when the choice changed; whether it did."""
        index = tuple(i for i, label in enumerate(self.COLUMNS) if label in shown)
        sizes = tuple((widths or {}).get(self.COLUMNS[i]) for i in index)
        if index == self._shown and sizes == self._widths:
            return False
        selected = self.selected_key()
        self._shown, self._widths = index, sizes
        self._known = [k.value for k in self.rows]  # for the next sync: which rows are new
        self._rebuilding = True  # the cursor's trip to row 0 is not the operator's
        try:
            self.clear(columns=True)
        finally:
            self._rebuilding = False
        for i, width in zip(index, sizes, strict=True):
            label = self.COLUMNS[i]
            self.add_column(label, key=label, width=width)
        self._sigs.clear()
        self._cells.clear()
        self._reselect = selected
        return True

    _reselect: str | None = None
    _known: list[str | None] | None = None
    _rebuilding: bool = False

    # ------------------------------------------------------------------ rows

    def sync(
        self,
        rows: Mapping[str, Sig],
        render: Callable[[Sig], list[Text]],
        *,
        ordered: bool = False,
    ) -> None:
        """Make the table show `rows`: row key -> signature, a tuple of the plain values the row
        shows (`render` turns one into the row's cells, one per `COLUMNS` entry). A row whose
        signature is unchanged costs a comparison: no `Text` is built and nothing is
        repainted. With `ordered`, a change of row order rebuilds the table (keeping the cursor
        on the same key); that happens only when rows come or go, or the order changes."""
        current = [k.value for k in self.rows]
        if ordered and current != list(rows):
            self._rebuild(rows, render, current)
            return
        sigs = self._sigs
        for key in current:
            if key is not None and key not in rows:
                self.remove_row(key)
                sigs.pop(key, None)
                self._cells.pop(key, None)
        shown = self.shown_columns
        for key, sig in rows.items():
            if key not in self.rows:
                self._add(key, sig, render)
                continue
            if sigs.get(key) == sig:
                continue
            sigs[key] = sig
            cells = self._pick(render(sig))
            old = self._cells.get(key)
            for n, (label, cell) in enumerate(zip(shown, cells, strict=True)):
                if old is None or old[n] != cell:
                    self.update_cell(key, label, cell, update_width=True)
            self._cells[key] = cells

    def _pick(self, cells: list[Text]) -> list[Text]:
        shown = self._shown
        return cells if len(shown) == len(cells) else [cells[i] for i in shown]

    def _add(self, key: str, sig: Hashable, render: Callable[[Sig], list[Text]]) -> None:
        cells = self._pick(render(sig))  # type: ignore[arg-type]
        self.add_row(*cells, key=key)
        self._sigs[key] = sig
        self._cells[key] = cells

    def _rebuild(
        self,
        rows: Mapping[str, Sig],
        render: Callable[[Sig], list[Text]],
        current: list[str | None],
    ) -> None:
        selected = self.selected_key() or self._reselect
        self._reselect = None
        if not current and self._known:  # the columns were just rebuilt: rows were there
            current = self._known
        self._known = None
        # `clear()` puts the cursor on row 0 for a moment, which would look like the operator
        # went back to the top and forget the arrivals counted so far.
        above, self.new_above = self.new_above, 0
        self._rebuilding = True
        try:
            self.clear()
            self._sigs.clear()
            self._cells.clear()
            for key, sig in rows.items():
                self._add(key, sig, render)
            if selected is not None and selected in rows:
                row = self.get_row_index(selected)
                self.move_cursor(row=row, scroll=False)
                if row > 0:
                    # Rows that were not there before and now sit above the cursor: arrivals.
                    known = set(current)
                    new = sum(1 for key in list(rows)[:row] if key not in known) if known else 0
                    self.new_above = above + new
        finally:
            self._rebuilding = False
        self._show_subtitle()

    def watch_cursor_coordinate(self, old: object, new: object) -> None:
        super().watch_cursor_coordinate(old, new)  # type: ignore[arg-type]
        if self.cursor_row == 0 and self.new_above and not self._rebuilding:
            self.new_above = 0
            self._show_subtitle()

    def set_note(self, note: str) -> None:
        self.note = note
        self._show_subtitle()

    def _show_subtitle(self) -> None:
        parts = [f"↑ {self.new_above} new above"] if self.new_above else []
        if self.note:
            parts.append(self.note)
        self.border_subtitle = Text("  ".join(parts)) if parts else ""

    def selected_key(self) -> str | None:
        """Key of the row under the cursor, if any."""
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:  # cursor outside the table while it is being rebuilt
            return None
        return key.value
