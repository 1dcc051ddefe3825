"""The dashboard's look, as SVG snapshots (pytest-textual-snapshot).

Each test drives a real engine through the simulated development pipeline to a fixed mid-run
state (see `snapshot_apps`), so the pictures are the same on every run without mocking the
engine. After an intended change of the look, review the report and accept the new pictures
with `pytest tests/tui/test_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.geometry import Region
from textual.pilot import Pilot

from tests.tui.snapshot_apps import (
    RUNNING_STEP,
    SnapshotApp,
    fixed_timezone,
    open_with_key,
    reach_map_run,
    reach_mid_run,
    reach_several_runs,
    settle,
)
from voltui.tui.screens import HelpScreen, StartScreen
from voltui.tui.widgets import DagView, RunsTable

SnapCompare = Callable[..., bool]


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    with fixed_timezone("UTC"):
        yield


@pytest.fixture
def app(tmp_path: Path) -> SnapshotApp:
    return SnapshotApp(tmp_path / "snap.db")


def runs_table_lines(pilot: Pilot[Any]) -> list[str]:
    """The runs panel as drawn, inside its border."""
    table = pilot.app.query_one(RunsTable)
    width, height = table.outer_size
    strips = table.render_lines(Region(0, 0, width, height))
    return ["".join(segment.text for segment in strip)[1:-1] for strip in strips[1:-1]]


async def several_runs_readable(pilot: Pilot[Any]) -> None:
    """Four runs (succeeded, failed, cancelled, running): each one's id, workflow and state
    must be on its line of the runs table, whatever the terminal's width."""
    await reach_several_runs(pilot)
    app = pilot.app
    assert app.state is not None
    lines = runs_table_lines(pilot)
    assert len(app.state.runs) == 4
    for view in app.state.runs.values():
        run = view.run
        line = next((x for x in lines if run.id[:8] in x), None)
        assert line is not None, (run.id, lines)
        assert run.workflow_name[:10] in line and str(run.state) in line, line


def test_main_screen_80x24(snap_compare: SnapCompare, app: SnapshotApp) -> None:
    """The smallest supported terminal: panels stacked for 80 columns; every run's id,
    workflow and state readable."""
    assert snap_compare(app, terminal_size=(80, 24), run_before=several_runs_readable)


def test_main_screen_160x48(snap_compare: SnapCompare, app: SnapshotApp) -> None:
    """A large terminal: every panel visible at once; every run's id, workflow and state
    readable, with its progress and duration."""
    assert snap_compare(app, terminal_size=(160, 48), run_before=several_runs_readable)


def test_dag_mid_run(snap_compare: SnapCompare, app: SnapshotApp) -> None:
    """The development pipeline's DAG maximised: four steps done, validation running,
    deployment waiting."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await reach_mid_run(pilot)
        await pilot.press("2", "m")
        dag = pilot.app.query_one(DagView)
        assert pilot.app.screen.maximized is dag
        assert RUNNING_STEP in dag.text()

    assert snap_compare(app, terminal_size=(100, 30), run_before=run_before)


def test_dag_map_step_open(snap_compare: SnapCompare, app: SnapshotApp) -> None:
    """`enter` on a map step lists its children under it: 19 succeeded, item 7 failed with
    its error, four running with their last line, six not started."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await reach_map_run(pilot)
        await pilot.press("2", "m")
        dag = pilot.app.query_one(DagView)
        await pilot.press("g", "j", "j", "j")
        assert dag.cursor == ("step", "each")
        await pilot.press("enter")
        assert "each[29]" in dag.text()
        await pilot.press("j")  # the cursor on the first child
        await settle(pilot)

    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)


def test_start_dialog(snap_compare: SnapCompare, app: SnapshotApp) -> None:
    """`s` over the running dashboard: the sample workflows to choose from."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await open_with_key(pilot, "s", StartScreen)

    assert snap_compare(app, terminal_size=(100, 30), run_before=run_before)


def test_help_screen(snap_compare: SnapCompare, app: SnapshotApp) -> None:
    """`?`: every key with what it does, and the DAG symbols."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await open_with_key(pilot, "?", HelpScreen)

    assert snap_compare(app, terminal_size=(100, 40), run_before=run_before)
