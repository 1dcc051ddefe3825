"""A dashboard whose engine goes out of reach and comes back (attached mode, issue 9 item 2).

While the link is down every panel is marked stale and the clocks stand still; when it is back a
fresh snapshot replaces the whole state (runs, DAG, agents, health, uptime) before events resume.
A fake `EngineAPI` plays the server, so the test decides when the link drops, what the
"restarted server" says, and which events arrive.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot

from tests.tui.fake_engine import FakeEngine
from voltui.engine.api import EngineSnapshot
from voltui.engine.models import (
    AgentLoad,
    Event,
    EventStats,
    HealthStatus,
    Run,
    RunDetail,
    RunState,
    StepRun,
    StepState,
    Workflow,
)
from voltui.tui.app import VoltApp
from voltui.tui.state import DashboardState
from voltui.tui.widgets import DagView, RunsTable
from voltui.tui.widgets.header import HeaderBar

T0 = 1_800_000_000.0
RUN = "r1aaaaaaaaaaaaaa"
WORKFLOW = Workflow.model_validate(
    {
        "id": "wf",
        "name": "Two steps",
        "steps": [
            {"id": "a", "run": {"simulated": {"duration": 1}}},
            {"id": "b", "depends_on": ["a"], "run": {"simulated": {"duration": 60}}},
        ],
    }
)


def snapshot(
    *, seq: int, started_at: float, health: HealthStatus, agent: str, run: Run
) -> EngineSnapshot:
    return EngineSnapshot(
        seq=seq,
        ts=T0,
        started_at=started_at,
        health=health,
        components=[],
        agents=[AgentLoad(id=agent, kind="simulated", capabilities=["simulated"])],
        runs=[run],
        cache=[],
        events=EventStats(),
    )


def detail(run: Run, b: StepState, b_error: str | None = None) -> RunDetail:
    steps = [
        StepRun(run_id=run.id, step_id="a", state=StepState.SUCCEEDED, attempt=1,
                started_at=T0 - 20, finished_at=T0 - 15),
        StepRun(run_id=run.id, step_id="b", state=b, attempt=1, started_at=T0 - 10,
                finished_at=None if b is StepState.RUNNING else T0 + 3, error=b_error),
    ]  # fmt: skip
    return RunDetail(run=run, workflow=WORKFLOW, steps=steps)


async def until(pilot: Pilot[Any], cond: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within 10 s")
        await pilot.pause(0.02)


async def test_a_lost_link_marks_everything_stale_and_its_return_replaces_the_state() -> None:
    running = Run(id=RUN, workflow_id="wf", workflow_name="Two steps", state=RunState.RUNNING,
                  created_at=T0 - 30, started_at=T0 - 20, steps_total=2, steps_done=1)  # fmt: skip
    old = snapshot(seq=40, started_at=T0 - 100, health=HealthStatus.HEALTHY, agent="old-agent",
                   run=running)  # fmt: skip
    engine = FakeEngine(old, {RUN: detail(running, StepState.RUNNING)})
    wall = [T0]
    mono = [500.0]
    app = VoltApp(engine, embedded=False, clock=lambda: wall[0], monotonic=lambda: mono[0])  # type: ignore[arg-type]
    async with app.run_test(size=(160, 48)) as pilot:
        header = app.query_one(HeaderBar)
        dag = app.query_one(DagView)
        runs = app.query_one(RunsTable)
        await until(pilot, lambda: "▶ b" in dag.text(), "the running step in the DAG")
        assert "● healthy" in header.render_state(app.state, embedded=False).plain
        assert "10.0s" in dag.text()  # b has run for 10 s

        # The server dies.
        engine.connection = "reconnecting"
        await until(pilot, lambda: app.screen.has_class("-stale"), "the stale marking")
        wall[0] += 7  # time goes on...
        mono[0] += 7
        await until(pilot, lambda: "last update 7s ago" in str(header.render()), "the age")
        line = str(header.render())
        assert "? was healthy" in line and "RECONNECTING" in line and "up 1m40s" in line
        # ...but the clocks shown do not: durations stop at the moment the link was lost.
        assert app.clock() == T0
        assert "10.0s" in dag.text() and "17.0s" not in dag.text()
        assert runs.get_cell(RUN, "time").plain == "20.0s"

        # The server is back, restarted on the same database: another start time, another
        # agent, the run interrupted and its running step cancelled.
        interrupted = running.model_copy(
            update={"state": RunState.INTERRUPTED, "finished_at": T0 + 3, "error": "interrupted"}
        )
        engine.snap = snapshot(seq=12, started_at=T0 + 5, health=HealthStatus.DEGRADED,
                               agent="new-agent", run=interrupted)  # fmt: skip
        engine.details = {RUN: detail(interrupted, StepState.CANCELLED, "interrupted")}
        engine.connection = "connected"
        await until(pilot, lambda: not app.screen.has_class("-stale"), "the state replaced")
        state = app.state
        assert state is not None and not state.stale and state.seq == 12
        assert list(state.agents) == ["new-agent"]
        assert state.runs[RUN].run.state is RunState.INTERRUPTED
        await until(pilot, lambda: "■ b" in dag.text(), "the DAG of the restarted server")
        assert "▶" not in dag.text() and "interrupted" in dag.text()
        assert app.clock() == wall[0]  # the clock runs again
        await until(pilot, lambda: "▲ degraded" in str(header.render()), "the new health")
        assert "up 2.0s" in str(header.render())  # the new server's uptime, not the old one
        assert "last update" not in str(header.render())
        await until(pilot, lambda: runs.get_cell(RUN, "state").plain.endswith("interrupted"), "row")

        # Events resume from the new snapshot, not from where the old server's stream stopped.
        assert engine.since[-1] == 12 and len(engine.since) == 2
        load = {"id": "new-agent", "kind": "simulated", "capabilities": ["simulated"]}
        load |= {"active": 1, "capacity": 3}
        engine.send([Event(seq=13, ts=T0 + 8, type="agent:load", source="t", data=load)])
        await until(pilot, lambda: app.state.agents["new-agent"].active == 1, "an event folded")


async def test_embedded_engines_are_never_stale() -> None:
    run = Run(id=RUN, workflow_id="wf", workflow_name="w", created_at=T0)
    engine = FakeEngine(
        snapshot(seq=1, started_at=T0, health=HealthStatus.HEALTHY, agent="x", run=run),
        {RUN: detail(run, StepState.RUNNING)},
    )
    engine.connection = "embedded"
    app = VoltApp(engine)  # type: ignore[arg-type]
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.state is not None, "the state")
        for _ in range(5):
            await pilot.pause(0.05)
        assert not app.state.stale and not app.screen.has_class("-stale")
        assert engine.snapshots == 1


def test_mark_stale_keeps_the_first_moment_and_add_run_shows_a_run_at_once() -> None:
    state = DashboardState()
    assert not state.stale and state.frozen_at is None
    state.mark_stale(10.0, T0)
    state.mark_stale(20.0, T0 + 10)  # still the same outage
    assert state.stale and state.stale_since == 10.0 and state.frozen_at == T0
    run = Run(id=RUN, workflow_id="wf", workflow_name="w", created_at=T0, error="\x1b[2Jboom")
    view = state.add_run(run)
    assert state.runs[RUN] is view and view.run.error == "boom" and not view.detail_loaded
    assert state.add_run(run.model_copy(update={"workflow_name": "other"})) is view
    # Its `workflow:queued` event, folded later, fills in the DAG of the same view.
    state.apply([Event(seq=1, ts=T0, type="workflow:queued", source="t", correlation_id=RUN,
                       data={"workflow_id": "wf", "dag": [["a", []]]})])  # fmt: skip
    assert state.runs[RUN] is view and view.detail_loaded and list(view.steps) == ["a"]
