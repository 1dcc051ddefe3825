"""The run detail, replay and start screens, each pushed on a tiny host app over a real engine.

The host app (`_Host`) only pushes the screen and records what it dismisses with, so these
tests do not depend on how the dashboard wires the screens in.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import DataTable, Input, OptionList, Static

from voltui.config import OrchestratorConfig
from voltui.engine.api import StartRequest, WorkflowInfo
from voltui.engine.models import InputSpec, RunState
from voltui.engine.orchestrator import Orchestrator
from voltui.tui.screens.replay import ReplayScreen
from voltui.tui.screens.run_detail import RunDetailScreen
from voltui.tui.screens.start import StartScreen, check_field
from voltui.tui.widgets.logview import LogView

ROOT = Path(__file__).parents[2]
SMALL = (80, 24)


class _Host(App[None]):
    """Pushes one screen on mount and records its dismiss results."""

    def __init__(self, screen: Screen[Any]) -> None:
        super().__init__()
        self.pushed = screen
        self.results: list[Any] = []

    def on_mount(self) -> None:
        self.push_screen(self.pushed, callback=self.results.append)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Orchestrator]:
    orch = Orchestrator(
        OrchestratorConfig(db=tmp_path / "x.db", workflows_dir=ROOT / "sample-workflows")
    )
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
        await pilot.pause(0.05)


DETAIL_WORKFLOW = """\
id: detail_demo
name: Detail demo
steps:
  - id: echo
    requires: [shell]
    run:
      command:
        - python
        - -c
        - |
          import sys, time
          print('[bold]x[/] ' + chr(27) + '[31mred' + chr(27) + '[0m', flush=True)
          print('oops on stderr', file=sys.stderr, flush=True)
          time.sleep(0.6)
          print('{"answer": 42}', flush=True)
  - id: boom
    depends_on: [echo]
    requires: [shell]
    run: {command: [python, -c, "import sys; sys.exit(3)"]}
  - id: after
    depends_on: [boom]
    requires: [shell]
    run: {command: [python, -c, "print(1)"]}
