"""Agent load: one keyed row per agent, cells updated in place as `agent:load` events fold in."""

from __future__ import annotations

from rich.text import Text

from voltui.engine.durations import format_duration
from voltui.engine.models import AgentLoad, Usage
from voltui.engine.usage import format_usage
from voltui.tui.state import DashboardState
from voltui.tui.widgets._table import KeyedTable
from voltui.tui.widgets._util import bar, safe

AgentSig = tuple[str, int, int, int, int, str, str, bool, float, str, str]


def _sig(a: AgentLoad, usage: Usage | None) -> AgentSig:
    """What the row shows, as plain values (see `KeyedTable.sync`)."""
    return (
        a.id,
        a.active,
        a.capacity,
        a.completed,
        a.failed,
        format_duration(a.mean_latency),
        format_usage(usage, short=True),
        a.healthy,
        a.weight,
        a.kind,
        ",".join(a.capabilities),
    )


def _cells(sig: AgentSig) -> list[Text]:
    aid, active, capacity, completed, failed, mean, llm, healthy, weight, kind, caps = sig
    return [
        safe(aid, max_len=30),
        Text(f"{active}/{capacity} {bar(active, capacity, 6)}"),
        Text(str(completed)),
        Text(str(failed)),
        Text(mean),
        Text(llm),
        Text("ok" if healthy else "SICK"),
        Text(f"{weight:g}"),
        safe(kind, max_len=12),
        safe(caps, max_len=60),
    ]


class AgentsTable(KeyedTable):
    """Who is doing the work and how loaded each agent is. `done` and `failed` count steps
    that succeeded or failed on the agent (not retried or cancelled attempts) since the engine
    started, as the border says."""

    COLUMNS = (
        "agent",
        "active",
        "done",
        "failed",
        "mean",
        "llm",
        "health",
        "weight",
        "kind",
        "capabilities",
    )

    def on_mount(self) -> None:
        # The engine keeps these counts in memory: they start again with each engine start.
        self.set_note("done/failed over kept runs")

    def refresh_from(self, state: DashboardState) -> None:
        """Rows sorted by agent id, so they never jump around as agents report load; the
        cursor stays on its agent when one comes or goes (`KeyedTable.sync`)."""
        agents, usage = state.agents, state.usage_by_agent
        self.sync(
            {aid: _sig(agents[aid], usage.get(aid)) for aid in sorted(agents)},
            _cells,
            ordered=True,
        )
