"""KeyedTable's "N new above": counted across rebuilds of its rows and of its columns."""

from __future__ import annotations

from rich.text import Text
from textual.app import App, ComposeResult

from voltui.tui.widgets._table import KeyedTable


class Table(KeyedTable):
    COLUMNS = ("id", "note")


def cells(sig: tuple[str, str]) -> list[Text]:
    return [Text(sig[0]), Text(sig[1])]


class One(App[None]):
    def compose(self) -> ComposeResult:
        yield Table()


def rows(*keys: str) -> dict[str, tuple[str, str]]:
    return {k: (k, f"row {k}") for k in keys}


async def test_arrivals_above_the_cursor_survive_rebuilds() -> None:
    app = One()
    async with app.run_test(size=(60, 20)) as pilot:
        table = app.query_one(Table)
        table.sync(rows("c", "b", "a"), cells, ordered=True)
        await pilot.pause()
        table.move_cursor(row=2)  # on "a", the oldest
        table.sync(rows("d", "c", "b", "a"), cells, ordered=True)
        await pilot.pause()
        assert table.selected_key() == "a" and table.new_above == 1
        # The columns are rebuilt (a responsive table narrowing): the cursor passes row 0.
        assert table.show_columns(["id"])
        table.sync(rows("e", "d", "c", "b", "a"), cells, ordered=True)
        await pilot.pause()
        assert table.selected_key() == "a" and table.new_above == 2
        # A plain re-order keeps the count; going to the top clears it.
        table.sync(rows("e", "c", "d", "b", "a"), cells, ordered=True)
        await pilot.pause()
        assert table.new_above == 2 and "2 new above" in str(table.border_subtitle)
        table.move_cursor(row=0)
        await pilot.pause()
        assert table.new_above == 0 and "new above" not in str(table.border_subtitle)
