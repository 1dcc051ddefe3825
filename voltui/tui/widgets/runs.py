"""Runs, newest first (fixed-width columns first, the workflow name last, so narrow panels
still show state and progress); the cursor row is the selected run whose DAG the dag panel shows."""

from __future__ import annotations

from rich.text import Text

from voltui.engine.durations import format_duration
from voltui.tui.state import DashboardState, RunView
from voltui.tui.widgets._table import KeyedTable
from voltui.tui.widgets._util import bar, safe

STATE_MARK = {
    "queued": "…",
    "running": "▶",
    "succeeded": "✓",
    "failed": "✗",
    "cancelled": "■",
    "interrupted": "!",
}


def _row(view: RunView) -> list[Text]:
    run = view.run
    state = str(run.state)
    total = run.steps_total or len(view.steps)
    return [
        Text(run.id[:8]),
        Text(f"{STATE_MARK.get(state, '?')} {state}"),
        Text(f"{run.steps_done}/{total} {bar(run.steps_done, total, 5)}"),
        Text(format_duration(run.duration)),
        safe(run.workflow_name or run.workflow_id, max_len=40),
    ]


class RunsTable(KeyedTable):
    """Recent and active runs. Row keys are full run ids."""

    COLUMNS = ("run", "state", "progress", "time", "workflow")

    def refresh_from(self, state: DashboardState) -> None:
        self.sync({v.run.id: _row(v) for v in state.runs_newest_first()}, ordered=True)
