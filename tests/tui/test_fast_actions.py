"""Actions that must show at once: the command palette and the start dialog open on the
workflow list the app fetched in the background, and a started run's row is drawn from
`start_workflow`'s answer without waiting for its first event (issue 9, item 11)."""

from __future__ import annotations

from tests.tui.fake_engine import FakeEngine
from tests.tui.test_stale import RUN, T0, snapshot, until
from voltui.engine.api import StartRequest, WorkflowInfo
from voltui.engine.models import HealthStatus, Run
from voltui.tui.app import VoltApp
from voltui.tui.widgets import RunsTable


async def test_palette_and_start_dialog_use_the_cached_catalogue() -> None:
    """Opening the palette asks the engine nothing: the list was fetched in the background.
    Help texts are plain text: a `[demo]` in a workflow name stays."""
    from textual.command import CommandPalette
    from textual.widgets import OptionList

    from voltui.tui.screens import StartScreen

    run = Run(id=RUN, workflow_id="wf", workflow_name="w", created_at=T0)
    engine = FakeEngine(
        snapshot(seq=1, started_at=T0, health=HealthStatus.HEALTHY, agent="x", run=run), {}
    )
    engine.workflows = [WorkflowInfo(id="load", name="[demo] Load test", steps=3)]
    app = VoltApp(engine, embedded=False)  # type: ignore[arg-type]
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: engine.listed == 1, "the first fetch")
        for _ in range(3):
            await pilot.press("ctrl+p")
            await until(pilot, lambda: CommandPalette.is_open(app), "the palette")
            palette = app.screen
            options = palette.query_one("CommandList", OptionList)

            def prompts(options: OptionList = options) -> list[str]:
                count = options.option_count
                return [str(options.get_option_at_index(i).prompt) for i in range(count)]

            await until(pilot, lambda: any("Start workflow load" in p for p in prompts()), "entry")
            assert any("[demo] Load test" in p for p in prompts())
            await pilot.press("escape")
            await until(pilot, lambda: not CommandPalette.is_open(app), "closed")
        assert engine.listed == 1
        # `s` opens on the cached list too (and refreshes it behind the dialog).
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, StartScreen), "the start dialog")
        await until(pilot, lambda: engine.listed == 2, "the refresh behind the dialog")


async def test_a_started_run_shows_at_once() -> None:
    """The row comes from `start_workflow`'s answer, not from an event (this engine sends
    none), and the new run is selected."""
    run = Run(id=RUN, workflow_id="wf", workflow_name="w", created_at=T0)
    engine = FakeEngine(
        snapshot(seq=1, started_at=T0, health=HealthStatus.HEALTHY, agent="x", run=run), {}
    )
    app = VoltApp(engine, embedded=False)  # type: ignore[arg-type]
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.state is not None, "the state")
        runs = app.query_one(RunsTable)
        await app._start(StartRequest(workflow="load"))
        new = "run0000000000001"
        assert new in runs.rows  # no tick in between: drawn by the start itself
        assert runs.get_cell(new, "state").plain.endswith("queued")
        await until(pilot, lambda: app.selected_run == new, "the new run selected")
