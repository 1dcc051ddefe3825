"""One run in full: its header, every step, and the log, output and error of the chosen step.

Everything comes from `EngineAPI.get_run` and `EngineAPI.step_log`, so the screen works the same
against an embedded or a remote engine. While the run is active a 1 s timer fetches the run and
the tail of the selected step's log again; the log is appended to, not rewritten, so following a
busy step costs only its new lines. Step output is untrusted: every line goes through
`voltui.safetext.clean` and is shown as plain text (a `Log`), never as markup.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable
from typing import Any, ClassVar, TypeVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Log, Static

from voltui.engine.api import EngineAPI
from voltui.engine.durations import format_duration
from voltui.engine.models import LogLine, RunDetail, RunState, StepRun, StepState
from voltui.safetext import clean, clean_multiline
from voltui.tui.calls import engine_call
from voltui.tui.state import compute_levels
from voltui.tui.widgets._util import wall_now
from voltui.tui.widgets.dag import SYMBOL

T = TypeVar("T")

LOG_TAIL = 2000
"""Log lines fetched (and kept) for the selected step."""
REFRESH_SECONDS = 1.0
"""How often an active run and the selected step's log are fetched again."""
COLUMNS = ("state", "step", "agent", "attempt", "started", "duration", "error")

STREAM_PREFIX = {"stdout": "  ", "stderr": "! ", "engine": "# "}
"""Marks each log line's stream, so stderr reads as such without colour."""

_RUN_STYLE = {
    RunState.SUCCEEDED: "$success",
    RunState.FAILED: "bold $error",
    RunState.RUNNING: "bold $primary",
    RunState.CANCELLED: "$warning",
    RunState.INTERRUPTED: "$warning",
    RunState.QUEUED: "$text-muted",
}


def clean_lines(text: object, *, max_len: int = 500) -> str:
    """Multi-line untrusted text, each line cleaned (clean() alone would join the lines)."""
    return clean_multiline(text, max_len=max_len)


def state_cell(state: StepState, attempt: int, max_attempts: int) -> str:
    """`✓ succeeded`, `↻ 2/4 retrying`: the symbol carries the meaning without colour."""
    mark = SYMBOL.get(state, ("?", ""))[0]
    if state is StepState.RETRYING:
        mark = f"{mark} {attempt}/{max_attempts}"
    return f"{mark} {state.value}"


def _clock(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%H:%M:%S", time.localtime(ts))


def _span(start: float | None, end: float | None, now: float) -> str:
    """How long it took, or has taken so far by `now` (the app's clock)."""
    if start is None:
        return "-"
    return format_duration(max(0.0, (end if end is not None else now) - start))


def step_row(step_id: str, sr: StepRun | None, now: float) -> list[Text]:
    """The table cells of one step (a step that has not started has no StepRun yet)."""
    if sr is None:
        blank = [Text("-") for _ in range(4)]
        return [Text(state_cell(StepState.PENDING, 0, 1)), Text(clean(step_id)), *blank, Text("")]
    return [
        Text(state_cell(sr.state, sr.attempt, sr.max_attempts)),
        Text(clean(step_id, max_len=40)),
        Text(clean(sr.agent_id or "-", max_len=20)),
        Text(f"{sr.attempt}/{sr.max_attempts}"),
        Text(_clock(sr.started_at)),
        Text(_span(sr.started_at, sr.finished_at, now)),
        Text(clean(sr.error or "", max_len=80)),
    ]


def log_text(line: LogLine) -> str:
    return STREAM_PREFIX.get(line.stream, "? ") + clean(line.line)


def _subtitle(*, follow: bool) -> str:
    return "! stderr  # engine  l: " + ("following" if follow else "FOLLOW OFF")


def _key(line: LogLine) -> tuple[int, float, str, str]:
    return (line.attempt, line.ts, line.stream, line.line)


def pretty_output(value: Any) -> str:
    """A step's output as indented JSON (anything JSON cannot encode as its str)."""
    try:
        text = json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=False)
    except (TypeError, ValueError):
        text = str(value)
    return clean_lines(text)


