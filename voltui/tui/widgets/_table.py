"""A DataTable with keyed rows that are updated cell by cell, never rebuilt per refresh."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

Sig = TypeVar("Sig", bound=Hashable)


class KeyedTable(DataTable[Text]):
    """Rows keyed by an id; `sync` touches only the rows, and in them the cells, that changed.

    Cells are always `Text`, so names and messages from workflows are never read as markup
    (a plain `str` cell would be).
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
        for label in self.COLUMNS:
            self.add_column(label, key=label)
        self._sigs: dict[str, Hashable] = {}
        self._cells: dict[str, list[Text]] = {}

    def sync(
        self,
        rows: Mapping[str, Sig],
        render: Callable[[Sig], list[Text]],
        *,
        ordered: bool = False,
    ) -> None:
        """Make the table show `rows`: row key -> signature, a tuple of the plain values the row
        shows (`render` turns one into the row's cells). A row whose signature is unchanged
        costs a comparison: no `Text` is built and nothing is repainted. With `ordered`, a
        change of row order rebuilds the table (keeping the cursor on the same key); that
        happens only when rows come or go."""
        current = [k.value for k in self.rows]
        if ordered and current != list(rows):
            self._rebuild(rows, render)
            return
        sigs = self._sigs
        for key in current:
            if key is not None and key not in rows:
                self.remove_row(key)
                sigs.pop(key, None)
                self._cells.pop(key, None)
        for key, sig in rows.items():
            if key not in self.rows:
                self._add(key, sig, render)
                continue
            if sigs.get(key) == sig:
                continue
            sigs[key] = sig
            cells = render(sig)
            old = self._cells.get(key)
            for n, (label, cell) in enumerate(zip(self.COLUMNS, cells, strict=True)):
                if old is None or old[n] != cell:
                    self.update_cell(key, label, cell, update_width=True)
            self._cells[key] = cells

    def _add(self, key: str, sig: Hashable, render: Callable[[Sig], list[Text]]) -> None:
        cells = render(sig)  # type: ignore[arg-type]
        self.add_row(*cells, key=key)
        self._sigs[key] = sig
        self._cells[key] = cells

    def _rebuild(self, rows: Mapping[str, Sig], render: Callable[[Sig], list[Text]]) -> None:
        selected = self.selected_key()
        self.clear()
        self._sigs.clear()
        self._cells.clear()
        for key, sig in rows.items():
            self._add(key, sig, render)
        if selected is not None and selected in rows:
            self.move_cursor(row=self.get_row_index(selected), scroll=False)

    def selected_key(self) -> str | None:
        """Key of the row under the cursor, if any."""
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:  # cursor outside the table while it is being rebuilt
            return None
        return key.value
