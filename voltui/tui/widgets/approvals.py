"""The approval banner: one line under the header while approval steps wait for a person.

It names the oldest waiting step and its prompt (already cleaned by the fold) and the keys
that decide it; with several waiting it says how many. Hidden when nothing waits, so it costs
no space on a dashboard that uses no approvals.
"""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from voltui.tui.state import DashboardState, PendingApproval


class ApprovalBanner(Static):
    """`⏸ run 3f2a… step deploy awaits approval: Deploy to prod? — a approve · x reject`."""

    DEFAULT_CSS = """
    ApprovalBanner {
        dock: top; height: 1; padding: 0 1;
        background: $warning-muted; color: $foreground; display: none;
    }
    """

    def __init__(self, *, name: str | None = None, id: str | None = None) -> None:
        super().__init__("", name=name, id=id, markup=False)
        self.shown: PendingApproval | None = None
        """The approval the banner names (what `a`/`x` decide when no run is selected)."""

    def refresh_from(self, state: DashboardState, *, read_only: bool) -> None:
        pending = list(state.approvals.values())
        self.display = bool(pending)
        if not pending:
            self.shown = None
            return
        first = self.shown if self.shown in pending else pending[0]
        self.shown = first
        keys = "read-only: decide elsewhere" if read_only else "a approve · x reject"
        more = f" (+{len(pending) - 1} more)" if len(pending) > 1 else ""
        self.update(
            Content.assemble(
                ("⏸ ", "bold $warning"),
                f"run {first.run_id[:12]} step ",
                (first.step_id, "bold"),
                " awaits approval: ",
                first.prompt,
                more,
                ("  —  " + keys, "$text-muted"),
            )
        )
