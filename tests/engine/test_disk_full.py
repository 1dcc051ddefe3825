"""A full disk under a running engine: it holds its writes and says so, refuses new runs with a
clear message, loses nothing committed, carries on when space returns, and still stops at once.

Uses a real 32 MB tmpfs (needs the right to mount, as root in CI has); skipped otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from voltui.config import OrchestratorConfig
from voltui.engine.errors import UserError
from voltui.engine.models import AgentSpec, RunState, Workflow
from voltui.engine.orchestrator import Orchestrator


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32M", "tmpfs", str(disk)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


def _chain(n: int) -> Workflow:
    steps = [
        {
            "id": f"s{i}",
            "depends_on": [f"s{i - 1}"] if i else [],
            "run": {"simulated": {"duration": "30ms", "output_lines": 20}},
        }
        for i in range(n)
    ]
    return Workflow.model_validate({"id": "chain", "timeout": None, "steps": steps})


async def _until(cond: object, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_full_disk_pauses_runs_refuses_new_ones_and_recovers(small_disk: Path) -> None:
    config = OrchestratorConfig(
        db=small_disk / "v.db",
        workflow_timeout=None,
        agents=[AgentSpec(id="sim", kind="simulated", capacity=2)],
    )
    engine = Orchestrator(config)
    await engine.start(watch=False)
    try:
        run = await engine.run_workflow(_chain(60))
        await _until(lambda: engine.workflows.live_run(run.id).steps_done >= 3, "no progress")
        filler = await asyncio.to_thread(_fill, small_disk)
        await _until(lambda: engine.store.full is not None, "the store never noticed")
        assert any(e.type == "store:full" for e in engine.dispatcher.history())
        with pytest.raises(UserError, match="cannot take writes"):
            await engine.run_workflow(_chain(1))
        paused_at = engine.workflows.live_run(run.id).steps_done
        await asyncio.sleep(1.0)
        # Steps wait for their results to be durable, so the run does not race ahead.
        assert engine.workflows.live_run(run.id).steps_done <= paused_at + 2

        os.unlink(filler)  # space returns
        await _until(lambda: engine.store.full is None, "writes never resumed")
        final = await asyncio.wait_for(engine.wait_run(run.id), 60)
        assert final.state is RunState.SUCCEEDED
        detail = await engine.get_run(run.id)
        assert all(s.state.ok for s in detail.steps)
        assert any(e.type == "store:writable" for e in engine.dispatcher.history())
    finally:
        await engine.stop()


async def test_an_engine_on_a_full_disk_still_stops_at_once(small_disk: Path) -> None:
    config = OrchestratorConfig(
        db=small_disk / "v.db",
        workflow_timeout=None,
        agents=[AgentSpec(id="sim", kind="simulated", capacity=2)],
    )
    engine = Orchestrator(config)
    await engine.start(watch=False)
    run = await engine.run_workflow(_chain(60))
    await _until(lambda: engine.workflows.live_run(run.id).steps_done >= 2, "no progress")
    await asyncio.to_thread(_fill, small_disk)
    await _until(lambda: engine.store.full is not None, "the store never noticed")
    started = time.monotonic()
    with contextlib.suppress(Exception):  # uncommitted writes are reported lost
        await asyncio.wait_for(engine.stop(), 15)
    assert time.monotonic() - started < 10


async def test_a_cancel_on_a_full_disk_returns_at_once(small_disk: Path) -> None:
    config = OrchestratorConfig(
        db=small_disk / "v.db",
        workflow_timeout=None,
        agents=[AgentSpec(id="sim", kind="simulated", capacity=2)],
    )
    engine = Orchestrator(config)
    await engine.start(watch=False)
    try:
        run = await engine.run_workflow(_chain(60))
        await _until(lambda: engine.workflows.live_run(run.id).steps_done >= 2, "no progress")
        await asyncio.to_thread(_fill, small_disk)
        await _until(lambda: engine.store.full is not None, "the store never noticed")
        final = await asyncio.wait_for(engine.cancel_run(run.id), 10)
        assert final.state is RunState.CANCELLED
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(engine.stop(), 15)
