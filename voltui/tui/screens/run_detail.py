"""One run in full: its header, every step, and the log, output and error of the chosen step.

Everything comes from `EngineAPI.get_run` and `EngineAPI.step_log`, so the screen works the same
against an embedded or a remote engine. While the run is active a 1 s timer fetches the run and
the tail of the selected step's log again; the log is appended to, not rewritten, so following a
busy step costs only its new lines. Step output is untrusted: every line goes through
`voltui.safetext.clean` and is shown as plain text (a `LogView`), never as markup.

The log can follow (`l`), wrap (`w`), be searched (`/`, then `n`/`N`), copied from (`y`) and saved
(`S`: a new 0600 file in the run's folder, or the current directory when the run's folder is not
on this machine). Durations are the step's own (`StepRun.duration`: attempt start to end), the
same figure the dashboard, the events and the CLI show.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Static

from voltui.engine.api import EngineAPI
from voltui.engine.durations import format_duration
from voltui.engine.models import LogLine, RunDetail, StepRun, StepState
from voltui.engine.usage import format_usage
from voltui.safetext import clean, clean_multiline
from voltui.states import label as state_label
from voltui.states import look
from voltui.tui.calls import engine_call
from voltui.tui.state import compute_levels, map_child
from voltui.tui.widgets._table import NavTable
from voltui.tui.widgets._util import wall_now
from voltui.tui.widgets.logview import LogView

T = TypeVar("T")

LOG_TAIL = 2000
"""Log lines fetched (and kept) for the selected step."""
REFRESH_SECONDS = 1.0
"""How often an active run and the selected step's log are fetched again."""
COLUMNS = ("state", "step", "agent", "attempt", "started", "waited", "duration", "error")
"""`waited` is the latest attempt's queue wait (`StepRun.queue_wait`), apart from its duration."""

STREAM_PREFIX = {"stdout": "  ", "stderr": "! ", "engine": "# "}
"""Marks each log line's stream, so stderr reads as such without colour."""


def clean_lines(text: object, *, max_len: int = 500) -> str:
    """Multi-line untrusted text, each line cleaned (clean() alone would join the lines)."""
    return clean_multiline(text, max_len=max_len)


def state_cell(state: StepState, attempt: int, max_attempts: int) -> str:
    """`✓ succeeded`, `↻ 2/4 retrying`: the symbol carries the meaning without colour."""
    mark = look(state).glyph
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


def step_duration(sr: StepRun, now: float) -> str:
    """The attempt's duration (`StepRun.duration`), or its time so far while it runs."""
    if sr.started_at is None:
        return "-"
    took = sr.duration
    if took is None:
        took = max(0.0, now - sr.started_at) if sr.finished_at is None else None
    return format_duration(took)


def step_row(step_id: str, sr: StepRun | None, now: float) -> list[Text]:
    """The table cells of one step (a step that has not started has no StepRun yet)."""
    if sr is None:
        blank = [Text("-") for _ in range(5)]
        return [Text(state_cell(StepState.PENDING, 0, 1)), Text(clean(step_id)), *blank, Text("")]
    return [
        Text(state_cell(sr.state, sr.attempt, sr.max_attempts)),
        Text(clean(step_id, max_len=40)),
        Text(clean(sr.agent_id or "-", max_len=20)),
        Text(f"{sr.attempt}/{sr.max_attempts}"),
        Text(_clock(sr.started_at)),
        Text(format_duration(sr.queue_wait) if sr.queue_wait is not None else "-"),
        Text(step_duration(sr, now)),
        Text(clean(sr.error or "", max_len=80)),
    ]


def first_step(order: list[str], runs: dict[str, StepRun], wanted: str | None) -> str:
    """The step a run opens on: `wanted` if the run has it, else the first failed step (the
    one an operator opens a failed run for), else the first step. `order` is not empty."""
    if wanted is not None and wanted in order:
        return wanted
    for step_id in order:
        sr = runs.get(step_id)
        if sr is not None and sr.state is StepState.FAILED:
            return step_id
    return order[0]


