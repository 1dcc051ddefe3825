"""The operator's dashboard, second pass (issue 9): every way out asks, every run is readable,
state and progress tell the truth, tables an operator can work in. Real embedded engine, Pilot.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from textual.command import CommandPalette
from textual.geometry import Region
from textual.widgets import Footer
from textual.widgets._toast import Toast

from tests.tui.test_app import run_state, until, write_workflow
from tests.tui.test_app_more import QUICK, quick_run, select
from voltui import states
from voltui.engine.api import ReplayRequest, StartRequest
from voltui.engine.models import RunState, StepState
from voltui.engine.orchestrator import Orchestrator
from voltui.tui.app import QUIT_CONFIRM, VoltApp
from voltui.tui.screens import ConfirmScreen, HelpScreen, StartScreen, WorkflowsScreen
from voltui.tui.screens.run_detail import RunDetailScreen
from voltui.tui.widgets import AgentsTable, DagView, EventsLog, RunsTable
from voltui.tui.widgets._table import NavTable
from voltui.tui.widgets.logview import LogView

SLOW = (
    "id: slow\nname: Slow chain\nsteps:\n"
    "  - id: first\n    requires: [simulated]\n    run: {simulated: {duration: 60s}}\n"
    "  - id: second\n    depends_on: [first]\n    requires: [simulated]\n"
    "    run: {simulated: {duration: 10ms}}\n"
    "  - id: third\n    depends_on: [second]\n    requires: [simulated]\n"
    "    run: {simulated: {duration: 10ms}}\n"
)

FAILING = (
    "id: failing\nname: Always fails\nsteps:\n"
    "  - id: boom\n    requires: [simulated]\n"
    "    run: {simulated: {duration: 10ms, fail_attempts: 9}}\n"
)


def table_text(table: RunsTable) -> list[str]:
    """The table as drawn inside its border, one string per line (header first)."""
    width, height = table.outer_size
    strips = table.render_lines(Region(0, 0, width, height))
    return ["".join(segment.text for segment in strip)[1:-1] for strip in strips[1:-1]]


async def start(app: VoltApp, path: Path) -> str:
    run = await app.engine.start_workflow(StartRequest(workflow=str(path)))
    return run.id


# ---------------------------------------------------------------------- 1: every way out


async def test_every_way_out_asks_while_runs_are_active(
    engine: Orchestrator, tmp_path: Path
) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        run_id = await start(app, write_workflow(tmp_path, "slow", SLOW))
        await until(pilot, lambda: run_state(app, run_id) == "running")

        def quit_dialogs() -> int:
            return sum(
                1 for s in app.screen_stack if isinstance(s, ConfirmScreen) and s.id == QUIT_CONFIRM
            )

        async def palette_quit() -> None:
            [quit_command] = [c for c in app.get_system_commands(app.screen) if c.title == "Quit"]
            quit_command.callback()

        for way in ("q", "ctrl+q", "ctrl+c", "palette"):
            if way == "palette":
                await palette_quit()
            else:
                await pilot.press(way)
            await until(pilot, lambda: quit_dialogs() == 1)
            # Any quit key again while the question is up adds nothing.
            await pilot.press("ctrl+q")
            await pilot.press("ctrl+c")
            await pilot.pause()
            assert quit_dialogs() == 1, way
            await pilot.press("n")
            await until(pilot, lambda: quit_dialogs() == 0)
            assert app.return_code is None, f"{way} quit without asking"
        assert run_state(app, run_id) == "running"
        await pilot.press("ctrl+q")
        await until(pilot, lambda: quit_dialogs() == 1)
        await pilot.press("y")
        await until(pilot, lambda: app.return_code is not None)


async def test_quit_keys_exit_at_once_when_nothing_runs(engine: Orchestrator) -> None:
    for key in ("ctrl+q", "ctrl+c"):
        app = VoltApp(engine)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press(key)
            await until(pilot, lambda: app.return_code is not None)  # noqa: B023


# ---------------------------------------------------------------------- 4: runs table columns


async def test_runs_table_shows_id_workflow_and_state_at_every_width(
    engine: Orchestrator, tmp_path: Path
) -> None:
    path = write_workflow(tmp_path, "quick", QUICK)
    slow = write_workflow(tmp_path, "slow", SLOW)
    for size in ((80, 24), (120, 40), (160, 48), (220, 60)):
        app = VoltApp(engine)
        async with app.run_test(size=size) as pilot:
            done = await quick_run(pilot, app, path)
            active = await start(app, slow)
            runs = app.query_one(RunsTable)
            await until(pilot, lambda: active in runs.rows)  # noqa: B023
            await pilot.pause()
            assert runs.shown_columns[:3] == ["run", "workflow", "state"]
            # The table fits its panel: no hidden columns, no horizontal scrollbar line.
            assert runs.virtual_size.width <= runs.scrollable_content_region.width, size
            assert runs.styles.scrollbar_size_horizontal == 0
            lines = table_text(runs)
            assert lines[0].split()[:3] == ["run", "workflow", "state"]
            for run_id, name, state in ((done, "quick", "succeeded"), (active, "Slow", "running")):
                line = next(x for x in lines if run_id[:8] in x)
                assert name in line and state in line, (size, line)
            if size[0] >= 160:
                assert "progress" in runs.shown_columns and "time" in runs.shown_columns
            if size[0] >= 220:
                assert "started" in runs.shown_columns
                assert any("s ago" in x for x in lines)
            await app.engine.cancel_run(active)


# ---------------------------------------------------------------------- 5: progress and colour


async def test_cancelled_run_does_not_show_full_progress(
    engine: Orchestrator, tmp_path: Path
) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=(160, 48)) as pilot:
        run_id = await start(app, write_workflow(tmp_path, "slow", SLOW))
        await until(pilot, lambda: run_state(app, run_id) == "running")
        await app.engine.cancel_run(run_id)
        await until(pilot, lambda: run_state(app, run_id) == "cancelled")
        runs = app.query_one(RunsTable)
        await until(pilot, lambda: run_id in runs.rows)
        await until(pilot, lambda: "cancelled" in runs.get_cell(run_id, "state").plain)
        await pilot.pause()
        assert app.state is not None
        progress = app.state.runs[run_id].progress()
        assert (progress.succeeded, progress.failed, progress.total) == (0, 0, 3)
        assert progress.cancelled == 3  # one cancelled, two skipped
        cell = runs.get_cell(run_id, "progress").plain
        assert cell.startswith("0/3") and "■3" in cell and "█" not in cell, cell


async def test_failed_and_succeeded_rows_differ_in_colour(
    engine: Orchestrator, tmp_path: Path
) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=(160, 48)) as pilot:
        ok = await quick_run(pilot, app, write_workflow(tmp_path, "quick", QUICK))
        bad = await start(app, write_workflow(tmp_path, "failing", FAILING))
        await until(pilot, lambda: run_state(app, bad) == "failed")
        runs = app.query_one(RunsTable)
        await until(pilot, lambda: bad in runs.rows)
        await until(pilot, lambda: "failed" in runs.get_cell(bad, "state").plain)
        ok_cell, bad_cell = runs.get_cell(ok, "state"), runs.get_cell(bad, "state")
        assert ok_cell.plain == "✓ succeeded" and bad_cell.plain == "✗ failed"
        assert ok_cell.style != bad_cell.style
        styles = runs.state_styles()
        assert bad_cell.style == styles["failed"] and ok_cell.style == styles["succeeded"]
        # The DAG title carries the state with the same glyph, whole.
        await select(pilot, app, bad)
        title = str(app.query_one(DagView).border_title)
        assert "✗ failed" in title


def test_one_state_table_for_cli_dag_and_dashboard() -> None:
    from voltui.commands import common as cli  # what every CLI command prints states with
    from voltui.tui.widgets.dag import SYMBOL

    for state in [*RunState, *StepState]:
        look = states.look(state)
        assert look is not states.UNKNOWN, state
        assert look.theme.startswith("$")
        assert cli.STATE_STYLE[state.value] == (look.glyph, look.ansi_style)
    for state in StepState:
        assert SYMBOL[state] == (states.look(state).glyph, states.look(state).theme_style)


# ---------------------------------------------------------------------- 8: events panel


async def test_events_show_run_and_workflow_and_hide_heartbeats(
    engine: Orchestrator, tmp_path: Path
) -> None:
    path = write_workflow(tmp_path, "quick", QUICK)
    app = VoltApp(engine)
    async with app.run_test(size=(160, 48)) as pilot:
        first = await quick_run(pilot, app, path)
        second = await quick_run(pilot, app, path)
        events = app.query_one(EventsLog)
        await until(pilot, lambda: sum("workflow:succeeded" in x for x in events.lines) == 2)
        done = [x for x in events.lines if "workflow:succeeded" in x]
        assert f"{first[:8]} quick" in done[0] and f"{second[:8]} quick" in done[1]
        # Heartbeats (metrics samples, health checks) are hidden until `M`.
        await engine.watcher.collect_metrics()
        await engine.watcher.check_now()
        await pilot.pause(0.5)
        assert not any("metrics:system" in x or "health:checked" in x for x in events.lines)
        await pilot.press("M")
        await until(pilot, lambda: any("metrics:system" in x for x in events.lines))
        assert any("health:checked" in x for x in events.lines)
        assert "+heartbeats" in str(events.border_title)
        await pilot.press("M")
        assert not any("metrics:system" in x for x in events.lines)


# ---------------------------------------------------------------------- 9: navigation


async def test_table_keys_move_the_cursor_and_new_rows_are_announced(
    engine: Orchestrator, tmp_path: Path
) -> None:
    path = write_workflow(tmp_path, "quick", QUICK)
    app = VoltApp(engine)
    async with app.run_test(size=(160, 48)) as pilot:
        for _ in range(4):
            await quick_run(pilot, app, path)
        runs = app.query_one(RunsTable)
        await until(pilot, lambda: runs.row_count == 4)
        runs.focus()
        await pilot.press("g")
        assert runs.cursor_row == 0
        await pilot.press("j", "j")
        assert runs.cursor_row == 2
        await pilot.press("k")
        assert runs.cursor_row == 1
        await pilot.press("G")
        assert runs.cursor_row == 3
        await pilot.press("home")
        assert runs.cursor_row == 0 and runs.scroll_x == 0
        await pilot.press("end")
        assert runs.cursor_row == 3
        selected = runs.selected_key()
        # A new run arrives above the cursor: the cursor stays on its run, the border says so.
        new = await quick_run(pilot, app, path)
        await until(pilot, lambda: new in runs.rows)
        await pilot.pause()
        assert runs.selected_key() == selected
        assert runs.new_above == 1 and "1 new above" in str(runs.border_subtitle)
        await pilot.press("g")
        assert runs.new_above == 0 and "new above" not in str(runs.border_subtitle)
        # The same keys in the agents table.
        agents = app.query_one(AgentsTable)
        agents.focus()
        await pilot.press("G")
        assert agents.cursor_row == agents.row_count - 1
        await pilot.press("g", "j")
        assert agents.cursor_row == 1
        assert "kept runs" in str(agents.border_subtitle)


# ---------------------------------------------------------------------- 10: visual noise


async def test_toasts_leave_borders_and_footer_alone(engine: Orchestrator) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        app.notify("a message long enough to need a good part of the width of the screen")
        await until(pilot, lambda: bool(app.screen.query(Toast)))
        await pilot.pause(0.3)
        width, height = app.size
        for toast in app.screen.query(Toast):
            region = toast.region
            assert region.bottom <= height - 2, "covers the bottom border or the footer"
            assert region.right <= width - 1, "covers the right border"


async def test_modal_screens_show_their_own_keys(engine: Orchestrator) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=(100, 30)) as pilot:
        for key, screen_type, own in (
            ("question_mark", HelpScreen, "close"),
            ("s", StartScreen, "back"),
        ):
            await pilot.press(key)
            await until(pilot, lambda: isinstance(app.screen, screen_type))  # noqa: B023
            await pilot.pause()
            footer = app.screen.query_one(Footer)
            assert footer.screen is app.screen
            active = app.screen.active_bindings.values()
            shown = {b.binding.action for b in active if b.binding.show}
            shown_descriptions = {
                b.binding.description.lower() for b in app.screen.active_bindings.values()
            }
            assert own in shown or any(own in d for d in shown_descriptions), shown
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is app.screen_stack[0])


async def test_palette_help_shows_brackets_as_text(engine: Orchestrator) -> None:
    from textual.content import Content

    from voltui.tui.commands import VoltCommands

    app = VoltApp(engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette))
        provider = VoltCommands(app.screen, None)
        await provider.startup()
        helps = [hit.help async for hit in provider.discover() if hit.help]
        [demo] = [h for h in helps if "Simulated load" in h]
        assert Content.from_markup(demo).plain == "[demo] Simulated load test"


# ---------------------------------------------------------------------- runs table work


async def test_runs_filter_failed_only_sort_and_lineage(
    engine: Orchestrator, tmp_path: Path
) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=(160, 48)) as pilot:
        ok = await quick_run(pilot, app, write_workflow(tmp_path, "quick", QUICK))
        bad = await start(app, write_workflow(tmp_path, "failing", FAILING))
        await until(pilot, lambda: run_state(app, bad) == "failed")
        runs = app.query_one(RunsTable)
        await until(pilot, lambda: {ok, bad} <= {k.value for k in runs.rows})
        runs.focus()
        # `/` on the runs table filters it, as you type.
        await pilot.press("slash", *"quick")
        await until(pilot, lambda: [k.value for k in runs.rows] == [ok])
        assert "/quick/" in str(runs.border_title)
        await pilot.press("escape")
        await until(pilot, lambda: runs.row_count == 2)
        # `e`: failed runs only.
        runs.focus()
        await pilot.press("e")
        assert [k.value for k in runs.rows] == [bad] and "failed only" in str(runs.border_title)
        await pilot.press("e")
        assert runs.row_count == 2
        # `o`: by duration, by state (failed first), back to newest first.
        await pilot.press("o", "o")
        assert runs.sort == "state" and next(k.value for k in runs.rows) == bad
        await pilot.press("o")
        assert runs.sort == "started"
        # A replay names its parent, and `u` jumps to it.
        replay = await app.engine.replay_run(ReplayRequest(run_id=bad, mode="all"))
        await until(pilot, lambda: replay.id in runs.rows)
        assert f"↺ {bad[:8]}" in runs.get_cell(replay.id, "workflow").plain
        runs.move_cursor(row=runs.get_row_index(replay.id))
        await pilot.press("u")
        assert runs.selected_key() == bad


# ---------------------------------------------------------------------- workflows view


async def test_workflows_view_lists_results_and_starts(
    engine: Orchestrator, tmp_path: Path
) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=(160, 48)) as pilot:
        run = await app.engine.start_workflow(StartRequest(workflow="flaky"))
        await until(pilot, lambda: run_state(app, run.id) == "succeeded", limit=30)
        await pilot.press("w")
        await until(pilot, lambda: isinstance(app.screen, WorkflowsScreen))
        screen = app.screen
        assert isinstance(screen, WorkflowsScreen)
        table = screen.table
        await until(pilot, lambda: table.row_count == len(screen.workflows) > 1)
        assert table.get_cell("flaky", "last run").plain == "✓ succeeded"
        assert table.get_cell("flaky", "success").plain == "100% of 1"
        assert table.get_cell("flaky", "next").plain == "-"  # no schedule
        # Run actions are off here: no run is in view.
        assert not app.check_action("cancel_run", ()) and not app.check_action("replay", ())
        table.move_cursor(row=table.get_row_index("flaky"))
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is app.screen_stack[0])
        assert app.state is not None
        await until(
            pilot,
            lambda: sum(v.run.workflow_id == "flaky" for v in app.state.runs.values()) == 2,
        )


def test_next_fire_reads_schedules_when_the_engine_has_them() -> None:
    from types import SimpleNamespace

    from voltui.engine.api import WorkflowInfo
    from voltui.tui.screens.workflows import next_fire

    wf = WorkflowInfo(id="w", name="w", steps=1)
    assert next_fire(wf, 1000.0) == "-"
    sched = [
        SimpleNamespace(next_fire_at=1300.0, paused=False, spec="*/5 * * * *"),
        SimpleNamespace(next_fire_at=1100.0, paused=True, spec="@hourly"),
    ]
    with_schedules = SimpleNamespace(schedules=sched)
    assert next_fire(with_schedules, 1000.0).startswith("in 5m00s")  # type: ignore[arg-type]
    paused = SimpleNamespace(schedules=[sched[1]])
    assert next_fire(paused, 1000.0) == "paused"  # type: ignore[arg-type]


# ---------------------------------------------------------------------- yank


async def test_yank_copies_the_selected_run_id(engine: Orchestrator, tmp_path: Path) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        run_id = await quick_run(pilot, app, write_workflow(tmp_path, "quick", QUICK))
        await select(pilot, app, run_id)
        app.query_one(RunsTable).focus()
        await pilot.press("y")
        assert app.clipboard == run_id
        bad = await start(app, write_workflow(tmp_path, "failing", FAILING))
        await until(pilot, lambda: run_state(app, bad) == "failed")
        await select(pilot, app, bad)
        app.query_one(DagView).focus()
        await pilot.press("y")
        assert app.state is not None
        error = app.state.runs[bad].run.error
        assert error and app.clipboard == error


# ---------------------------------------------------------------------- logs


FLAKY_LOG = (
    "id: flaky_log\nretry: {max_attempts: 3, base_delay: 10ms, max_delay: 10ms, jitter: 0}\n"
    "steps:\n"
    "  - id: wobbly\n    requires: [simulated]\n"
    "    run: {simulated: {duration: 10ms, fail_attempts: 2, output_lines: 3}}\n"
    "  - id: quiet\n    depends_on: [wobbly]\n    requires: [simulated]\n"
    "    run: {simulated: {duration: 10ms}}\n"
)


def saved_logs(folder: str) -> list[Path]:
    return list(Path(folder).glob("*-wobbly-log.txt"))


async def test_log_follows_attempts_searches_wraps_and_saves(
    engine: Orchestrator, tmp_path: Path
) -> None:
    run = await engine.start_workflow(
        StartRequest(workflow=str(write_workflow(tmp_path, "flaky_log", FLAKY_LOG)))
    )
    await engine.wait_run(run.id)
    app = VoltApp(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        app.action_detail(run.id)
        await until(pilot, lambda: isinstance(app.screen, RunDetailScreen))
        screen = app.screen
        assert isinstance(screen, RunDetailScreen)
        await until(pilot, lambda: bool(screen.query(LogView)))
        log = screen.query_one(LogView)
        await until(pilot, lambda: any("attempt 3" in x for x in log.lines))
        steps = screen.query_one("#detail-steps", NavTable)
        await until(pilot, lambda: "wobbly" in steps.rows)
        assert steps.get_cell("wobbly", "waited").plain.endswith("s")  # queue wait, apart
        separators = [x for x in log.lines if x.startswith("── attempt")]
        assert separators == ["── attempt 1 ──", "── attempt 2 ──", "── attempt 3 ──"]
        assert log.scroll_y == log.max_scroll_y  # followed to the last attempt
        # Search: highlighted as typed, n moves, follow stops on a match.
        log.focus()
        await pilot.press("slash", *"attempt")
        await until(pilot, lambda: log.match_count >= 3)
        await pilot.press("enter")
        first = log.current_match
        await pilot.press("n")
        assert log.current_match == (first or 0) + 1 and not screen.follow
        await pilot.press("y")
        assert app.clipboard == log.current_line() and "attempt" in (app.clipboard or "")
        # Wrap: a long line takes several rows.
        log.write_lines(["x" * 500])
        rows_before = log.virtual_size.height
        await pilot.press("w")
        assert log.wrap and log.virtual_size.height > rows_before
        await pilot.press("w")
        assert not log.wrap
        # Save: a new private file in the run's folder.
        await pilot.press("S")
        assert screen.detail is not None and screen.detail.run.run_dir
        folder = screen.detail.run.run_dir
        await until(pilot, lambda: saved_logs(folder))
        [saved] = saved_logs(folder)
        assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600
        assert "attempt 3" in saved.read_text(encoding="utf-8")
        # A step that printed nothing says so.
        screen.query_one("#detail-steps").focus()
        await pilot.press("down")
        await until(pilot, lambda: screen.selected_step == "quiet")
        await until(pilot, lambda: log.empty_text == "(no output)")
        assert log.line_count == 0


async def test_start_list_moves_with_j_and_k(engine: Orchestrator) -> None:
    from textual.widgets import OptionList

    app = VoltApp(engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, StartScreen))
        options = app.screen.query_one(OptionList)
        await until(pilot, lambda: options.highlighted is not None)
        await pilot.press("j", "j")
        assert options.highlighted == 2
        await pilot.press("k")
        assert options.highlighted == 1
        await pilot.press("G")
        assert options.highlighted == options.option_count - 1
        await pilot.press("g")
        assert options.highlighted == 0


async def test_runs_table_says_why_a_run_waits_and_why_it_started() -> None:
    from textual.app import App, ComposeResult

    from voltui.engine.models import Event
    from voltui.tui.state import DashboardState

    class Host(App[None]):
        CSS = "RunsTable { height: 8; border: round $accent; }"  # as in its panel

        def compose(self) -> ComposeResult:
            yield RunsTable(id="runs")

    state = DashboardState()
    queued = {
        "workflow_id": "nightly",
        "name": "Nightly",
        "dag": [["a", []]],
        "trigger": "schedule",
        "trigger_ref": "nightly:0",
        "reason": "key busy",
    }
    state.apply(
        [Event(seq=1, ts=time.time(), type="workflow:queued", source="w",
               correlation_id="aaaabbbbcccc", data=queued)]
    )  # fmt: skip
    app = Host()
    async with app.run_test(size=(160, 20)) as pilot:
        await pilot.pause()  # laid out: the table sizes its columns to the panel
        table = app.query_one(RunsTable)
        table.refresh_from(state)
        await pilot.pause()
        line = next(x for x in table_text(table) if "aaaabbbb" in x)
        assert "queued (key busy)" in line and "⏲ schedule" in line, line
        state.apply(
            [Event(seq=2, ts=time.time(), type="workflow:started", source="w",
                   correlation_id="aaaabbbbcccc", data={})]
        )  # fmt: skip
        table.refresh_from(state)
        await pilot.pause()
        line = next(x for x in table_text(table) if "aaaabbbb" in x)
        assert "running" in line and "key busy" not in line, line
