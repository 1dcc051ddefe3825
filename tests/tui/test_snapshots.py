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
from textual.pilot import Pilot

from tests.tui.snapshot_apps import (
    RUNNING_STEP,
    SnapshotApp,
    fixed_timezone,
    open_with_key,
    reach_mid_run,
)
from voltui.tui.screens import HelpScreen, StartScreen
from voltui.tui.widgets import DagView

SnapCompare = Callable[..., bool]


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    with fixed_timezone("UTC"):
        yield


@pytest.fixture
def app(tmp_path: Path) -> SnapshotApp:
    return SnapshotApp(tmp_path / "snap.db")


def test_main_screen_80x24(snap_compare: SnapCompare, app: SnapshotApp) -> None:
    """The smallest supported terminal, mid-run: panels stacked for 80 columns."""
    assert snap_compare(app, terminal_size=(80, 24), run_before=reach_mid_run)


def test_main_screen_160x48(snap_compare: SnapCompare, app: SnapshotApp) -> None:
    """A large terminal, mid-run: every panel visible at once."""
    assert snap_compare(app, terminal_size=(160, 48), run_before=reach_mid_run)


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
