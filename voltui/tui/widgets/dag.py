"""The selected run's DAG: steps grouped by dependency level, each with a state symbol.

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


def render_dag(view: RunView | None) -> Content:
    """The whole panel body as one `Content`; untrusted parts are added as plain strings
    (never parsed as markup), styles only from theme variables."""
    if view is None:
        return Content("No run selected. Start one with s, or pick one in the runs panel.")
    run = view.run
    parts: list[str | Content | tuple[str, str]] = [
        (clean(run.workflow_name or run.workflow_id, max_len=60), "bold"),
        f"  {run.id[:12]}  {run.state}\n",
    ]
    if run.error:
        parts += [("error: ", "$error"), clean(run.error, max_len=200), "\n"]
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


class DagView(VerticalScroll):
    """Scrollable view of one run's steps; the app tells it which run to show."""

    ALLOW_MAXIMIZE = True

    _content: Content = Content("")

    def compose(self) -> ComposeResult:
        self._content = render_dag(None)
        yield Static(self._content, id="dag-body")

    def refresh_from(self, view: RunView | None) -> None:
        content = render_dag(view)
        if content.plain != self._content.plain or content.spans != self._content.spans:
            self._content = content
            self.query_one("#dag-body", Static).update(content)

    def text(self) -> str:
        """Plain text shown, for tests and copy."""
        return self._content.plain
