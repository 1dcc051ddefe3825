"""Fixtures shared by the dashboard tests: a real embedded engine over the sample workflows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voltui.config import OrchestratorConfig
from voltui.engine.orchestrator import Orchestrator

ROOT = Path(__file__).parents[2]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Orchestrator]:
    """An `Orchestrator` on a SQLite file in tmp_path, started without the workflow watcher."""
    orch = Orchestrator(
        OrchestratorConfig(db=tmp_path / "x.db", workflows_dir=ROOT / "sample-workflows")
    )
    await orch.start(watch=False)
    try:
        yield orch
    finally:
        await orch.stop()