def log_text(line: LogLine) -> str:
    return STREAM_PREFIX.get(line.stream, "? ") + clean(line.line)


def _subtitle(*, follow: bool, wrap: bool = False, search: str | None = None) -> str:
    parts = ["! stderr  # engine", "l: " + ("following" if follow else "FOLLOW OFF")]
    if wrap:
        parts.append("wrapped")
    if search:
        parts.append(search)
    return "  ".join(parts)


def save_log(
    lines: list[LogLine], run_id: str, step_id: str, run_dir: str | None, cwd: Path | None = None
) -> Path:
    """Write `lines` as plain text to a new 0600 file named after the run and step, in
    `run_dir` if it is a folder on this machine, else in `cwd` (the current directory).

    Never overwrites and never follows a symlink: the file is created with O_EXCL|O_NOFOLLOW
    (a name that exists gets a `-2`, `-3`, ... suffix). Lines are cleaned, with the stream and
    attempt marked as the screen shows them."""
    folder = Path(run_dir) if run_dir and os.path.isdir(run_dir) else (cwd or Path.cwd())
    safe_step = re.sub(r"[^A-Za-z0-9_.-]", "_", step_id)[:80] or "step"
    stem = f"{run_id[:12]}-{safe_step}-log"
    text = "".join(
        f"attempt {line.attempt} {STREAM_PREFIX.get(line.stream, '? ')}{clean(line.line)}\n"
        for line in lines
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for n in range(1, 1000):
        path = folder / (f"{stem}.txt" if n == 1 else f"{stem}-{n}.txt")
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        return path
    raise FileExistsError(f"too many saved logs named {stem}*.txt in {folder}")


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
    RunDetailScreen #detail-logpane { width: 2fr; }
    RunDetailScreen #detail-log {
        height: 1fr; border: round $primary 50%; border-title-color: $foreground;
    }
    RunDetailScreen #detail-search {
        display: none; height: 1; border: none; padding: 0 1; background: $panel;
    }
    RunDetailScreen #detail-search.-active { display: block; }
    RunDetailScreen #detail-side {
        width: 1fr; min-width: 24; border: round $primary 50%; padding: 0 1;
    }
    RunDetailScreen #detail-steps:focus, RunDetailScreen #detail-log:focus,
    RunDetailScreen #detail-side:focus { border: round $accent; }
    RunDetailScreen #detail-side Static { width: auto; }
    RunDetailScreen.-narrow #detail-bottom { layout: vertical; }
    RunDetailScreen.-narrow #detail-logpane { width: 1fr; height: 2fr; }
    RunDetailScreen.-narrow #detail-side { width: 1fr; height: 1fr; }
    """
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [
        (0, "-narrow"),
        (100, "-wide"),
    ]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="detail.back"),
        Binding("l", "toggle_follow", "Follow log", id="detail.follow"),
        Binding("w", "toggle_wrap", "Wrap", id="detail.wrap"),
        Binding("slash", "search", "Search log", key_display="/", id="detail.search"),
        Binding("n", "next_match(1)", "Next match", show=False, id="detail.next"),
        Binding("N", "next_match(-1)", "Previous match", show=False, id="detail.previous"),
        Binding("y", "yank", "Copy", id="detail.yank"),
        Binding("S", "save_log", "Save log", id="detail.save"),
        Binding("up", "move_step(-1)", "Previous step", show=False, id="detail.up"),
        Binding("down", "move_step(1)", "Next step", show=False, id="detail.down"),
    ]

    def __init__(self, engine: EngineAPI, run_id: str, *, step: str | None = None) -> None:
        """`step` is the step to open on (from the DAG panel); without it the screen opens on
        the run's first failed step, or on its first step."""
        super().__init__()
        self.engine = engine
        self.run_id = run_id
        self.initial_step = step
        self.detail: RunDetail | None = None
        """The last `get_run` result; None until the first fetch returns."""
        self.children_shown: list[str] = [step] if step and map_child(step) else []
        """Children of map steps (`review[3]`) listed in the table, each under its map step:
        the one the DAG opened the screen on (a map may have thousands)."""
        self._by_id: dict[str, StepRun] = {}
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
        table = NavTable(id="detail-steps", cursor_type="row")
        for label in COLUMNS:
            table.add_column(label, key=label)
        table.border_title = "Steps"
        yield table
        with Horizontal(id="detail-bottom"):
            with Vertical(id="detail-logpane"):
                log = LogView(id="detail-log", max_lines=LOG_TAIL)
                log.border_title = "Log"
                log.border_subtitle = _subtitle(follow=True)
                log.empty_text = "(loading…)"
                yield log
                yield Input(
                    placeholder="search the log (regex, case-insensitive); enter keeps, "
                    "escape clears",
                    id="detail-search",
                    select_on_focus=False,
                )
            with VerticalScroll(id="detail-side") as side:
                side.border_title = "Output"
                yield Static(Content(""), id="detail-output")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#detail-steps", NavTable).focus()
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
            if not self.is_attached:
                return  # the screen was closed while the engine answered
            if detail is None:
                self.finished = True  # unknown run or engine gone: stop asking every second
                if self.detail is None:
                    self.query_one("#detail-header", Static).update(
                        Content(f"Run {clean(self.run_id[:12])}: not available")
                    )
                return
            self.detail = detail
            self._by_id = {s.step_id: s for s in (*detail.steps, *detail.children)}
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
        """The run's steps and the children of its map steps, by id (from the last fetch)."""
        return self._by_id

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
            (state_label(run.state), look(run.state).theme_style),
            f"  {run.steps_done}/{run.steps_total} steps\n",
            f"started {_clock(run.started_at)}  duration {took}",
        ]
        if run.replay_of:
            parts.append(f"  replay of {clean(run.replay_of)} ({run.replay_mode or 'failed'})")
        if run.usage is not None and run.usage.calls:
            parts.append(f"  llm {format_usage(run.usage)} in {run.usage.calls} call(s)")
        if run.error:
            parts += ["\n", ("error: ", "$error"), clean(run.error, max_len=300)]
        self.query_one("#detail-header", Static).update(Content.assemble(*parts))

    def _sync_table(self) -> None:
        detail = self.detail
        if detail is None:
            return
        table = self.query_one("#detail-steps", NavTable)
        by_id = self._step_runs()
        wf_steps = detail.workflow.steps
        order = [
            sid for level in compute_levels((s.id, s.depends_on) for s in wf_steps) for sid in level
        ]
        for child in self.children_shown:
            parsed = map_child(child)
            if parsed is not None and parsed[0] in order:
                order.insert(order.index(parsed[0]) + 1, child)
        for step_id in order:
            cells = step_row(step_id, by_id.get(step_id), wall_now(self))
            if step_id in table.rows:
                for label, cell in zip(COLUMNS, cells, strict=True):
                    if table.get_cell(step_id, label) != cell:
                        table.update_cell(step_id, label, cell, update_width=True)
            else:
                table.add_row(*cells, key=step_id)
        if self.selected_step is None and order:
            target = first_step(order, by_id, self.initial_step)
            table.move_cursor(row=table.get_row_index(target), animate=False)
            self._select(target)

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
        if lines is None or step_id != self.selected_step or not self.is_attached:
            return
        log = self.query_one("#detail-log", LogView)
        if not lines and not log.line_count:
            sr = self._step_runs().get(step_id)
            ended = sr is not None and sr.state.finished
            log.empty_text = "(no output)" if ended else "(no output yet)"
            log.refresh()
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
                    # Following carries on into the next attempt, under a separator.
                    log.write_lines(out, scroll_end=self.follow)
                    out = []
                    log.write_lines([f"── attempt {line.attempt} ──"], note=True)
            out.append(log_text(line))
        self._log_last = _key(new[-1])
        log.write_lines(out, scroll_end=self.follow)

    def _reset_log(self, step_id: str) -> None:
        log = self.query_one("#detail-log", LogView)
        log.clear()
        log.empty_text = "(loading…)"
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
        if event.row_key.value is not None and event.cursor_row == event.data_table.cursor_row:
            # Only where the cursor is now: the highlight of row 0 that adding rows posts can
            # arrive after the screen moved the cursor to the step it opens on.
            self._select(event.row_key.value)

    # ------------------------------------------------------------------ actions

    def action_back(self) -> None:
        self.app.pop_screen()

    @property
    def log_view(self) -> LogView:
        return self.query_one("#detail-log", LogView)

    def _set_follow(self, follow: bool) -> None:
        self.follow = follow
        log = self.log_view
        log.auto_scroll = follow
        if follow:
            log.scroll_end(animate=False)
        self._update_subtitle()

    def _update_subtitle(self) -> None:
        log = self.log_view
        search = None
        if log.search_pattern:
            search = f"/{clean(log.search_pattern, max_len=20)}/ {log.match_count} matches"
        log.border_subtitle = _subtitle(follow=self.follow, wrap=log.wrap, search=search)

    def action_toggle_follow(self) -> None:
        self._set_follow(not self.follow)

    def action_toggle_wrap(self) -> None:
        log = self.log_view
        log.set_wrap(not log.wrap)
        self._update_subtitle()

    def action_search(self) -> None:
        """Open the search line under the log; matches are highlighted as you type."""
        field = self.query_one("#detail-search", Input)
        field.add_class("-active")
        field.value = self.log_view.search_pattern or ""
        field.cursor_position = len(field.value)
        field.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "detail-search":
            event.stop()
            if event.input.has_class("-active"):
                self._search(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "detail-search":
            event.stop()
            self._search(event.value)
            self._close_search()

    def _search(self, pattern: str) -> None:
        log = self.log_view
        log.search(pattern or None)
        if log.match_count:
            self.follow = False  # stay on the match
            log.auto_scroll = False
        self._update_subtitle()

    def _close_search(self) -> None:
        field = self.query_one("#detail-search", Input)
        refocus = field.has_focus
        field.remove_class("-active")
        if refocus:
            self.log_view.focus()

    def action_next_match(self, step: int) -> None:
        log = self.log_view
        if not log.next_match(step):
            if log.search_pattern:
                self.notify("no match", severity="warning", markup=False, timeout=2)
            return
        self.follow = False
        self._update_subtitle()

    def action_yank(self) -> None:
        """Copy the log line in focus (a search match, else the newest in view) when the log
        has the focus; else the selected step's error, or the run id."""
        text: str | None = None
        if self.log_view.has_focus:
            text = self.log_view.current_line()
        else:
            sr = self._step_runs().get(self.selected_step or "")
            text = clean(sr.error, max_len=10_000) if sr is not None and sr.error else self.run_id
        if not text:
            self.notify("nothing to copy here", severity="warning", markup=False)
            return
        self.app.copy_to_clipboard(text)
        self.notify(f"copied: {clean(text, max_len=60)}", markup=False, timeout=3)

    @work(group="detail-save", exclusive=True)
    async def action_save_log(self) -> None:
        """Write the selected step's whole log (every attempt) to a new private file: in the
        run's folder when this machine has it, else in the current directory."""
        step_id = self.selected_step
        if step_id is None:
            return
        lines = await self._call(self.engine.step_log(self.run_id, step_id))
        if lines is None:
            return
        run_dir = self.detail.run.run_dir if self.detail is not None else None
        try:
            path = save_log(lines, self.run_id, step_id, run_dir)
        except OSError as exc:
            self.notify(
                f"could not save the log: {clean(exc, max_len=200)}",
                severity="error",
                markup=False,
            )
            return
        self.notify(f"saved {len(lines)} lines to {path}", markup=False, timeout=8)

    def key_escape(self) -> bool | None:
        """escape in the search line clears the search (and closes it)."""
        field = self.query_one("#detail-search", Input)
        if field.has_focus:
            field.value = ""
            self._search("")
            self._close_search()
            return True
        return None

    def action_move_step(self, delta: int) -> None:
        table = self.query_one("#detail-steps", NavTable)
        if table.row_count:
            table.move_cursor(row=max(0, min(table.row_count - 1, table.cursor_row + delta)))
