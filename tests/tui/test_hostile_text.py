"""Hostile text from a workflow file, a step or an attached server never reaches the terminal.

The dashboard runs over a real engine whose workflow file and step output carry escape
sequences (OSC 52 writes the clipboard, OSC 0 the window title), bidi overrides and invisible
characters. A proxy in front of the engine plays a hostile attached server: its run ids and
error messages carry the same. After each step through the dashboard (panels, run detail,
start form with a hostile default, toasts, confirm dialog, command palette) the whole composed
screen, exactly the characters Textual would write to the terminal, is scanned.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, OptionList

from voltui.config import OrchestratorConfig
from voltui.engine.api import EngineSnapshot, ReplayRequest, StartRequest, WorkflowInfo
from voltui.engine.errors import UserError
from voltui.engine.models import Event, EventQuery, LogLine, Run, RunDetail, RunState
from voltui.engine.orchestrator import Orchestrator
from voltui.remote.protocol import RemoteError
from voltui.tui.app import VoltApp
from voltui.tui.screens import ConfirmScreen, StartScreen
from voltui.tui.screens.run_detail import RunDetailScreen
from voltui.tui.widgets import RunsTable

SIZE = (120, 40)
OSC52 = "\x1b]52;c;cG93bmVk\x07"  # base64 "powned" into the clipboard
OSC0 = "\x1b]0;pwned\x07"
BIDI = "\u202e\u2066\u200b\u2028"
POISON = OSC52 + OSC0 + BIDI

HOSTILE_WORKFLOW = r"""
id: hostile
name: "Hostile \e]0;pwned\a name \u202e reversed"
description: "desc \e]52;c;cG93bmVk\a and \u2066 isolate \u200b"
inputs:
  payload: {type: string, default: "\e]52;c;cG93bmVk\a\e]0;pwned\a\u202e"}
steps:
  - id: shout
    requires: [shell]
    run:
      command:
        - python
        - -c
        - |
          import sys
          print('\x1b]0;pwned\x07 out \u202e rev \u2028 forged line', flush=True)
          print('err \x1b]52;c;eA==\x07 \u2066', file=sys.stderr, flush=True)
          sys.exit(3)
  - id: sleepy
    requires: [shell]
    run: {command: [python, -c, "import time; time.sleep(60)"]}
"""


def unsafe_chars(text: str) -> list[str]:
    """C0 (but tab), DEL, C1 and the invisible/bidi categories, as U+XXXX names."""
    bad = []
    for ch in text:
        code = ord(ch)
        if ch == "\t":
            continue
        if code < 0x20 or 0x7F <= code <= 0x9F or unicodedata.category(ch) in {"Cf", "Zl", "Zp"}:
            bad.append(f"U+{code:04X}")
    return bad


def screen_segments(app: VoltApp) -> list[str]:
    """The text of every segment of the composed screen, as the terminal would receive it
    (minus Textual's own cursor and colour sequences, which are control segments)."""
    update = app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    return [
        segment.text
        for line in update.strips  # type: ignore[union-attr]
        for strip in line
        for segment in strip
        if segment.control is None
    ]


def screen_text(app: VoltApp) -> str:
    return "".join(screen_segments(app))


def assert_screen_safe(app: VoltApp, where: str) -> str:
    segments = screen_segments(app)
    bad = [(text, unsafe_chars(text)) for text in segments if unsafe_chars(text)]
    assert not bad, f"{where}: unsafe characters on screen in {bad[:5]}"
    return "".join(segments)


def poison(run_id: str) -> str:
    return POISON + run_id


def unpoison(run_id: str) -> str:
    return run_id.removeprefix(POISON)


class HostileServer:
    """Stands for an attached engine controlled by someone else: every run id it reports is
    prefixed with escape sequences and bidi characters, and its errors carry them too."""

    connection = "connected"

    def __init__(self, engine: Orchestrator) -> None:
        self.engine = engine

    def _run(self, run: Run) -> Run:
        return run.model_copy(update={"id": poison(run.id), "error": POISON + "server error"})

    def _event(self, event: Event) -> Event:
        cid = event.correlation_id
        # Rebuilt, not model_copy: the engine builds trusted events without validation.
        return Event.model_validate(
            {**event.model_dump(), "correlation_id": poison(cid) if cid else cid}
        )

    async def snapshot(self) -> EngineSnapshot:
        snap = await self.engine.snapshot()
        return snap.model_copy(
            update={
                "runs": [self._run(r) for r in snap.runs],
                "recent_events": [self._event(e) for e in snap.recent_events],
            }
        )

    async def subscribe(
        self, pattern: str = "*", since_seq: int | None = None
    ) -> AsyncIterator[list[Event]]:
        async for batch in self.engine.subscribe(pattern, since_seq):
            yield [self._event(e) for e in batch]

    async def list_workflows(self) -> list[WorkflowInfo]:
        return await self.engine.list_workflows()

    async def start_workflow(self, request: StartRequest) -> Run:
        raise UserError(f"refused {POISON}\nsecond line {OSC0}")

    async def cancel_run(self, run_id: str) -> Run:
        raise RemoteError(f"internal {POISON}")

    async def replay_run(self, request: ReplayRequest) -> Run:
        raise UserError(POISON)

    async def get_run(self, run_id: str) -> RunDetail:
        detail = await self.engine.get_run(unpoison(run_id))
        return detail.model_copy(update={"run": self._run(detail.run)})

    async def list_runs(self, state: RunState | None = None, limit: int = 50) -> list[Run]:
        return [self._run(r) for r in await self.engine.list_runs(state, limit)]

    async def step_log(
        self, run_id: str, step_id: str, attempt: int | None = None, tail: int | None = None
    ) -> list[LogLine]:
        lines = await self.engine.step_log(unpoison(run_id), step_id, attempt, tail)
        return [ln.model_copy(update={"line": POISON + ln.line}) for ln in lines]

    async def events(self, query: EventQuery) -> list[Event]:
        return [self._event(e) for e in await self.engine.events(query)]

    async def wait_run(self, run_id: str) -> Run:
        return self._run(await self.engine.wait_run(unpoison(run_id)))


@pytest.fixture
async def hostile_engine(tmp_path: Path) -> AsyncIterator[Orchestrator]:
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "hostile.yaml").write_text(HOSTILE_WORKFLOW, encoding="utf-8")
    orch = Orchestrator(OrchestratorConfig(db=tmp_path / "x.db", workflows_dir=folder))
    await orch.start(watch=False)
    try:
        yield orch
    finally:
        await orch.stop()


