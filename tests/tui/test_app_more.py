"""More of the dashboard against a real embedded engine: event filters, run screens, the compact
DAG, the command palette, the keymap, exiting on a lost terminal, and panel polish."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.command import CommandPalette
from textual.widgets import OptionList, Static

from tests.tui.test_app import SIZE, run_state, until, write_workflow
from voltui.engine.api import StartRequest
from voltui.engine.models import ComponentStatus, Event, HealthStatus
from voltui.engine.orchestrator import Orchestrator
from voltui.tui.app import VoltApp, terminal_lost
from voltui.tui.screens import ConfirmScreen, StartScreen
from voltui.tui.screens.replay import ReplayScreen
from voltui.tui.screens.run_detail import RunDetailScreen
from voltui.tui.state import DashboardState
from voltui.tui.widgets import (
    AgentsTable,
    DagView,
    EventsLog,
    FilterBar,
    HeaderBar,
    HealthTable,
    RunsTable,
)
from voltui.tui.widgets.events import MAX_LINES

QUICK = (
    "id: quick\nsteps:\n"
    "  - id: one\n    requires: [simulated]\n"
    "    run: {simulated: {duration: 10ms, output_lines: 2}}\n"
    "  - id: two\n    depends_on: [one]\n    requires: [simulated]\n"
    "    run: {simulated: {duration: 10ms}}\n"
)


def big_workflow(steps: int, per_level: int = 30) -> str:
    """`steps` simulated steps in levels of `per_level`, each depending on the level above."""
    lines = ["id: big", "max_parallel: 4", "steps:"]
    for n in range(steps):
        level = n // per_level
        lines.append(f"  - id: step_{n:03d}")
        if level:
            lines.append(f"    depends_on: [step_{(level - 1) * per_level:03d}]")
        lines.append("    requires: [simulated]")
        lines.append("    run: {simulated: {duration: 2s}}")
    return "\n".join(lines) + "\n"


def title(app: VoltApp) -> str:
    return str(app.query_one(EventsLog).border_title)


async def quick_run(pilot, app: VoltApp, path: Path) -> str:  # type: ignore[no-untyped-def]
    run = await app.engine.start_workflow(StartRequest(workflow=str(path)))
    await until(pilot, lambda: run_state(app, run.id) == "succeeded")
    return run.id


async def select(pilot, app: VoltApp, run_id: str) -> None:  # type: ignore[no-untyped-def]
    runs = app.query_one(RunsTable)
    await until(pilot, lambda: run_id in runs.rows)
    runs.move_cursor(row=runs.get_row_index(run_id))
    await until(pilot, lambda: app.selected_run == run_id)


# ---------------------------------------------------------------------- event filters


async def test_filter_inverts_and_clears(engine: Orchestrator, tmp_path: Path) -> None:
    path = write_workflow(tmp_path, "quick", QUICK)
    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await quick_run(pilot, app, path)
        events = app.query_one(EventsLog)
        await until(pilot, lambda: any("workflow:succeeded" in line for line in events.lines))
        assert any("step:" in line for line in events.lines)

        await pilot.press("4", "slash")  # `/` filters the focused panel: the events
        bar = app.query_one(FilterBar)
        assert bar.active and app.focused is bar.input
        await pilot.press(*"workflow:")
        await pilot.pause()
        # Applied as it is typed, before enter.
        assert app.filter_text == "workflow:" and "/workflow:/" in title(app)
        assert events.lines and all("workflow:" in line for line in events.lines)
        await pilot.press("enter")
        assert not bar.active
        assert app.filter_text == "workflow:"
        assert "/workflow:/" in title(app)
        assert events.lines and all("workflow:" in line for line in events.lines)
        # New events go through the same filter.
        await quick_run(pilot, app, path)
        await until(pilot, lambda: sum("workflow:succeeded" in x for x in events.lines) == 2)
        assert all("workflow:" in line for line in events.lines)

        # `!` inverts; the bar opens with the filter in force.
        await pilot.press("slash")
        assert bar.input.value == "workflow:"
        await pilot.press("home", "!", "enter")
        assert "/!workflow:/" in title(app)
        assert events.lines and not any("workflow:" in line for line in events.lines)
        assert any("step:output" in line for line in events.lines)

        # Paused and filtered: both in the title.
        await pilot.press("space")
        assert "PAUSED" in title(app) and "/!workflow:/" in title(app)
        await pilot.press("space")

        # escape on the dashboard clears the filters too.
        app.query_one(RunsTable).focus()
        await pilot.press("escape")
        assert app.filter_text is None and "/" not in title(app)
        assert any("workflow:" in line for line in events.lines)
        assert app.check_action("clear_filter", ()) is False  # escape is free again

        # escape in the bar clears the filter and shows everything again.
        await pilot.press("4", "slash", *"zzz", "enter")
        assert app.filter_text == "zzz" and events.line_count == 0
        await pilot.press("slash", "escape")
        assert app.filter_text is None and not bar.active
        assert "/" not in title(app)
        assert any("workflow:" in line for line in events.lines)
        assert any("step:output" in line for line in events.lines)


async def test_filter_run_shows_only_selected_run(engine: Orchestrator, tmp_path: Path) -> None:
    path = write_workflow(tmp_path, "quick", QUICK)
    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        first = await quick_run(pilot, app, path)
        second = await quick_run(pilot, app, path)
        events = app.query_one(EventsLog)
        await select(pilot, app, first)
        everything = events.line_count
        await pilot.press("f")
        assert app.run_filter == first
        assert f"run {first[:8]}" in title(app)
        assert app.state is not None
        expected = len(app.state.filtered_events(correlation_id=first))
        assert 0 < expected == events.line_count < everything
        # A text filter combines with the run filter.
        app.set_event_filter("step:output", first)
        assert events.line_count == len(
            app.state.filtered_events(text="step:output", correlation_id=first)
        )
        assert events.line_count and all("step:output" in x for x in events.lines)
        # `f` on another run switches; `f` again on it turns the run filter off.
        app.set_event_filter(None, first)
        await select(pilot, app, second)
        await pilot.press("f")
        assert app.run_filter == second
        await pilot.press("f")
        assert app.run_filter is None
        assert "run " not in title(app)
        assert events.line_count >= everything


# ---------------------------------------------------------------------- run screens


async def test_enter_opens_run_detail_and_escape_returns(
    engine: Orchestrator, tmp_path: Path
) -> None:
    path = write_workflow(tmp_path, "quick", QUICK)
    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        run_id = await quick_run(pilot, app, path)
        await select(pilot, app, run_id)
        app.query_one(RunsTable).focus()
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RunDetailScreen))
        assert isinstance(app.screen, RunDetailScreen) and app.screen.run_id == run_id
        # Dashboard-only keys are off on the run screen.
        assert app.check_action("filter", ()) is False
        await pilot.press("slash")
        assert not app.query_one(FilterBar).active
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.screen_stack[0])
        assert app.check_action("filter", ()) is True


async def test_replay_view_needs_a_finished_run(engine: Orchestrator, tmp_path: Path) -> None:
    path = write_workflow(tmp_path, "quick", QUICK)
    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        running = await engine.start_workflow(StartRequest(workflow="long_running"))
        await select(pilot, app, running.id)
        await pilot.press("p")
        await pilot.pause()
        assert app.screen is app.screen_stack[0]
        assert any("finished run" in n.message for n in app._notifications)
        done = await quick_run(pilot, app, path)
        await select(pilot, app, done)
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, ReplayScreen))
        assert isinstance(app.screen, ReplayScreen) and app.screen.run_id == done
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is app.screen_stack[0])


# ---------------------------------------------------------------------- compact DAG


async def test_compact_dag_for_300_steps(engine: Orchestrator, tmp_path: Path) -> None:
    path = write_workflow(tmp_path, "big", big_workflow(300))
    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        run = await engine.start_workflow(StartRequest(workflow=str(path)))
        await select(pilot, app, run.id)
        dag = app.query_one(DagView)
        await until(pilot, lambda: "▸ L9" in dag.text())
        # Levels of 30 steps start folded: a summary each, plus the steps that are running.
        text = dag.text()
        assert "step_299" not in text and len(text.splitlines()) < 40
        assert "▸ L0  ▶ 4 · 26 / 30" in text.splitlines()
        await pilot.press("v")
        assert dag.compact
        text = dag.text()
        assert "level 0" not in text and "step_000" not in text
        assert "ids: step_" in text and "▶ 000" in text  # the shared prefix is shown once
        assert text.endswith(" 299")  # the last cell of the grid
        width = dag.content_region.width
        lines = text.splitlines()
        assert len(lines) < 80
        grid = lines[2:]  # after the run line and the tally
        assert len(grid) > 10 and all(len(line) <= width for line in grid)
        # The body scrolls: taller than the panel, and the scroll range covers it.
        await pilot.pause()
        assert dag.max_scroll_y > 0
        # Maximised, the grid re-wraps to the wider panel.
        await pilot.press("2", "m")
        await until(pilot, lambda: len(dag.text().splitlines()) < len(lines) / 2)
        assert all(len(line) <= dag.content_region.width for line in dag.text().splitlines()[2:])
        await pilot.press("m")
        await pilot.press("v")
        assert not dag.compact and "▸ L0" in dag.text()
        await engine.cancel_run(run.id)


# ---------------------------------------------------------------------- palette and keymap


def offered(app: VoltApp) -> list[str]:
    """The prompts the open command palette lists."""
    palette = app.screen
    assert isinstance(palette, CommandPalette)
    options = palette.query_one("CommandList", OptionList)
    return [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]


async def test_palette_starts_a_workflow(engine: Orchestrator) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+p")
        await until(pilot, lambda: CommandPalette.is_open(app))
        await pilot.press(*"Start workflow flaky")
        await until(pilot, lambda: any("Start workflow flaky" in p for p in offered(app)))
        assert "Start workflow flaky" in offered(app)[0]
        await pilot.press("enter")
        await until(pilot, lambda: not CommandPalette.is_open(app))
        state = app.state
        assert state is not None
        await until(pilot, lambda: any(v.run.workflow_id == "flaky" for v in state.runs.values()))


async def test_palette_fits_the_context(engine: Orchestrator, tmp_path: Path) -> None:
    path = write_workflow(tmp_path, "quick", QUICK)
    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        done = await quick_run(pilot, app, path)
        running = await engine.start_workflow(StartRequest(workflow="long_running"))
        await select(pilot, app, running.id)
        await pilot.press("colon")  # `:` opens it too
        await until(pilot, lambda: CommandPalette.is_open(app))
        await until(pilot, lambda: any("Toggle compact DAG" in p for p in offered(app)))
        listed = offered(app)
        assert any(p.startswith(f"Cancel run {running.id[:12]}") for p in listed)
        assert not any("Replay view" in p for p in listed)  # the run is still going
        await pilot.press("escape")
        await until(pilot, lambda: not CommandPalette.is_open(app))

        await select(pilot, app, done)
        await pilot.press("colon")
        await until(pilot, lambda: CommandPalette.is_open(app))
        await until(pilot, lambda: any("Replay view" in p for p in offered(app)))
        listed = offered(app)
        assert any(p.startswith(f"Replay view {done[:12]}") for p in listed)
        assert any(p.startswith(f"Replay all {done[:12]}") for p in listed)
        assert not any(p.startswith("Cancel run") for p in listed)
        assert not any(p.startswith("Replay failed") for p in listed)  # it succeeded
        # Choosing a command runs it: the replay view of that run.
        await pilot.press(*"Replay view")
        await until(pilot, lambda: offered(app) and "Replay view" in offered(app)[0])
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ReplayScreen))
        await engine.cancel_run(running.id)


async def test_palette_read_only_offers_no_writes(engine: Orchestrator) -> None:
    app = VoltApp(engine, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+p")
        await until(pilot, lambda: CommandPalette.is_open(app))
        await pilot.press(*"start")
        await until(pilot, lambda: any("Filter" in p for p in offered(app)) or offered(app) == [])
        await pilot.pause(0.3)
        assert not any(p.startswith("Start workflow") for p in offered(app))


async def test_keymap_remaps_start(engine: Orchestrator) -> None:
    app = VoltApp(engine, keymap={"start": "n"})
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("s")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, StartScreen)
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, StartScreen))
        start = next(b for b in app.bindings_with_keymap() if b.id == "start")
        assert start.key == "n"


# ---------------------------------------------------------------------- lost terminal


async def test_sighup_exits(engine: Orchestrator) -> None:
    previous = signal.getsignal(signal.SIGHUP)
    previous_cont = signal.getsignal(signal.SIGCONT)
    app = VoltApp(engine)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            # Without the handler the signal would kill pytest itself.
            assert app._hangup_installed
            os.kill(os.getpid(), signal.SIGHUP)
            await until(pilot, lambda: app.return_code is not None, limit=10)
        assert app.return_code == 129
        assert not app._hangup_installed  # removed on the way out
        assert signal.getsignal(signal.SIGHUP) == previous
    finally:
        signal.signal(signal.SIGHUP, previous)
        signal.signal(signal.SIGCONT, previous_cont)


def test_terminal_lost_on_hangup_and_close() -> None:
    read, write = os.pipe()
    try:
        assert not terminal_lost(read)
        os.close(write)
        write = -1
        assert terminal_lost(read)
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)
    assert terminal_lost(read)  # closed descriptor


# ---------------------------------------------------------------------- polish


class _Panels(App[None]):
    def compose(self) -> ComposeResult:
        yield HealthTable()
        yield AgentsTable()


async def test_health_row_flashes_on_status_change() -> None:
    state = DashboardState()
    state.components = {
        "store": ComponentStatus(id="store", name="store", kind="db", status=HealthStatus.HEALTHY),
        "cpu": ComponentStatus(id="cpu", name="cpu", kind="os", status=HealthStatus.HEALTHY),
    }
    app = _Panels()
    async with app.run_test() as pilot:
        table = app.query_one(HealthTable)
        table.refresh_from(state)
        assert table.flashing == set()
        state.components["store"] = state.components["store"].model_copy(
            update={"status": HealthStatus.UNHEALTHY}
        )
        table.refresh_from(state)
        assert table.flashing == {"store"}
        assert table.get_cell("store", "status").spans  # styled while flashing
        assert not table.get_cell("cpu", "status").spans
        await until(pilot, lambda: not table.flashing, limit=10)  # type: ignore[arg-type]
        await until(pilot, lambda: not table.get_cell("store", "status").spans, limit=10)  # type: ignore[arg-type]


async def test_agents_sorted_with_cursor_kept(engine: Orchestrator) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        agents = app.query_one(AgentsTable)
        keys = [k.value for k in agents.rows]
        assert keys == sorted(keys)
        agents.move_cursor(row=agents.get_row_index("sim-1"))
        assert app.state is not None
        state = app.state
        gone = state.agents.pop("python")
        agents.refresh_from(state)
        assert "python" not in agents.rows and agents.selected_key() == "sim-1"
        state.agents["python"] = gone
        agents.refresh_from(state)
        assert [k.value for k in agents.rows] == keys and agents.selected_key() == "sim-1"


@pytest.mark.parametrize("embedded", [True, False])
async def test_header_and_quit_follow_embedded(engine: Orchestrator, embedded: bool) -> None:
    app = VoltApp(engine, embedded=embedded)
    async with app.run_test(size=SIZE) as pilot:
        header = app.query_one(HeaderBar)
        await until(pilot, lambda: "ev/s" in str(header.content))
        line = str(header.content)
        assert ("embedded" in line) is embedded and ("attached" in line) is not embedded
        await engine.start_workflow(StartRequest(workflow="long_running"))
        assert app.state is not None
        await until(pilot, lambda: app.state.active_runs() == 1)  # type: ignore[union-attr]
        await pilot.press("q")
        if embedded:  # quitting stops the engine's runs: ask first
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            question = str(app.screen.query_one("#confirm-question", Static).content)
            assert "active runs will be interrupted" in question.lower()
            await pilot.press("y")
        await until(pilot, lambda: app.return_code is not None)


async def test_fixed_clock_keeps_the_header_still(engine: Orchestrator) -> None:
    """With fixed clocks the header's uptime (and rate) do not move, so screenshots are stable."""
    assert engine.started_at is not None
    app = VoltApp(engine, clock=lambda: engine.started_at + 3723.0, monotonic=lambda: 100.0)
    async with app.run_test(size=SIZE) as pilot:
        header = app.query_one(HeaderBar)
        await until(pilot, lambda: "ev/s" in str(header.content))
        assert "  up 1h02m  " in str(header.content)
        await pilot.pause(1.2)  # past a slow refresh, which redraws the header
        assert "  up 1h02m  " in str(header.content)
        assert app.state is not None
        rate = app.state.events_per_second
        await pilot.pause(0.5)
        assert app.state.events_per_second == rate  # the rate window does not slide either


