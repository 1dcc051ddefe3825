"""The top line: aggregate health, how the dashboard reaches the engine (embedded or attached),
uptime, active runs, event rate and engine resources.

While the engine is out of reach (`DashboardState.stale`) the health is shown as the last one
known (`? was healthy`), followed by how long ago the figures were last current; uptime and
durations stand still (the app's clock is stopped at that moment)."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from voltui.engine.durations import format_duration
from voltui.engine.models import HealthStatus
from voltui.engine.usage import format_usage
from voltui.tui.state import DashboardState
from voltui.tui.widgets._util import megabytes, mono_now, wall_now

HEALTH_STYLE = {
    HealthStatus.HEALTHY: "bold $success",
    HealthStatus.DEGRADED: "bold $warning",
    HealthStatus.UNHEALTHY: "bold $error",
    HealthStatus.UNKNOWN: "bold $secondary",
}
HEALTH_MARK = {
    HealthStatus.HEALTHY: "●",
    HealthStatus.DEGRADED: "▲",
    HealthStatus.UNHEALTHY: "✗",
    HealthStatus.UNKNOWN: "?",
}


LINK_TEXT = {
    "connecting": ("  CONNECTING", "bold $warning"),
    "reconnecting": ("  RECONNECTING", "bold $warning"),
    "closed": ("  DISCONNECTED", "bold $error"),
}


def _link(embedded: bool, connection: str | None) -> tuple[str, str]:
    """How the engine is reached; a remote link that is down is loud, since the figures are
    then stale until it catches up."""
    if embedded or connection in (None, "embedded"):
        return ("  embedded" if embedded else "  attached", "$text-muted")
    return LINK_TEXT.get(connection, ("  attached", "$text-muted"))


def _ago(seconds: float) -> str:
    """Whole seconds (the header changes once a second), then minutes and hours."""
    seconds = max(0.0, seconds)
    return f"{int(seconds)}s" if seconds < 60 else format_duration(seconds)


class HeaderBar(Static):
    """One line of aggregate figures; the health word carries the meaning, colour only adds."""

    DEFAULT_CSS = """
    HeaderBar { height: 1; background: $panel; color: $foreground; padding: 0 1; }
    """

    def __init__(self, *, name: str | None = None, id: str | None = None) -> None:
        super().__init__(name=name, id=id)
        self._last = Content("")

    def render_state(
        self,
        state: DashboardState,
        *,
        read_only: bool = False,
        embedded: bool = True,
        connection: str | None = None,
    ) -> Content:
        """Build the line; kept separate from `refresh_from` so tests can read it."""
        health = HealthStatus(state.health)
        uptime = format_duration(max(0.0, wall_now(self) - state.started_at))
        parts: list[str | Content | tuple[str, str]] = [("voltui ", "bold")]
        if state.stale_since is not None:
            ago = _ago(mono_now(self) - state.stale_since)
            parts += [
                (f"? was {health.value}", "$text-muted"),
                _link(embedded, connection),
                (f"  last update {ago} ago", "bold $warning"),
            ]
        else:
            parts += [
                (f"{HEALTH_MARK[health]} {health.value}", HEALTH_STYLE[health]),
                _link(embedded, connection),
            ]
        parts += [
            f"  up {uptime}",
            f"  runs {state.active_runs()} active",
            f"  {state.events_per_second:.1f} ev/s",
        ]
        usage = state.usage
        if usage.calls:  # only once the engine has made an LLM call
            parts.append(f"  llm {format_usage(usage)}")
        if state.metrics is not None:
            m = state.metrics
            parts.append(
                f"  cpu {m.process_cpu_percent:.0f}%  rss {megabytes(m.process_rss_bytes)}"
            )
        if read_only:
            parts.append(("  READ-ONLY", "bold $warning"))
        return Content.assemble(*parts)

    def refresh_from(
        self,
        state: DashboardState,
        *,
        read_only: bool = False,
        embedded: bool = True,
        connection: str | None = None,
    ) -> None:
        content = self.render_state(
            state, read_only=read_only, embedded=embedded, connection=connection
        )
        if content.plain == self._last.plain and content.spans == self._last.spans:
            return
        self._last = content
        # One line whatever it says: no layout pass (which would redraw every panel).
        self.update(content, layout=False)