async def until(pilot: Pilot[None], cond: Callable[[], object], limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {limit}s")
        await pilot.pause(0.1)


def toasts(app: VoltApp) -> list[Any]:
    return list(app._notifications)


async def test_hostile_text_never_reaches_the_terminal(hostile_engine: Orchestrator) -> None:
    engine = hostile_engine
    run = await engine.start_workflow(StartRequest(workflow="hostile"))
    app = VoltApp(HostileServer(engine), embedded=False)  # type: ignore[arg-type]
    async with app.run_test(size=SIZE) as pilot:
        runs = app.query_one(RunsTable)
        hostile_id = poison(run.id)
        await until(pilot, lambda: hostile_id in runs.rows)
        runs.move_cursor(row=runs.get_row_index(hostile_id))
        await until(pilot, lambda: app.selected_run == hostile_id)
        await until(pilot, lambda: "shout" in screen_text(app), limit=30)
        text = assert_screen_safe(app, "dashboard")
        assert "\\u202e" in text  # shown, not hidden

        # Run detail: header, steps, the failing step's log and error.
        app.action_detail()
        await until(pilot, lambda: isinstance(app.screen, RunDetailScreen))
        detail = app.screen
        await until(pilot, lambda: detail.detail is not None)  # type: ignore[attr-defined]
        await until(pilot, lambda: "forged line" in screen_text(app), limit=30)
        assert_screen_safe(app, "run detail")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, RunDetailScreen))

        # The start form: the field of an input whose default is an escape sequence.
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, StartScreen))
        assert_screen_safe(app, "start list")
        options = app.screen.query_one(OptionList)
        options.highlighted = options.get_option_index("hostile")
        await pilot.press("enter")
        await until(pilot, lambda: bool(app.screen.query(Input)))
        field = app.screen.query_one(Input)
        assert "\x1b" not in field.value and "\x1b" not in field.placeholder
        assert_screen_safe(app, "start form")

        # Submitting sends the default itself (the hostile server refuses, loudly).
        await pilot.press("ctrl+s")
        await until(pilot, lambda: any("refused" in n.message for n in toasts(app)))
        assert_screen_safe(app, "start error toast")

        # Cancel: the confirm question names the run; the server's error is a toast.
        app.clear_notifications()
        await until(pilot, lambda: not isinstance(app.screen, StartScreen))
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert_screen_safe(app, "confirm")
        await pilot.press("y")
        await until(pilot, lambda: any("internal" in n.message for n in toasts(app)))
        assert_screen_safe(app, "cancel error toast")

        # The command palette lists run ids.
        await pilot.press("ctrl+p")
        await pilot.press("r", "u", "n")
        await until(pilot, lambda: "Open run" in screen_text(app) or "run" in screen_text(app))
        assert_screen_safe(app, "palette")
        await pilot.press("escape")
    await engine.cancel_run(run.id)


async def test_engine_call_cleans_a_hostile_servers_error() -> None:
    """`engine_call` on any app (not only the dashboard) shows the server's text cleaned."""
    from textual.app import App

    from voltui.tui.calls import engine_call

    class Host(App[None]):
        pass

    async def fail_user() -> None:
        raise UserError(f"bad {POISON}\nnext")

    async def fail_remote() -> None:
        raise RemoteError(f"engine server: {POISON}")

    app = Host()
    async with app.run_test() as pilot:
        await engine_call(app, fail_user())
        await engine_call(app, fail_remote())
        await pilot.pause()
        messages = [n.message for n in app._notifications]
        assert len(messages) == 2
        for message in messages:
            assert not unsafe_chars(message.replace("\n", "")), message
        assert messages[0].split("\n")[1] == "next"


async def test_start_form_keeps_a_hostile_default_out_of_the_field() -> None:
    """The field stays empty (meaning "the default"), the placeholder shows it cleaned, and
    submitting still sends the default itself."""
    from textual.app import App

    from voltui.engine.models import InputSpec

    default = OSC52 + "value" + BIDI
    wf = WorkflowInfo(
        id="w",
        name="W",
        path="w.yaml",
        steps=1,
        inputs={"payload": InputSpec(type="string", default=default)},
    )
    results: list[Any] = []

    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(StartScreen([wf]), callback=results.append)

    app = Host()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("enter")
        await until(pilot, lambda: bool(app.screen.query(Input)))  # type: ignore[arg-type]
        field = app.screen.query_one(Input)
        assert field.value == ""
        assert "value\\u202e" in field.placeholder and not unsafe_chars(field.placeholder)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: bool(results))  # type: ignore[arg-type]
    assert results[0] == StartRequest(workflow="w", inputs={"payload": default})
