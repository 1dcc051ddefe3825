"""Workflows (`w`): every workflow the engine knows, how its recent runs went, and when it runs
next; `enter` starts the highlighted one.

The catalogue comes from `EngineAPI.list_workflows` (once per opening); the run figures come from
the dashboard's own state (the runs it keeps, newest first), recomputed every couple of seconds
in one pass over those runs. A schedule is shown when the engine reports one
(`WorkflowInfo.schedules`, each with `next_fire_at`, `paused` and `spec`); an engine without
schedules shows `-`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Static

from voltui import states
from voltui.engine.api import EngineAPI, WorkflowInfo
from voltui.engine.durations import format_duration
from voltui.engine.models import Run, RunState
from voltui.safetext import clean
from voltui.tui.calls import engine_call
from voltui.tui.state import DashboardState
from voltui.tui.widgets._table import KeyedTable
from voltui.tui.widgets._util import ago, wall_now

RECENT = 20
"""Finished runs per workflow behind the success rate and the mean duration."""
REFRESH_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class WorkflowStats:
    """How a workflow's recent runs went (from the runs the dashboard keeps)."""

    last: Run | None = None
    finished: int = 0
    """Finished runs counted (at most `RECENT`)."""
    succeeded: int = 0
    mean_duration: float | None = None

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.finished if self.finished else None


def workflow_stats(runs: Iterable[Run], recent: int = RECENT) -> dict[str, WorkflowStats]:
    """Per workflow id: its newest run, and over its `recent` newest finished runs the share
    that succeeded and their mean duration. One pass over the runs, then a sort per workflow."""
    by_workflow: dict[str, list[Run]] = {}
    for run in runs:
        by_workflow.setdefault(run.workflow_id, []).append(run)
    out: dict[str, WorkflowStats] = {}
    for workflow_id, group in by_workflow.items():
        group.sort(key=lambda r: r.created_at, reverse=True)
        finished = [r for r in group if r.state.finished][:recent]
        durations = [
            r.finished_at - r.started_at
            for r in finished
            if r.started_at is not None and r.finished_at is not None
        ]
        out[workflow_id] = WorkflowStats(
            last=group[0],
            finished=len(finished),
            succeeded=sum(1 for r in finished if r.state is RunState.SUCCEEDED),
            mean_duration=sum(durations) / len(durations) if durations else None,
        )
    return out


def next_fire(workflow: WorkflowInfo, now: float) -> str:
    """When the workflow next runs on a schedule: `in 4m (09:35)`, `paused`, or `-` (no
    schedule, or an engine that does not report them)."""
    schedules: Sequence[Any] = getattr(workflow, "schedules", None) or ()
    if not schedules:
        return "-"
    times = [
        s.next_fire_at
        for s in schedules
        if not getattr(s, "paused", False) and getattr(s, "next_fire_at", None) is not None
    ]
    if not times:
        return "paused" if all(getattr(s, "paused", False) for s in schedules) else "-"
    at = min(times)
    wait = max(0.0, at - now)
    if time.localtime(at)[:3] != time.localtime(now)[:3]:
        return time.strftime("%b %d %H:%M", time.localtime(at))
    return f"in {format_duration(wait)} ({time.strftime('%H:%M', time.localtime(at))})"


# (id, name, last state, last started, success, mean, next, style epoch)
WorkflowSig = tuple[str, str, str | None, str, str, str, str, int]


class WorkflowsTable(KeyedTable):
    """One row per workflow, in catalogue order."""

    COLUMNS = ("workflow", "name", "last run", "started", "success", "mean", "next")

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._styles: dict[str, Any] = {}

    def render_row(self, sig: WorkflowSig) -> list[Text]:
        wid, name, last, started, success, mean, upcoming, _epoch = sig
        last_cell = Text(states.label(last), style=self._styles.get(last)) if last else Text("-")
        return [
            Text(wid),
            Text(name, overflow="ellipsis", no_wrap=True),
            last_cell,
            Text(started),
            Text(success),
            Text(mean),
            Text(upcoming),
        ]

    def show(self, workflows: Sequence[WorkflowInfo], state: DashboardState | None) -> None:
        self._styles = self.state_styles()
        now = wall_now(self)
        stats = workflow_stats(v.run for v in state.runs.values()) if state is not None else {}
        rows: dict[str, WorkflowSig] = {}
        for wf in workflows:
            st = stats.get(wf.id, WorkflowStats())
            rate = st.success_rate
            last = st.last
            rows[wf.id] = (
                clean(wf.id, max_len=40),
                clean(wf.name, max_len=60),
                str(last.state) if last is not None else None,
                ago(last.started_at or last.created_at, now) if last is not None else "-",
                "-" if rate is None else f"{rate:.0%} of {st.finished}",
                format_duration(st.mean_duration),
                next_fire(wf, now),
                hash(tuple(self._styles.items())),
            )
        self.sync(rows, self.render_row, ordered=True)


class WorkflowsScreen(Screen[None]):
    """The workflow catalogue with recent results; `enter` or `s` starts the highlighted one
    (with its inputs form when it has inputs), `escape` goes back."""

    DEFAULT_CSS = """
    WorkflowsScreen { layout: vertical; }
    WorkflowsScreen #workflows-title { height: 1; padding: 0 1; background: $panel; }
    WorkflowsScreen WorkflowsTable { height: 1fr; border: round $accent; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="workflows.back"),
        Binding("enter,s", "start", "Start", id="workflows.start"),
    ]

    def __init__(self, engine: EngineAPI) -> None:
        super().__init__()
        self.engine = engine
        self.workflows: list[WorkflowInfo] = []

    def compose(self) -> ComposeResult:
        yield Static(Text("Workflows: loading…"), id="workflows-title")
        table = WorkflowsTable(id="workflows-table")
        table.border_title = "Workflows"
        table.border_subtitle = f"success and mean over the last {RECENT} finished runs"
        yield table
        yield Footer()

    @property
    def table(self) -> WorkflowsTable:
        return self.query_one(WorkflowsTable)

    async def on_mount(self) -> None:
        self.table.focus()
        workflows = await engine_call(self.app, self.engine.list_workflows())
        self.workflows = workflows or []
        n = len(self.workflows)
        self.query_one("#workflows-title", Static).update(
            Text(f"{n} workflow{'s' if n != 1 else ''}  (enter or s: start, escape: back)")
        )
        self._refresh()
        self.set_interval(REFRESH_SECONDS, self._refresh, name="workflows-refresh")

    def _refresh(self) -> None:
        self.table.show(self.workflows, getattr(self.app, "state", None))

    def selected(self) -> WorkflowInfo | None:
        key = self.table.selected_key()
        return next((wf for wf in self.workflows if wf.id == key), None)

    def on_data_table_row_selected(self, event: KeyedTable.RowSelected) -> None:
        event.stop()
        self.action_start()

    def action_back(self) -> None:
        self.dismiss(None)

    def action_start(self) -> None:
        wf = self.selected()
        if wf is None:
            return
        app: Any = self.app
        self.dismiss(None)
        if wf.inputs:
            app.action_start(wf.id)
        else:
            app.start_workflow(wf.id)
