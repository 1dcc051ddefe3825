"""The selected run's DAG: steps grouped by dependency level, each with a state symbol, or (`v`)
a compact grid of one cell per step for DAGs of hundreds of steps.

Symbols carry the meaning so the panel reads without colour (NO_COLOR, screenshots, logs):
✓ succeeded, ✗ failed, ▶ running, ↻ retrying n/m, … waiting, · pending, an en dash
skipped, ■ cancelled, ◆ cached.
"""

from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from voltui.engine.durations import format_duration
from voltui.engine.models import StepState
from voltui.safetext import clean
from voltui.tui.state import RunView, StepView

NO_RUN = "No run selected. Start one with s, or pick one in the runs panel."

SYMBOL: dict[StepState, tuple[str, str]] = {
    StepState.SUCCEEDED: ("✓", "$success"),
    StepState.FAILED: ("✗", "bold $error"),
    StepState.RUNNING: ("▶", "bold $primary"),
    StepState.RETRYING: ("↻", "bold $warning"),
    StepState.WAITING: ("…", "$secondary"),
    StepState.PENDING: ("·", "$text-muted"),
    StepState.SKIPPED: ("\u2013", "$text-muted"),  # en dash
    StepState.CANCELLED: ("■", "$warning"),
    StepState.CACHED: ("◆", "$success"),
}


def step_symbol(step: StepView) -> tuple[str, str]:
    """The symbol text (with `n/m` for retries) and its theme style."""
    state = StepState(step.state)
    mark, style = SYMBOL[state]
    if state is StepState.RETRYING:
        mark = f"{mark} {step.attempt}/{step.max_attempts}"
    return mark, style


def _duration(step: StepView) -> str:
    if step.started_at is None:
        return ""
    end = step.finished_at if step.finished_at is not None else time.time()
    return format_duration(max(0.0, end - step.started_at))


def _run_header(view: RunView) -> list[str | Content | tuple[str, str]]:
    run = view.run
    parts: list[str | Content | tuple[str, str]] = [
        (clean(run.workflow_name or run.workflow_id, max_len=60), "bold"),
        f"  {run.id[:12]}  {run.state}\n",
    ]
    if run.error:
        parts += [("error: ", "$error"), clean(run.error, max_len=200), "\n"]
    return parts


def render_dag(view: RunView | None) -> Content:
    """The whole panel body as one `Content`; untrusted parts are added as plain strings
    (never parsed as markup), styles only from theme variables."""
    if view is None:
        return Content(NO_RUN)
    parts = _run_header(view)
    if not view.steps:
        parts.append(("loading steps…", "$text-muted"))
        return Content.assemble(*parts)
    width = max(len(s) for s in view.steps)
    marks = {sid: step_symbol(step) for sid, step in view.steps.items()}
    mark_width = max(len(mark) for mark, _style in marks.values())
    levels = view.levels or [list(view.steps)]
    for depth, ids in enumerate(levels):
        parts.append((f"level {depth}\n", "$text-muted"))
        for step_id in ids:
            step = view.steps.get(step_id)
            if step is None:
                continue
            mark, style = marks[step_id]
            parts += [
                " ",
                (f"{mark:<{mark_width}}", style),
                f" {clean(step_id):<{width}} {_duration(step):>6} ",
                (clean(step.agent or "-", max_len=16), "$text-muted"),
            ]
            note = step.error if step.state == StepState.FAILED else step.last_line
            if note:
                parts += ["  ", (clean(note, max_len=80), "$text-muted")]
            parts.append("\n")
    return Content.assemble(*parts)


COMPACT_ID = 10
"""Characters of a step id shown in a compact cell (longer ids lose their middle to `…`)."""

_SEPARATORS = "_-.:/"


def common_prefix(ids: list[str]) -> str:
    """The prefix all ids share, up to and including its last separator (`step_` of
    `step_001`, `step_002`), so compact cells show only the part that differs."""
    if len(ids) < 2:
        return ""
    lo, hi = min(ids), max(ids)  # the prefix these two share, every id in between shares
    n = 0
    while n < len(lo) and lo[n] == hi[n]:
        n += 1
    prefix = lo[:n]
    cut = max(prefix.rfind(sep) for sep in _SEPARATORS) + 1
    prefix = prefix[:cut]
    return prefix if all(len(i) > len(prefix) for i in ids) else ""


def render_compact(view: RunView | None, width: int) -> Content:
    """One cell per step (`symbol id`), level by level, wrapped to `width` columns.

    A 300-step run fits in a few dozen lines: a prefix shared by every id is shown once and
    left out of the cells, and a tally of states comes first so the run's progress reads at a
    glance. Retries show as the plain retry symbol (no n/m) to keep the cells aligned.
    """
    if view is None:
        return Content(NO_RUN)
    parts = _run_header(view)
    if not view.steps:
        parts.append(("loading steps…", "$text-muted"))
        return Content.assemble(*parts)
    tally: dict[StepState, int] = {}
    for step in view.steps.values():
        state = StepState(step.state)
        tally[state] = tally.get(state, 0) + 1
    for state, (mark, style) in SYMBOL.items():
        if tally.get(state):
            parts += [(mark, style), f" {tally[state]} {state}  "]
    ids = [sid for level in (view.levels or [list(view.steps)]) for sid in level]
    prefix = common_prefix(ids)
    if prefix:
        parts.append((f"ids: {clean(prefix, max_len=40)}…", "$text-muted"))
    parts.append("\n")
    id_width = min(COMPACT_ID, max((len(sid) - len(prefix) for sid in ids), default=1))
    cell = id_width + 3  # symbol, space, id, gap
    per_line = max(1, (width + 1) // cell)
    for n, step_id in enumerate(ids):
        step = view.steps.get(step_id)
        if step is None:
            continue
        mark, style = SYMBOL[StepState(step.state)]
        short = clean(step_id[len(prefix) :])
        if len(short) > id_width:  # keep both ends: `transform_a` and `_b` must differ
            head = (id_width - 1) // 2
            short = short[:head] + "…" + short[len(short) - (id_width - 1 - head) :]
        end = "\n" if (n + 1) % per_line == 0 or n + 1 == len(ids) else " "
        parts += [(mark, style), f" {short:<{id_width}}{end}"]
    return Content.assemble(*parts)


class DagView(VerticalScroll):
    """Scrollable view of one run's steps; the app tells it which run to show.

    `compact` switches between the level layout and the wrapped grid (`render_compact`), which
    is re-wrapped when the panel is resized.
    """

    ALLOW_MAXIMIZE = True

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.compact = False
        self._view: RunView | None = None
        # Kept rather than queried: a late refresh (a detail fetch finishing while the app
        # shuts down) must not fail on a body already removed.
        self._content = render_dag(None)
        self._body = Static(self._content, id="dag-body")

    def compose(self) -> ComposeResult:
        yield self._body

    def refresh_from(self, view: RunView | None) -> None:
        self._view = view
        if self.compact:
            # Reserve the scrollbar's columns, so a grid that grows one is not re-wrapped.
            width = self.content_region.width - self.styles.scrollbar_size_vertical
            content = render_compact(view, max(1, width))
        else:
            content = render_dag(view)
        if content.plain != self._content.plain or content.spans != self._content.spans:
            self._content = content
            self._body.update(content)

    def set_compact(self, compact: bool) -> None:
        self.compact = compact
        self.set_class(compact, "-compact")
        self.scroll_home(animate=False)
        self.refresh_from(self._view)

    def on_resize(self) -> None:
        if self.compact:
            self.refresh_from(self._view)

    def text(self) -> str:
        """Plain text shown, for tests and copy."""
        return self._content.plain
