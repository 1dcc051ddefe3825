"""Component health: one keyed row per component, cells updated in place."""

from __future__ import annotations

from rich.text import Text

from voltui.engine.models import ComponentStatus
from voltui.tui.state import DashboardState
from voltui.tui.widgets._table import KeyedTable
from voltui.tui.widgets._util import clock, safe


def _row(c: ComponentStatus) -> list[Text]:
    latency = "-" if c.latency is None else f"{c.latency * 1000:.0f}ms"
    return [
        safe(c.name, max_len=30),
        Text(str(c.status)),
        Text(latency),
        Text(clock(c.last_check)),
        safe(c.message, max_len=120),
    ]


class HealthTable(KeyedTable):
    """Health of the engine's components, as the watcher last saw them."""

    COLUMNS = ("component", "status", "latency", "checked", "message")

    def refresh_from(self, state: DashboardState) -> None:
        self.sync({cid: _row(c) for cid, c in state.components.items()})
