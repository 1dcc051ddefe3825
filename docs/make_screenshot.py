"""Regenerate docs/dashboard.svg, the README's picture of the dashboard, from a real session.

    python docs/make_screenshot.py

A real embedded engine with the default agents runs the sample workflows for real (command
steps, retries, a failing code review, a cancellation), then the dashboard is photographed at
160x48 with the long-running demo in progress and selected. Nothing is simulated or pinned, so
times, ids and figures differ on every run (the snapshot tests, not this picture, pin the look).
Takes about half a minute.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # import this checkout's voltui when run as a plain script

from textual.pilot import Pilot  # noqa: E402

from voltui.config import OrchestratorConfig  # noqa: E402
from voltui.engine.api import StartRequest  # noqa: E402
from voltui.engine.models import RunState  # noqa: E402
from voltui.engine.orchestrator import Orchestrator  # noqa: E402
from voltui.tui.app import VoltApp  # noqa: E402
from voltui.tui.widgets import DagView, RunsTable  # noqa: E402

OUT = ROOT / "docs" / "dashboard.svg"
SIZE = (160, 48)
FINISHED = [
    StartRequest(workflow="flaky"),
    StartRequest(workflow="simulated_load"),
    StartRequest(workflow="code_review", inputs={"break_syntax": True}),
    StartRequest(workflow="fan_out"),
]
"""Sample runs to finish before the picture: retries, a demo DAG, a failure, a fan-out."""
LIVE = StartRequest(workflow="long_running", inputs={"seconds": 600})
"""The run shown in progress (its progress counter prints a line a second)."""


async def wait_until(pilot: Pilot[None], cond: object, what: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"make_screenshot: {what} not reached within {limit:.0f}s")
        await pilot.pause(0.2)


async def shoot(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, VoltApp)
    engine = app.engine
    for request in FINISHED:
        run = await engine.start_workflow(request)
        done = await engine.wait_run(run.id)
        print(f"  {request.workflow}: {done.state}")
    cancelled = await engine.start_workflow(StartRequest(workflow="long_running"))
    await asyncio.sleep(2.0)
    await engine.cancel_run(cancelled.id)
    live = await engine.start_workflow(LIVE)
    runs = app.query_one(RunsTable)
    await wait_until(pilot, lambda: live.id in runs.rows, "live run listed")
    runs.move_cursor(row=runs.get_row_index(live.id))
    dag = app.query_one(DagView)
    await wait_until(pilot, lambda: "tick 5/" in dag.text(), "live run's output")
    state = app.state
    assert state is not None and state.runs[live.id].run.state is RunState.RUNNING
    await pilot.pause(1.5)  # one slow refresh: durations and the header
    svg = app.export_screenshot(title="voltui", simplify=True)
    # Rich gives each export a random id; drop it so the file only changes with the picture.
    OUT.write_text(re.sub(r"\bterminal-\d+-([\w-]+)", r"terminal-\1", svg), encoding="utf-8")
    await engine.cancel_run(live.id)
    app.exit()


def main() -> None:
    async def run(db: Path) -> None:
        engine = Orchestrator(OrchestratorConfig(db=db, workflows_dir=ROOT / "sample-workflows"))
        await engine.start()
        try:
            app = VoltApp(engine)
            await app.run_async(headless=True, size=SIZE, auto_pilot=shoot)
        finally:
            await engine.stop()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp) / "screenshot.db"))
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