class RunDetailScreen(Screen[None]):
    """A full-screen view of one run; `escape` goes back to the dashboard."""

    DEFAULT_CSS = """
    RunDetailScreen { layout: vertical; }
    RunDetailScreen #detail-header {
        height: auto; max-height: 5; padding: 0 1; background: $surface;
    }
    RunDetailScreen #detail-steps {
        height: auto; max-height: 40%; border: round $primary 50%;
    }
    RunDetailScreen #detail-bottom { height: 1fr; }
    RunDetailScreen #detail-log {
        width: 2fr; border: round $primary 50%; border-title-color: $foreground;
    }
    RunDetailScreen #detail-side {
        width: 1fr; min-width: 24; border: round $primary 50%; padding: 0 1;
    }
    RunDetailScreen #detail-steps:focus, RunDetailScreen #detail-log:focus,
    RunDetailScreen #detail-side:focus { border: round $accent; }
    RunDetailScreen #detail-side Static { width: auto; }
    RunDetailScreen.-narrow #detail-bottom { layout: vertical; }
    RunDetailScreen.-narrow #detail-log { width: 1fr; height: 2fr; }
    RunDetailScreen.-narrow #detail-side { width: 1fr; height: 1fr; }
    """
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [
        (0, "-narrow"),
        (100, "-wide"),
    ]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="detail.back"),
        Binding("l", "toggle_follow", "Follow log", id="detail.follow"),
        Binding("up", "move_step(-1)", "Previous step", show=False, id="detail.up"),
        Binding("down", "move_step(1)", "Next step", show=False, id="detail.down"),
    ]

    def __init__(self, engine: EngineAPI, run_id: str) -> None:
        super().__init__()
        self.engine = engine
        self.run_id = run_id
        self.detail: RunDetail | None = None
        """The last `get_run` result; None until the first fetch returns."""
        self.selected_step: str | None = None
        self.follow = True
        """Whether the log scrolls to each new line (`l` toggles)."""
        self.finished = False
        """True once the run was seen finished and its final log fetched: polling stops."""
        self._busy = False
        self._timer: Timer | None = None
        self._log_step: str | None = None
        self._log_last: tuple[int, float, str, str] | None = None
        self._log_attempt: int | None = None
        self._log_attempts: set[int] = set()

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Static(Content(f"Run {clean(self.run_id[:12])}: loading…"), id="detail-header")
        table: DataTable[Text] = DataTable(id="detail-steps", cursor_type="row")
        for label in COLUMNS:
            table.add_column(label, key=label)
        table.border_title = "Steps"
        yield table
        with Horizontal(id="detail-bottom"):
            log = Log(id="detail-log", max_lines=LOG_TAIL, auto_scroll=True)
            log.border_title = "Log"
            log.border_subtitle = _subtitle(follow=True)
            yield log
            with VerticalScroll(id="detail-side") as side:
                side.border_title = "Output"
                yield Static(Content(""), id="detail-output")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#detail-steps", DataTable).focus()
        self.run_worker(self._poll(), group="detail-poll")
        self._timer = self.set_interval(REFRESH_SECONDS, self._tick, name="detail-refresh")

    # ------------------------------------------------------------------ engine

    async def _call(self, call: Awaitable[T]) -> T | None:
        return await engine_call(self.app, call)

    def _tick(self) -> None:
        if self.finished:
            if self._timer is not None:
                self._timer.stop()
            return
        if not self._busy:
            self.run_worker(self._poll(), group="detail-poll")

    async def _poll(self) -> None:
        """Fetch the run, then the selected step's log (after the run, so a run seen finished
        is followed by its complete log)."""
        if self._busy or self.finished:
            return
        self._busy = True
        try:
            detail = await self._call(self.engine.get_run(self.run_id))
            if detail is None:
                self.finished = True  # unknown run or engine gone: stop asking every second
                if self.detail is None:
                    self.query_one("#detail-header", Static).update(
                        Content(f"Run {clean(self.run_id[:12])}: not available")
                    )
                return
            self.detail = detail
            self._render_header()
            self._sync_table()
            if self.selected_step is not None:
                await self._load_log(self.selected_step)
            self._render_side()
            if detail.run.state.finished:
                self.finished = True
        finally:
            self._busy = False

    # ------------------------------------------------------------------ rendering

    def _step_runs(self) -> dict[str, StepRun]:
        return {s.step_id: s for s in self.detail.steps} if self.detail else {}

    def _render_header(self) -> None:
        detail = self.detail
        if detail is None:
            return
        run = detail.run
        took = _span(run.started_at, run.finished_at, wall_now(self))
        parts: list[str | tuple[str, str]] = [
            ("Run ", "bold"),
            (clean(run.id), "bold"),
            "  ",
            (clean(run.workflow_name or run.workflow_id, max_len=60), "bold"),
            "  ",
            (str(run.state), _RUN_STYLE.get(run.state, "")),
            f"  {run.steps_done}/{run.steps_total} steps\n",
            f"started {_clock(run.started_at)}  duration {took}",
        ]
        if run.replay_of:
            parts.append(f"  replay of {clean(run.replay_of)} ({run.replay_mode or 'failed'})")
        if run.error:
            parts += ["\n", ("error: ", "$error"), clean(run.error, max_len=300)]
        self.query_one("#detail-header", Static).update(Content.assemble(*parts))

    def _sync_table(self) -> None:
        detail = self.detail
        if detail is None:
            return
        table: DataTable[Text] = self.query_one("#detail-steps", DataTable)
        by_id = self._step_runs()
        wf_steps = detail.workflow.steps
        order = [
            sid for level in compute_levels((s.id, s.depends_on) for s in wf_steps) for sid in level
        ]
        for step_id in order:
            cells = step_row(step_id, by_id.get(step_id), wall_now(self))
            if step_id in table.rows:
                for label, cell in zip(COLUMNS, cells, strict=True):
                    if table.get_cell(step_id, label) != cell:
                        table.update_cell(step_id, label, cell, update_width=True)
            else:
                table.add_row(*cells, key=step_id)
        if self.selected_step is None and order:
            self._select(order[0])

    def _render_side(self) -> None:
        parts: list[str | tuple[str, str]] = []
        sr = self._step_runs().get(self.selected_step or "")
        if self.selected_step is None:
            parts.append(("no step selected", "$text-muted"))
        elif sr is None:
            parts.append(("not started yet", "$text-muted"))
        else:
            parts += [(clean(sr.step_id, max_len=60), "bold"), f"  {sr.state}\n"]
            if sr.exit_code is not None:
                parts.append(f"exit code {sr.exit_code}\n")
            if sr.cached:
                parts.append(("served from the cache\n", "$text-muted"))
            if sr.reused_from:
                parts.append((f"reused from run {clean(sr.reused_from)}\n", "$text-muted"))
            if sr.error:
                parts += [("error\n", "bold $error"), clean_lines(sr.error, max_len=2000), "\n"]
            parts.append(("output\n", "bold"))
            if sr.output is None:
                parts.append(("(none)", "$text-muted"))
            else:
                parts.append(pretty_output(sr.output))
        self.query_one("#detail-output", Static).update(Content.assemble(*parts))

    # ------------------------------------------------------------------ the log

    async def _load_log(self, step_id: str) -> None:
        """Append the step's new log lines (or rewrite the log when the step changed or the
        tail window moved past what is shown)."""
        lines = await self._call(self.engine.step_log(self.run_id, step_id, tail=LOG_TAIL))
        if lines is None or step_id != self.selected_step:
            return
        log = self.query_one("#detail-log", Log)
        new = lines
        if self._log_step == step_id and self._log_last is not None:
            if not lines or _key(lines[-1])[:2] < self._log_last[:2]:
                return  # an older answer overtaken by a newer one: keep what is shown
            for index in range(len(lines) - 1, -1, -1):
                if _key(lines[index]) == self._log_last:
                    new = lines[index + 1 :]
                    break
            else:
                self._reset_log(step_id)
        elif self._log_step != step_id:
            self._reset_log(step_id)
        if not new:
            return
        attempts = self._log_attempts
        attempts.update(line.attempt for line in new)
        out: list[str] = []
        for line in new:
            if line.attempt != self._log_attempt:
                self._log_attempt = line.attempt
                if len(attempts) > 1 or line.attempt > 1:
                    out.append(f"── attempt {line.attempt} ──")
            out.append(log_text(line))
        self._log_last = _key(new[-1])
        log.write_lines(out, scroll_end=self.follow)

    def _reset_log(self, step_id: str) -> None:
        log = self.query_one("#detail-log", Log)
        log.clear()
        log.border_title = Text.assemble("Log ", (clean(step_id, max_len=40), "bold"))
        self._log_step = step_id
        self._log_last = None
        self._log_attempt = None
        self._log_attempts = set()

    # ------------------------------------------------------------------ selection

    def _select(self, step_id: str) -> None:
        if step_id == self.selected_step:
            return
        self.selected_step = step_id
        self._reset_log(step_id)
        self._render_side()
        self.run_worker(self._load_log(step_id), group="detail-log", exclusive=True)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key.value is not None:
            self._select(event.row_key.value)

    # ------------------------------------------------------------------ actions

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        log = self.query_one("#detail-log", Log)
        log.auto_scroll = self.follow
        if self.follow:
            log.scroll_end(animate=False)
        log.border_subtitle = _subtitle(follow=self.follow)

    def action_move_step(self, delta: int) -> None:
        table = self.query_one("#detail-steps", DataTable)
        if table.row_count:
            table.move_cursor(row=max(0, min(table.row_count - 1, table.cursor_row + delta)))
