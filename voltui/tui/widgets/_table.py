"""A DataTable with keyed rows that are updated cell by cell, never rebuilt per refresh."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable


class KeyedTable(DataTable[Text]):
    """Rows keyed by an id; `sync` touches only the cells whose text changed.

    Cells are always `Text`, so names and messages from workflows are never read as markup
    (a plain `str` cell would be).
    """

    COLUMNS: Sequence[str] = ()

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, cursor_type="row")
        for label in self.COLUMNS:
            self.add_column(label, key=label)

    def sync(self, rows: dict[str, list[Text]], *, ordered: bool = False) -> None:
        """Make the table show `rows`. With `ordered`, a change of row order rebuilds the table
        (keeping the cursor on the same key); that happens only when rows come or go."""
        current = [k.value for k in self.rows]
        if ordered and current != list(rows):
            self._rebuild(rows)
            return
        for key in current:
            if key not in rows:
                self.remove_row(key)
        for key, cells in rows.items():
            if key in self.rows:
                for label, cell in zip(self.COLUMNS, cells, strict=True):
                    if self.get_cell(key, label) != cell:
                        self.update_cell(key, label, cell, update_width=True)
            else:
                self.add_row(*cells, key=key)

    def _rebuild(self, rows: dict[str, list[Text]]) -> None:
        selected = self.selected_key()
        self.clear()
        for key, cells in rows.items():
            self.add_row(*cells, key=key)
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
