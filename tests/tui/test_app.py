"""The dashboard driven by Pilot against a real embedded engine (no mocks).

Each test starts an `Orchestrator` on a SQLite file in tmp_path with the sample workflows, and
waits on conditions (bounded polling with `pilot.pause`), never on fixed sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import OptionList

from voltui.engine.api import StartRequest
from voltui.engine.models import RunState
from voltui.engine.orchestrator import Orchestrator
from voltui.tui.app import VoltApp
from voltui.tui.screens import ConfirmScreen, HelpScreen, StartScreen
from voltui.tui.widgets import AgentsTable, DagView, EventsLog, HealthTable, RunsTable

ROOT = Path(__file__).parents[2]
SIZE = (120, 40)


async def until(pilot: Pilot[None], cond: Callable[[], object], limit: float = 20.0) -> None:
    """Let the app run until `cond()` holds; fail with a clear message after `limit` seconds."""
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {limit}s")
        await pilot.pause(0.1)


def run_state(app: VoltApp, run_id: str) -> str | None:
    assert app.state is not None
    view = app.state.runs.get(run_id)
    return None if view is None else str(view.run.state)


def cell(table: RunsTable, run_id: str, column: str) -> str:
    return table.get_cell(run_id, column).plain


def write_workflow(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(body, encoding="utf-8")
    return path


async def test_mount_shows_engine_agents(engine: Orchestrator) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        agents = app.query_one(AgentsTable)
        keys = {k.value for k in agents.rows}
        assert {"shell-1", "shell-2", "python", "sim-1"} <= keys
        assert agents.get_cell("sim-2", "weight").plain == "2"


async def test_start_from_modal_runs_to_success(engine: Orchestrator) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, StartScreen))
        options = app.screen.query_one(OptionList)
        options.highlighted = options.get_option_index("flaky")
        await pilot.press("enter")
        runs = app.query_one(RunsTable)
        await until(
            pilot, lambda: any(v.run.workflow_id == "flaky" for v in app.state.runs.values())
        )
        run_id = next(v.run.id for v in app.state.runs.values() if v.run.workflow_id == "flaky")
        await until(pilot, lambda: run_id in runs.rows)
        await until(pilot, lambda: run_state(app, run_id) == "succeeded", limit=30)
        await until(pilot, lambda: "succeeded" in cell(runs, run_id, "state"))
        assert cell(runs, run_id, "workflow") == "Flaky step with retries"
        # The new run is selected, and its DAG shows the retried step as succeeded.
        assert app.selected_run == run_id
        dag = app.query_one(DagView)
        await until(pilot, lambda: "✓ " in dag.text() and "unstable_fetch" in dag.text())


async def test_cancel_with_confirmation(engine: Orchestrator) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        run = await engine.start_workflow(StartRequest(workflow="long_running"))
        runs = app.query_one(RunsTable)
        await until(pilot, lambda: run.id in runs.rows)
        runs.move_cursor(row=runs.get_row_index(run.id))
        await until(pilot, lambda: app.selected_run == run.id)
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: run_state(app, run.id) == "cancelled", limit=20)
        assert (await engine.get_run(run.id)).run.state is RunState.CANCELLED


async def test_replay_failed_creates_new_run(engine: Orchestrator, tmp_path: Path) -> None:
    path = write_workflow(
        tmp_path,
        "fails",
        "id: fails\nsteps:\n  - id: boom\n    requires: [shell]\n"
        "    run: {command: [python, -c, 'import sys; sys.exit(3)']}\n",
    )
    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        run = await engine.start_workflow(StartRequest(workflow=str(path)))
        await until(pilot, lambda: run_state(app, run.id) == "failed")
        runs = app.query_one(RunsTable)
        runs.move_cursor(row=runs.get_row_index(run.id))
        await until(pilot, lambda: app.selected_run == run.id)
        await pilot.press("r")

        def replays() -> list[str]:
            return [v.run.id for v in app.state.runs.values() if v.run.replay_of == run.id]

        await until(pilot, lambda: len(replays()) == 1)
        assert replays()[0] != run.id
        await until(pilot, lambda: app.selected_run == replays()[0])


async def test_read_only_refuses_start(engine: Orchestrator) -> None:
    app = VoltApp(engine, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.check_action("start", ()) is None
        assert app.check_action("toggle_pause", ()) is True
        await pilot.press("s")
        await pilot.pause(0.3)
        assert not isinstance(app.screen, StartScreen)
        assert any("read-only" in n.message for n in app._notifications)
        assert await engine.list_runs() == []


async def test_space_toggles_paused(engine: Orchestrator) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        events = app.query_one(EventsLog)
        assert "PAUSED" not in str(events.border_title)
        await pilot.press("space")
        assert "PAUSED" in str(events.border_title)
        # While paused, new events are not written; resuming writes them.
        before = events.line_count
        await engine.start_workflow(StartRequest(workflow="long_running"))
        await until(pilot, lambda: app.state.active_runs() == 1)
        await pilot.pause(0.3)
        assert events.line_count == before
        await pilot.press("space")
        assert "PAUSED" not in str(events.border_title)
        await until(pilot, lambda: any("workflow:queued" in line for line in events.lines))


async def test_quit_asks_while_runs_are_active(engine: Orchestrator) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await engine.start_workflow(StartRequest(workflow="long_running"))
        await until(pilot, lambda: app.state.active_runs() == 1)
        await pilot.press("q")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        assert app.is_running


async def test_help_opens_and_escape_closes(engine: Orchestrator) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        body = str(app.screen.query_one("#help-body").render())
        for word in ("Start", "Cancel", "Replay failed", "Replay all", "Pause events", "Quit"):
            assert word in body
        lines = body.splitlines()
        keys = {line[2:18].strip(): line[18:].strip() for line in lines if line.startswith("  ")}
        assert keys["?"] == "Help" and keys["/"] == "Filter" and keys[":"] == "Commands"
        assert keys["^p"] == "Commands" and keys["R"] == "Replay all"
        assert not any(name in body for name in ("question_mark", "slash", "colon"))
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen))


async def test_help_shows_remapped_keys(engine: Orchestrator) -> None:
    """A remapped key is shown as itself, not as the display of the key it replaced."""
    app = VoltApp(engine, keymap={"help": "h", "filter": "ctrl+f"})
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("h")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        body = str(app.screen.query_one("#help-body").render())
        keys = {line[2:18].strip(): line[18:].strip() for line in body.splitlines()}
        assert keys["h"] == "Help" and keys["^f"] == "Filter"
        assert "?" not in keys and "/" not in keys


async def test_help_lists_the_dag_panels_own_keys(engine: Orchestrator) -> None:
    """`?` has a section with the DAG panel's own keys, read from its BINDINGS (so the help
    never drifts from them), with the keymap applied as for the app's keys."""
    app = VoltApp(engine, keymap={"dag.next_failed": "f"})
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        body = str(app.screen.query_one("#help-body").render())
        assert "DAG panel (2)" in body
        section = body.split("DAG panel (2)\n", 1)[1].split("\n\n", 1)[0]
        keys = {line[2:18].strip(): line[18:].strip() for line in section.splitlines()}
        assert len(keys) == len(DagView.BINDINGS)
        assert {b.description for b in DagView.BINDINGS} == set(keys.values())  # type: ignore[union-attr]
        assert keys["f"] == "Next failed" and "n" not in keys
        assert keys["N"] == "Previous failed"
        assert keys["a"] == "Next running" and keys["A"] == "Previous running"
        assert keys["g, home"] == "First row" and keys["G, end"] == "Last row"
        assert keys["l, →"] == "Open map step or level" and keys["h, ←"] == "Fold map step or level"
        assert keys["⏎"] == "Open step, level or map step"


