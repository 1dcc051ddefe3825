"""Cache statistics per namespace, with a sparkline of the selected namespace's hit rate."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Sparkline, Static

from voltui.engine.models import CacheStats
from voltui.tui.state import DashboardState
from voltui.tui.widgets._table import KeyedTable
from voltui.tui.widgets._util import safe


def _row(c: CacheStats) -> list[Text]:
    size = f"{c.size}/{c.max_size}" if c.max_size else str(c.size)
    return [
        safe(c.namespace, max_len=24),
        Text(str(c.hits)),
        Text(str(c.misses)),
        Text(f"{c.hit_rate:.0%}"),
        Text(size),
        Text(str(c.evictions)),
    ]


class CacheTable(KeyedTable):
    COLUMNS = ("namespace", "hits", "misses", "hit rate", "size", "evict")


class CachePanel(Vertical):
    """Table of namespaces; the sparkline follows the table cursor."""

    ALLOW_MAXIMIZE = True
    DEFAULT_CSS = """
    CachePanel CacheTable { height: 1fr; }
    CachePanel #cache-spark-label { height: 1; color: $text-muted; }
    CachePanel Sparkline { height: 2; }
    """

    def __init__(self, *, name: str | None = None, id: str | None = None) -> None:
        super().__init__(name=name, id=id)
        self._state: DashboardState | None = None

    def compose(self) -> ComposeResult:
        yield CacheTable()
        yield Static("hit rate", id="cache-spark-label")
        yield Sparkline([], summary_function=max)

    @property
    def table(self) -> CacheTable:
        return self.query_one(CacheTable)

    def refresh_from(self, state: DashboardState) -> None:
        self._state = state
        self.table.sync({ns: _row(c) for ns, c in state.cache.items()})
        self._update_spark()

    def _update_spark(self) -> None:
        if self._state is None:
            return
        ns = self.table.selected_key()
        history = list(self._state.hit_rate_history.get(ns, ())) if ns else []
        label = Text(f"hit rate: {ns}" if ns else "hit rate: no namespace yet")
        self.query_one("#cache-spark-label", Static).update(label)
        self.query_one(Sparkline).data = history

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._update_spark()