"""


async def test_run_detail_follows_an_active_run(engine: Orchestrator, tmp_path: Path) -> None:
    path = tmp_path / "detail_demo.yaml"
    path.write_text(DETAIL_WORKFLOW, encoding="utf-8")
    run = await engine.start_workflow(StartRequest(workflow=str(path)))
    screen = RunDetailScreen(engine, run.id)
    app = _Host(screen)
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: screen.detail is not None)
        # Pushed while the run is active: the 1 s refresh brings it to its final state.
        await until(pilot, lambda: screen.finished, limit=30)
        assert screen.detail is not None and screen.detail.run.state is RunState.FAILED
        table = screen.query_one("#detail-steps", DataTable)
        assert [k.value for k in table.rows] == ["echo", "boom", "after"]

        def state(step: str) -> str:
            return table.get_cell(step, "state").plain

        assert state("echo") == "✓ succeeded"
        assert state("boom") == "✗ failed"
        assert state("after") == "\u2013 skipped"
        assert table.get_cell("echo", "attempt").plain == "1/1"
        assert "3" in table.get_cell("boom", "error").plain

        header = str(screen.query_one("#detail-header", Static).render())
        assert run.id in header and "Detail demo" in header and "failed" in header

        # The first step is selected: its log is literal (markup shown, escapes stripped),
        # stderr is marked, and its output is pretty JSON.
        log = screen.query_one("#detail-log", LogView)
        assert screen.selected_step == "echo"
        await until(pilot, lambda: any("answer" in line for line in log.lines))
        assert "  [bold]x[/] red" in log.lines
        assert "! oops on stderr" in log.lines
        assert not any("\x1b" in line for line in log.lines)
        output = str(screen.query_one("#detail-output", Static).render())
        assert '"answer": 42' in output

        # down selects the next step: its log and error replace the first one's.
        await pilot.press("down")
        await until(pilot, lambda: screen.selected_step == "boom")
        await until(pilot, lambda: "exit" in str(screen.query_one("#detail-output").render()))
        assert not any("answer" in line for line in log.lines)

        assert log.auto_scroll
        await pilot.press("l")
        assert not screen.follow and not log.auto_scroll
        assert "FOLLOW OFF" in str(log.border_subtitle)

        await pilot.press("escape")
        await until(pilot, lambda: app.screen is not screen)


async def test_replay_steps_through_a_flaky_run(engine: Orchestrator) -> None:
    run = await engine.start_workflow(StartRequest(workflow="flaky"))
    await engine.wait_run(run.id)
    screen = ReplayScreen(engine, run.id)
    app = _Host(screen)
    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: screen.loaded)
        total = len(screen.events)
        assert total > 10
        assert screen.status_text().startswith(f"Replay {run.id[:12]}  event 0/{total}")
        assert "PAUSED" in screen.status_text()
        # Position 0 already shows the DAG, every step pending.
        view = screen.view
        assert view is not None
        assert [s.state for s in view.ordered_steps()] == ["pending", "pending"]
        assert "· unstable_fetch" in screen.dag_text()

        seen: list[str] = []
        texts: list[str] = []
        while screen.position < total:
            await pilot.press("right_square_bracket")
            view = screen.view
            assert view is not None
            step = str(view.steps["unstable_fetch"].state)
            if not seen or seen[-1] != step:
                seen.append(step)
            texts.append(screen.dag_text())
        # A free agent takes the step at once, so no attempt passes through `waiting`.
        assert seen == [
            "pending",
            "running",
            "retrying",
            "running",
            "retrying",
            "running",
            "succeeded",
        ]
        # The dashboard's own DAG panel: the retried attempt is said in the step's note.
        assert any("↻ unstable_fetch" in t and "retry 1/4" in t for t in texts)
        assert any("retry 2/4" in t for t in texts)
        assert f"event {total}/{total}" in screen.status_text()
        assert len(screen.log_lines()) == total
        assert screen.log_lines()[-1].split()[1] == "workflow:succeeded"

        # [ goes back one event, to exactly what was shown there before.
        await pilot.press("left_square_bracket")
        assert screen.position == total - 1
        assert screen.dag_text() == texts[-2]
        assert len(screen.log_lines()) == total - 1
        await pilot.press("home")
        assert screen.position == 0 and screen.log_lines() == []
        assert "· use_result" in screen.dag_text()
        await pilot.press("end")
        view = screen.view
        assert view is not None and view.run.state is RunState.SUCCEEDED
        assert all(s.state == "succeeded" for s in view.ordered_steps())

        # Play from the start at 8x until the end, where it stops by itself.
        await pilot.press("home")
        for _ in range(3):
            await pilot.press("plus")
        assert "speed 8x" in screen.status_text()
        await pilot.press("minus")
        assert "speed 4x" in screen.status_text()
        await pilot.press("p")
        assert screen.playing and "PLAYING" in screen.status_text()
        await until(pilot, lambda: screen.position == total and not screen.playing, limit=15)
        assert "PAUSED" in screen.status_text()
        assert str(screen.view.steps["use_result"].state) == "succeeded"  # type: ignore[union-attr]

        await pilot.press("escape")
        await until(pilot, lambda: app.screen is not screen)


PARAMS = WorkflowInfo(
    id="params",
    name="Params [b]demo[/b]",
    steps=1,
    inputs={
        "count": InputSpec(type="integer", default=3, description="how many"),
        "who": InputSpec(type="string", description="required, no default"),
        "mode": InputSpec(type="string", default="fast", choices=["fast", "slow"]),
        "dry": InputSpec(type="boolean", default=False),
    },
)
PLAIN = WorkflowInfo(id="plain", name="Plain", steps=2)


def error_text(screen: StartScreen, index: int) -> str:
    return str(screen.query_one(f"#error-f{index}", Static).render())


async def test_start_form_validates_inputs() -> None:
    screen = StartScreen([PLAIN, PARAMS])
    app = _Host(screen)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        options = screen.query_one(OptionList)
        options.highlighted = options.get_option_index("params")
        await pilot.press("enter")
        await until(pilot, lambda: screen.has_class("-form"))
        count = screen.query_one("#input-f0", Input)
        assert count.value == "3" and screen.focused is count
        assert screen.query_one("#input-f3", Input).value == "false"
        # The required input without a default is flagged from the start.
        assert "required" in error_text(screen, 1)
        assert screen.errors.keys() == {"who"}

        # Typing a non-number into the integer field shows the engine's message under it.
        await pilot.press("backspace", "a", "b", "c")
        assert count.value == "abc"
        assert "expects a whole number" in error_text(screen, 0)
        assert "'abc'" in error_text(screen, 0)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.results == [] and app.screen is screen
        assert screen.errors.keys() == {"count", "who"}

        count.value = "7"
        screen.query_one("#input-f1", Input).value = "bob"
        screen.query_one("#input-f2", Input).value = "medium"
        screen.query_one("#input-f3", Input).value = "yes"
        await pilot.pause()
        assert error_text(screen, 0) == "" and error_text(screen, 1) == ""
        assert "must be one of fast, slow" in error_text(screen, 2)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.results == []

        screen.query_one("#input-f2", Input).value = "slow"
        await pilot.pause()
        screen.query_one("#start-submit").focus()
        await pilot.press("enter")
        await until(pilot, lambda: app.results)
        assert app.results == [
            StartRequest(
                workflow="params", inputs={"count": 7, "who": "bob", "mode": "slow", "dry": True}
            )
        ]


async def test_start_escape_goes_back_then_closes() -> None:
    screen = StartScreen([PARAMS, PLAIN])
    app = _Host(screen)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        await pilot.press("enter")  # the first option: params, which has inputs
        await until(pilot, lambda: screen.has_class("-form"))
        await pilot.press("escape")
        await until(pilot, lambda: not screen.has_class("-form"))
        assert app.results == [] and screen.chosen is None
        await pilot.press("escape")
        await until(pilot, lambda: app.results)
        assert app.results == [None]


async def test_start_real_catalogue(engine: Orchestrator) -> None:
    workflows = await engine.list_workflows()
    screen = StartScreen(workflows)
    app = _Host(screen)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        options = screen.query_one(OptionList)
        # A workflow with inputs opens the form; its defaults start it as they are.
        options.highlighted = options.get_option_index("code_review")
        await pilot.press("enter")
        await until(pilot, lambda: screen.has_class("-form"))
        await pilot.press("escape")
        await until(pilot, lambda: not screen.has_class("-form"))
        # A workflow without inputs starts straight from enter.
        options.focus()
        options.highlighted = options.get_option_index("flaky")
        await pilot.press("enter")
        await until(pilot, lambda: app.results)
        assert app.results == [StartRequest(workflow="flaky")]


def test_check_field_rules() -> None:
    number = InputSpec(type="number", default=1.5)
    assert check_field(number, "") == (1.5, None)
    assert check_field(number, "  ") == (1.5, None)
    assert check_field(number, "2") == (2, None)
    assert check_field(number, "nan")[1] is not None
    text = InputSpec(type="string")
    assert check_field(text, "")[1] == "required: type a value"
    assert check_field(text, "  a ") == ("  a ", None)


async def test_start_without_workflows_names_the_folder_and_the_flag() -> None:
    screen = StartScreen([])
    app = _Host(screen)
    async with app.run_test(size=SMALL) as pilot:
        await pilot.pause()
        text = str(screen.query_one("#start-empty", Static).render())
        assert "sample-workflows" in text and str(Path.cwd()) in text
        assert "--workflows DIR" in text and "voltui.toml" in text


async def test_replay_of_a_big_run_renders_only_the_rows_on_screen(
    engine: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay's DAG is the dashboard's Line-API panel: a step forward in a 2,000-step run
    renders the rows in view, not all 2,000 (it used to rebuild the whole DAG every tick)."""
    from voltui.engine.models import Workflow
    from voltui.tui.widgets.dag import DagLayout

    # 200 levels of 10 steps: none folded, 2,200 rows in all.
    steps = [
        {
            "id": f"s{i:04d}",
            "depends_on": [f"s{i - 10:04d}"] if i >= 10 else [],
            "run": {"simulated": {"duration": "0ms"}},
        }
        for i in range(2000)
    ]
    flow = Workflow.model_validate({"id": "big", "max_parallel": 64, "steps": steps})
    run = await engine.run_workflow(flow)
    await engine.wait_run(run.id)
    screen = ReplayScreen(engine, run.id)
    app = _Host(screen)
    rendered = 0
    real = DagLayout.row_content

    def counting(self: DagLayout, *args: Any, **kwargs: Any) -> Any:
        nonlocal rendered
        rendered += 1
        return real(self, *args, **kwargs)

    async with app.run_test(size=SMALL) as pilot:
        await until(pilot, lambda: screen.loaded, limit=60)
        await pilot.press("end")
        await pilot.pause()
        monkeypatch.setattr(DagLayout, "row_content", counting)
        for _ in range(3):
            await pilot.press("left_square_bracket")  # back: refolds from the start
            await pilot.pause()
        monkeypatch.undo()
        text = screen.dag_text()
    assert "s1999" in text and text.count("\n") > 2000  # every row is there to scroll to
    assert 0 < rendered < 3 * 100, rendered  # but only those in view were rendered