# ---------------------------------------------------------------------- under a flood


def output_event(seq: int) -> Event:
    data = {"step": "s", "stream": "stdout", "line": f"line {seq}"}
    return Event(seq=seq, ts=1_700_000_000.0, type="step:output", source="t", data=data)


class _Log(App[None]):
    def compose(self) -> ComposeResult:
        yield EventsLog()


async def test_events_log_keeps_the_newest_and_holds_the_view() -> None:
    """A batch larger than the buffer keeps only its newest lines; scrolled up, the view stays
    on the lines being read while newer ones push the oldest out."""
    app = _Log()
    async with app.run_test(size=(80, 12)) as pilot:
        log = app.query_one(EventsLog)
        log.write_events([output_event(n) for n in range(1, MAX_LINES + 501)])
        await pilot.pause()
        assert log.line_count == MAX_LINES
        assert log.lines[0].endswith("line 501")
        assert log.lines[-1].endswith(f"line {MAX_LINES + 500}")
        assert log.is_vertical_scroll_end  # it follows the newest line
        log.scroll_to(y=100, animate=False, immediate=True)
        await pilot.pause()
        top = log.lines[round(log.scroll_y)]
        log.write_events([output_event(MAX_LINES + 500 + n) for n in range(1, 11)])
        await pilot.pause()
        assert log.lines[round(log.scroll_y)] == top
        assert not log.is_vertical_scroll_end


async def test_stats_count_the_fold_and_repaints(engine: Orchestrator, tmp_path: Path) -> None:
    path = write_workflow(tmp_path, "quick", QUICK)
    app = VoltApp(engine)
    async with app.run_test(size=SIZE) as pilot:
        assert app.state is not None
        seq0 = app.state.seq
        await quick_run(pilot, app, path)
        await until(pilot, lambda: app.stats.repaints.get("events", 0) > 0)
        stats = app.stats.copy()
        assert stats.events_folded >= app.state.seq - seq0 > 0
        assert stats.ticks > 0 and stats.resyncs == 0
        assert {"events", "runs", "dag"} <= set(stats.repaints)
