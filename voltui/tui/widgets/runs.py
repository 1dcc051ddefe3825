"""Runs, newest first: the table an operator works in.

Identity first: the run id, the workflow and the state always show, whatever the panel's width;
the progress bar gives way first, then the start time, then the duration, then the step count
(`layout`). The workflow column takes the width left, so nothing is cut while there is room and
no horizontal scrollbar appears.

Progress shows how steps ended, not just that they did: `4/6` counts succeeded steps, and the
bar has a segment per outcome (`█` succeeded, `▓` failed, `▒` cancelled or skipped, `░` not yet),
with `✗n` / `■n` after it, so a cancelled run reads `0/3 ▒▒▒▒▒ ■3`, never `3/3 █████`.

Keys (on the table): `/` filters (regex over id, workflow and state, as for events), `e` shows
failed runs only, `o` cycles the order (started, duration, state), `u` jumps to the run a replay
was made from (`↺ 5aa3ce4b` in the workflow column). The cursor row is the selected run whose
DAG the dag panel shows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

from rich.text import Text
from textual.binding import Binding, BindingType

from voltui import states
from voltui.engine.durations import format_duration
from voltui.engine.models import RunState
from voltui.engine.usage import format_usage
from voltui.safetext import clean
from voltui.tui.state import DashboardState, Progress, RunView, compile_filter
from voltui.tui.widgets._table import NAV_BINDINGS, KeyedTable
from voltui.tui.widgets._util import ago, wall_now

TITLE = "1 Runs"
BAR = 5
"""Cells of the progress bar."""
ID_WIDTH = 8
WANT_WORKFLOW = 20
"""Optional columns give way until the workflow column has this many cells (or its longest
name, if shorter); it then takes every cell left."""
TIMES_REFRESH = 10.0
"""Seconds between refreshes of the relative start times while nothing else changes."""

SortKey = Literal["started", "duration", "state"]
SORTS: tuple[SortKey, ...] = ("started", "duration", "state")
STATE_ORDER = {
    RunState.FAILED: 0,
    RunState.INTERRUPTED: 1,
    RunState.CANCELLED: 2,
    RunState.CANCELLING: 3,
    RunState.WAITING: 3,
    RunState.RUNNING: 3,
    RunState.QUEUED: 4,
    RunState.SUCCEEDED: 5,
}
"""Sort by state: trouble first."""

# (run id, workflow, replay of, state, progress, took, started, style epoch, llm cost,
#  why it waits, why it started)
RunSig = tuple[str, str, str | None, str, Progress, str, str, int, str, str, str]
TRIGGER_MARK = {"schedule": "⏲ schedule", "trigger": "⇣ file"}
"""How a run that started on its own says so after its workflow name (manual runs say
nothing; a replay shows `↺ parent`)."""

GIVE_WAY = ("bar", "started", "cost", "time", "progress")
"""The order optional columns give way in as the panel narrows (the bar is the progress
column's bar); `cost` shows only while some listed run made LLM calls."""


def run_duration(view: RunView, now: float) -> float | None:
    """The run's duration, up to `now` while it is still going."""
    run = view.run
    if run.started_at is None:
        return None
    end = run.finished_at if run.finished_at is not None else now
    return max(0.0, end - run.started_at)


def segments(p: Progress, width: int = BAR) -> list[tuple[str, int]]:
    """The bar as `(outcome, cells)` runs: succeeded, failed, cancelled, then not finished.

    Each outcome that happened gets at least one cell (one failure in a thousand steps must
    show), the rest in proportion; the cells always add up to `width`."""
    total = max(p.total, p.succeeded + p.failed + p.cancelled + p.unknown, 1)
    parts = [
        ("succeeded", p.succeeded),
        ("failed", p.failed),
        ("cancelled", p.cancelled),
        ("unknown", p.unknown),
    ]
    cells: list[tuple[str, int]] = []
    used = 0
    for name, n in parts:
        if n <= 0:
            continue
        c = max(1, round(width * n / total))
        c = min(c, width - used)
        if c > 0:
            cells.append((name, c))
            used += c
    if used < width:
        cells.append(("pending", width - used))
    return cells


SEGMENT_GLYPH = {"succeeded": "█", "failed": "▓", "cancelled": "▒", "unknown": "█", "pending": "░"}


def progress_text(p: Progress) -> str:
    """`4/6`, then `✗n` and `■n` for failed and cancelled steps."""
    done = p.succeeded if not p.unknown else p.unknown
    text = f"{done}/{p.total}"
    if p.failed:
        text += f" {states.glyph('failed')}{p.failed}"
    if p.cancelled:
        text += f" {states.glyph('cancelled')}{p.cancelled}"
    return text


def layout(
    width: int, widths: dict[str, int], longest_workflow: int, *, cost: bool = False
) -> tuple[list[str], dict[str, int], bool]:
    """Which columns fit in `width` cells, the workflow column's width, and whether the bar
    fits: identity columns always, then the optional ones go in `GIVE_WAY` order until the
    workflow column has `WANT_WORKFLOW` cells (or its longest name).

    `widths` are the content widths of the other columns (`progress` without the bar). Every
    column also takes two cells of padding."""
    want = min(WANT_WORKFLOW, max(1, longest_workflow))
    full = ["run", "workflow", "state", "progress", "time", *(["cost"] if cost else []), "started"]
    steps: list[tuple[list[str], bool]] = [(full, True), (full, False)]
    columns = list(full)
    for gone in GIVE_WAY[1:]:
        if gone in columns:
            columns = [c for c in columns if c != gone]
        if steps[-1] != (columns, False):
            steps.append((list(columns), False))
    for columns, with_bar in steps:
        used = 0
        for c in columns:
            if c == "workflow":
                continue
            used += widths[c] + 2 + (BAR + 1 if c == "progress" and with_bar else 0)
        room = width - used - 2
        if room >= want or (columns, with_bar) == steps[-1]:
            sizes = {c: widths[c] for c in columns if c != "workflow"}
            if "progress" in sizes and with_bar:
                sizes["progress"] += BAR + 1
            sizes["workflow"] = max(1, room)
            return columns, sizes, with_bar
    raise AssertionError("unreachable")


class RunsTable(KeyedTable):
    """Recent and active runs. Row keys are full run ids."""

    COLUMNS = ("run", "workflow", "state", "progress", "time", "cost", "started")
    BINDINGS: ClassVar[list[BindingType]] = [
        *NAV_BINDINGS,
        # Off the footer (it must fit 80 columns); `?` and the README list them.
        Binding("e", "toggle_failed", "Failed runs only", show=False, id="runs.failed"),
        Binding("o", "cycle_sort", "Sort runs", show=False, id="runs.sort"),
        Binding("u", "parent", "Jump to the replayed run", show=False, id="runs.parent"),
    ]

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.filter_text: str | None = None
        """The `/` filter (see `voltui.tui.state.compile_filter`) over id, workflow, state."""
        self.failed_only = False
        self.sort: SortKey = "started"
        self._match: Callable[[str], bool] | None = None
        self._state: DashboardState | None = None
        self._epoch = 0
        self._styles: dict[str, Any] | None = None
        self._with_bar = True
        self._title = TITLE
        self.border_title = TITLE

    def on_mount(self) -> None:
        self.set_interval(TIMES_REFRESH, self._refresh_times, name="runs-times")

    # ------------------------------------------------------------------ rendering

    def _render_row(self, sig: RunSig) -> list[Text]:
        short_id, workflow, parent, state, progress, took, started, _epoch, cost, why, how = sig
        styles = self._style_map()
        look = states.look(state)
        state_style = styles.get(state)
        name = Text(workflow, no_wrap=True, overflow="ellipsis")
        if parent:
            name.append(f" ↺ {parent}", style=styles.get("pending"))
        if how:
            name.append(f" {how}", style=styles.get("pending"))
        bar = Text(progress_text(progress))
        if self._with_bar:
            bar.append(" ")
            for outcome, n in segments(progress):
                style = styles.get("pending" if outcome in ("pending", "unknown") else outcome)
                bar.append(SEGMENT_GLYPH[outcome] * n, style=style)
        return [
            Text(short_id, style=state_style if state == "failed" else ""),
            name,
            Text(f"{look.glyph} {state}" + (f" ({why})" if why else ""), style=state_style),
            bar,
            Text(took),
            Text(cost),
            Text(started),
        ]

    def _style_map(self) -> dict[str, Any]:
        if self._styles is None:
            self._styles = self.state_styles()
        return self._styles

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = None
        self._epoch += 1
        if self._state is not None:
            self.call_later(self.refresh_from, self._state)

    def _sig(self, view: RunView, now: float) -> RunSig:
        run = view.run
        return (
            clean(run.id[:ID_WIDTH]),
            clean(run.workflow_name or run.workflow_id, max_len=60),
            clean(run.replay_of[:ID_WIDTH]) if run.replay_of else None,
            str(run.state),
            view.progress(),
            format_duration(run_duration(view, now)),
            ago(run.started_at or run.created_at, now),
            self._epoch,
            format_usage(run.usage, short=True),
            # Why it is not at work: a busy concurrency key, or a person's decision.
            clean(view.queued_reason or "", max_len=20)
            or ("approval" if run.state is RunState.WAITING else ""),
            TRIGGER_MARK.get(run.trigger, ""),
        )

    def visible_views(self, state: DashboardState) -> list[RunView]:
        """The runs the table shows, in its order: filtered, then sorted."""
        views = state.runs_newest_first()
        if self.failed_only:
            views = [v for v in views if v.run.state is RunState.FAILED]
        match = self._match
        if match is not None:
            views = [v for v in views if match(_filter_line(v))]
        if self.sort == "duration":
            now = wall_now(self)
            views.sort(key=lambda v: run_duration(v, now) or 0.0, reverse=True)
        elif self.sort == "state":
            views.sort(key=lambda v: STATE_ORDER.get(v.run.state, 9))
        return views

    def refresh_from(self, state: DashboardState) -> None:
        self._state = state
        now = wall_now(self)
        rows = {v.run.id: self._sig(v, now) for v in self.visible_views(state)}
        self._fit(rows.values())
        self.sync(rows, self._render_row, ordered=True)
        self._update_title()

    def _refresh_times(self) -> None:
        if self._state is not None:
            self.refresh_from(self._state)

    def _fit(self, sigs: Sequence[RunSig] | Any) -> None:
        """Choose the columns and widths for the panel's width (see `layout`)."""
        sigs = list(sigs)
        width = self.scrollable_content_region.width - 1  # room for a vertical scrollbar
        if width <= 0:
            return
        widths = {
            "run": ID_WIDTH,
            "state": max(
                [len("state"), *(len(s[3]) + 2 + (len(s[9]) + 3 if s[9] else 0) for s in sigs)]
            ),
            "progress": max([len("progress"), *(len(progress_text(s[4])) for s in sigs)]),
            "time": max([len("time"), *(len(s[5]) for s in sigs)]),
            "started": max([len("started"), *(len(s[6]) for s in sigs)]),
            "cost": max([len("cost"), *(len(s[8]) for s in sigs)]),
        }
        longest = max(
            [
                len("workflow"),
                *(
                    len(s[1]) + (len(s[2]) + 3 if s[2] else 0) + (len(s[10]) + 1 if s[10] else 0)
                    for s in sigs
                ),
            ]
        )
        columns, sizes, with_bar = layout(width, widths, longest, cost=any(s[8] for s in sigs))
        if with_bar != self._with_bar:
            self._with_bar = with_bar
            self._epoch += 1  # the progress cells change
        self.show_columns(columns, sizes)

    def on_resize(self) -> None:
        if self._state is not None:
            self.refresh_from(self._state)

    def _update_title(self) -> None:
        title = Text(TITLE)
        if self.filter_text:
            title.append(f"  /{clean(self.filter_text, max_len=30)}/", style="bold")
        if self.failed_only:
            title.append("  failed only", style="bold")
        if self.sort != "started":
            title.append(f"  by {self.sort}", style="bold")
        if title.plain != self._title:
            self._title = title.plain
            self.border_title = title

    # ------------------------------------------------------------------ actions

    def set_filter(self, text: str | None) -> None:
        """Show only runs whose id, workflow or state match `text` (a regex, `!` inverts)."""
        self.filter_text = text or None
        self._match = compile_filter(self.filter_text)
        if self._state is not None:
            self.refresh_from(self._state)
        else:
            self._update_title()

    def action_toggle_failed(self) -> None:
        self.failed_only = not self.failed_only
        if self._state is not None:
            self.refresh_from(self._state)

    def action_cycle_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        if self._state is not None:
            self.refresh_from(self._state)

    def action_parent(self) -> None:
        """Jump to the run the selected replay was made from (or open it, if not listed)."""
        state = self._state
        key = self.selected_key()
        view = state.runs.get(key) if state is not None and key else None
        if view is None or not view.run.replay_of:
            self.notify("this run is not a replay", severity="warning", markup=False)
            return
        parent = view.run.replay_of
        if parent in self.rows:
            self.move_cursor(row=self.get_row_index(parent))
            return
        detail = getattr(self.app, "action_detail", None)
        if callable(detail):
            detail(parent)  # filtered out or older than the runs kept: open it full screen


def _filter_line(view: RunView) -> str:
    run = view.run
    return f"{run.id} {run.workflow_id} {run.workflow_name} {run.state}"