async def test_untrusted_output_is_literal(engine: Orchestrator, tmp_path: Path) -> None:
    script = "import sys; print('[bold]x[/] ' + chr(27) + '[31mred' + chr(27) + '[0m')"
    path = write_workflow(
        tmp_path,
        "markup",
        'id: markup\nname: "[bold]Markup[/] test"\nsteps:\n  - id: echo\n'
        f'    requires: [shell]\n    run: {{command: [python, -c, "{script}"]}}\n',
    )
    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        run = await engine.start_workflow(StartRequest(workflow=str(path)))
        await until(pilot, lambda: run_state(app, run.id) == "succeeded")
        events = app.query_one(EventsLog)
        await until(pilot, lambda: any("step:output" in line for line in events.lines))
        output = next(line for line in events.lines if "step:output" in line)
        assert "[bold]x[/] red" in output
        assert "\x1b" not in "".join(events.lines)
        runs = app.query_one(RunsTable)
        await until(pilot, lambda: run.id in runs.rows)
        assert cell(runs, run.id, "workflow") == "[bold]Markup[/] test"
        dag = app.query_one(DagView)
        await until(pilot, lambda: app.selected_run == run.id)
        await until(pilot, lambda: "[bold]x[/] red" in dag.text())
        assert dag.text().startswith("[bold]Markup[/] test")


async def test_small_terminal_layouts(engine: Orchestrator) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.query_one(RunsTable).display
        assert app.query_one(EventsLog).display
        assert not app.query_one("#too-small").display
        health = app.query_one(HealthTable)
        assert not health.display  # no room at 80x24: 5 shows it maximised instead
        await pilot.press("5")
        await pilot.pause()
        assert health.display and app.screen.maximized is health and app.focused is health
        await pilot.press("m")
        await pilot.pause()
        assert app.screen.maximized is None and app.focused is app.query_one(RunsTable)
        await pilot.resize_terminal(50, 15)
        await pilot.pause()
        assert app.query_one("#too-small").display
        assert not app.query_one("#panels").display


async def test_start_form_sets_this_run_s_own_budget(engine: Orchestrator) -> None:
    """agent_review's file says {tokens: 20000, usd: 0.05}; the form shows both, refuses a
    wrong amount, and a changed one becomes this run's budget (the other stays the file's)."""
    from textual.widgets import Input

    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, StartScreen))
        options = app.screen.query_one(OptionList)
        options.highlighted = options.get_option_index("agent_review")
        await pilot.press("enter")
        await until(pilot, lambda: bool(app.screen.query("#budget-usd")))
        tokens = app.screen.query_one("#budget-tokens", Input)
        usd = app.screen.query_one("#budget-usd", Input)
        assert (tokens.value, usd.value) == ("20000", "0.05")
        usd.value = "lots"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        assert isinstance(app.screen, StartScreen)  # refused, with the reason under the field
        assert "expected an amount" in str(app.screen.query_one("#budget-error-usd").render())
        assert app.screen.focused is usd
        usd.value = "$1.50"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await until(pilot, lambda: bool(app.state and app.state.runs))
        run_id = next(iter(app.state.runs))
    stored = await engine.store.get_workflow(run_id)
    assert stored is not None and stored.budget is not None
    assert (stored.budget.tokens, stored.budget.usd) == (20000, 1.5)
