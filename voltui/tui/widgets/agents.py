"""Agent load: one keyed row per agent, cells updated in place as `agent:load` events fold in."""

from __future__ import annotations

from rich.text import Text

from voltui.engine.durations import format_duration
from voltui.engine.models import AgentLoad
from voltui.tui.state import DashboardState
from voltui.tui.widgets._table import KeyedTable
from voltui.tui.widgets._util import bar, safe


def _row(a: AgentLoad) -> list[Text]:
    return [
        safe(a.id, max_len=30),
        Text(f"{a.active}/{a.capacity} {bar(a.active, a.capacity, 6)}"),
        Text(str(a.completed)),
        Text(str(a.failed)),
        Text(format_duration(a.mean_latency)),
        Text("ok" if a.healthy else "SICK"),
        Text(f"{a.weight:g}"),
        safe(a.kind, max_len=12),
    ]


class AgentsTable(KeyedTable):
    """Who is doing the work and how loaded each agent is."""

    COLUMNS = ("agent", "active", "done", "failed", "mean", "health", "weight", "kind")

    def refresh_from(self, state: DashboardState) -> None:
        """Rows sorted by agent id, so they never jump around as agents report load; the
        cursor stays on its agent when one comes or goes (`KeyedTable.sync`)."""
        agents = state.agents
        self.sync({aid: _row(agents[aid]) for aid in sorted(agents)}, ordered=True)
