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

CacheSig = tuple[str, int, int, float, int, int, int]


def _sig(c: CacheStats) -> CacheSig:
    """What the row shows, as plain values (see `KeyedTable.sync`)."""
    return (c.namespace, c.hits, c.misses, c.hit_rate, c.size, c.max_size, c.evictions)


def _cells(sig: CacheSig) -> list[Text]:
    namespace, hits, misses, hit_rate, size, max_size, evictions = sig
    return [
        safe(namespace, max_len=24),
        Text(str(hits)),
        Text(str(misses)),
        Text(f"{hit_rate:.0%}"),
        Text(f"{size}/{max_size}" if max_size else str(size)),
        Text(str(evictions)),
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
        self._label = ""

    def compose(self) -> ComposeResult:
        yield CacheTable()
        yield Static("hit rate", id="cache-spark-label")
        yield Sparkline([], summary_function=max)

    @property
    def table(self) -> CacheTable:
        return self.query_one(CacheTable)

    def refresh_from(self, state: DashboardState) -> None:
        self._state = state
        self.table.sync({ns: _sig(c) for ns, c in state.cache.items()}, _cells)
        self._update_spark()

    def _update_spark(self) -> None:
        if self._state is None:
            return
        ns = self.table.selected_key()
        history = list(self._state.hit_rate_history.get(ns, ())) if ns else []
        label = f"hit rate: {ns}" if ns else "hit rate: no namespace yet"
        if label != self._label:  # one line: no layout pass needed
            self._label = label
            self.query_one("#cache-spark-label", Static).update(Text(label), layout=False)
        spark = self.query_one(Sparkline)
        if list(spark.data or ()) != history:
            spark.data = history

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._update_spark()
