"""Runs, newest first (fixed-width columns first, the workflow name last, so narrow panels
still show state and progress); the cursor row is the selected run whose DAG the dag panel shows."""

from __future__ import annotations

import time

from rich.text import Text

from voltui.engine.durations import format_duration
from voltui.safetext import clean
from voltui.tui.state import DashboardState, RunView
from voltui.tui.widgets._table import KeyedTable
from voltui.tui.widgets._util import bar, safe, wall_now

STATE_MARK = {
    "queued": "…",
    "running": "▶",
    "succeeded": "✓",
    "failed": "✗",
    "cancelled": "■",
    "interrupted": "!",
}


RunSig = tuple[str, str, int, int, str, str, str]


def _duration(view: RunView, now: float) -> float | None:
    """The run's duration, up to `now` while it is still going."""
    run = view.run
    if run.started_at is None:
        return None
    end = run.finished_at if run.finished_at is not None else now
    return max(0.0, end - run.started_at)


def _sig(view: RunView, now: float) -> RunSig:
    """What the row shows, as plain values (see `KeyedTable.sync`)."""
    run = view.run
    return (
        clean(run.id[:8]),
        str(run.state),
        run.steps_done,
        run.steps_total or len(view.steps),
        format_duration(_duration(view, now)),
        _started(run.started_at or run.created_at),
        run.workflow_name or run.workflow_id,
    )


def _started(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%H:%M:%S", time.localtime(ts))


def _cells(sig: RunSig) -> list[Text]:
    short_id, state, done, total, took, started, name = sig
    return [
        Text(short_id),
        Text(f"{STATE_MARK.get(state, '?')} {state}"),
        Text(f"{done}/{total} {bar(done, total, 5)}"),
        Text(took),
        Text(started),
        safe(name, max_len=40),
    ]


class RunsTable(KeyedTable):
    """Recent and active runs. Row keys are full run ids."""

    COLUMNS = ("run", "state", "progress", "time", "started", "workflow")

    def refresh_from(self, state: DashboardState) -> None:
        now = wall_now(self)
        rows = {v.run.id: _sig(v, now) for v in state.runs_newest_first()}
        self.sync(rows, _cells, ordered=True)
