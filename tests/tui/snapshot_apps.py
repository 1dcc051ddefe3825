"""A deterministic dashboard for screenshots: the real engine, pinned clocks, simulated steps.

Snapshot tests and `docs/make_screenshot.py` both use `SnapshotApp`. Nothing is mocked: a real
`Orchestrator` on a SQLite file runs the development pipeline with each step's `run` swapped for
a simulated one. What would change from one run to the next is pinned instead:

- the engine's wall clock (every event, step and run timestamp), its latency timer and its run
  ids (`Orchestrator(clock=, timer=, new_id=)`);
- the app's wall clock (uptime, running durations) and its monotonic clock (event rate and the
  once-a-second refresh), the latter a `SteppedClock` that only moves when told to;
- the time zone of the event log's wall-clock times (`fixed_timezone`);
- `watch=False`, so no psutil samples or health probes appear.

`reach_mid_run` then waits for a fixed state (not for a time): the first four steps succeeded,
`validation` running (its simulated step lasts minutes), `deployment` pending, every engine event
folded into the dashboard.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import DataTable, Input

import voltui.tui.app
from voltui.config import OrchestratorConfig
from voltui.engine.loader import load_workflow
from voltui.engine.models import AgentSpec, RunSpec, SimulatedCall, Workflow
from voltui.engine.orchestrator import Orchestrator
from voltui.tui.app import SLOW_REFRESH, VoltApp
from voltui.tui.state import RATE_WINDOW
from voltui.tui.widgets import DagView, RunsTable

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "sample-workflows"
PIPELINE = WORKFLOWS / "development_pipeline.yaml"

FIXED_TS = datetime(2026, 1, 15, 9, 30, tzinfo=UTC).timestamp()
"""The engine's "now", forever: every event, step and run carries this timestamp."""
APP_NOW = FIXED_TS + 42.0
"""The dashboard's "now": uptime and running durations read 42s."""
RUNNING_STEP = "validation"
"""The step the mid-run pipeline sits in (simulated to last far longer than any test)."""
RUNNING_SECONDS = 600.0

AGENTS = [
    AgentSpec(
        id="sim-planner",
        kind="simulated",
        capabilities=["analysis", "planning", "coding"],
        capacity=4,
        description="simulated analyst, planner and coder",
    ),
    AgentSpec(
        id="sim-runner",
        kind="simulated",
        capabilities=["shell", "test", "deploy"],
        capacity=2,
        weight=2,
        description="simulated shell, test and deploy worker",
    ),
    AgentSpec(id="shell-1", kind="command", capabilities=["shell", "build", "test"], capacity=4),
    AgentSpec(id="python", kind="python", capabilities=["python", "analysis"], capacity=4),
]
"""Simulated agents that cover every capability the development pipeline requires, plus two
real (idle) ones so the agents panel looks like a real engine's."""


class SteppedClock:
    """A monotonic clock that moves only when `advance` is called."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def counter_ids(seed: str = "voltui-snapshot") -> Callable[[], str]:
    """Run ids that look like real ones (12 hex digits, differing from the first digit, so
    short ids tell runs apart as they do in real use) but are the same on every run: the
    SHA-256 of `seed` and a counter."""
    n = 0

    def new_id() -> str:
        nonlocal n
        n += 1
        return hashlib.sha256(f"{seed}-{n}".encode()).hexdigest()[:12]

    return new_id


@contextmanager
def fixed_timezone(tz: str = "UTC") -> Iterator[None]:
    """Render wall-clock times in `tz`, then put the process's zone back."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = tz
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def simulated_pipeline() -> Workflow:
    """The development pipeline with its real work replaced by simulated steps: instant ones
    before `validation`, a very long one for it (so a run stays there), instant after."""
    workflow = load_workflow(PIPELINE)
    steps = [
        step.model_copy(
            update={
                "run": RunSpec(
                    simulated=SimulatedCall(
                        duration=RUNNING_SECONDS if step.id == RUNNING_STEP else 0.0,
                        output={"step": step.id},
                    )
                )
            }
        )
        for step in workflow.steps
    ]
    return workflow.model_copy(update={"steps": steps})


class SnapshotApp(VoltApp):
    """`VoltApp` over its own real engine, started and stopped inside the app's event loop
    (`snap_compare` runs the app with `App.run`, so the loop only exists there)."""

    # A relative CSS_PATH resolves next to the subclass's module, so name VoltApp's own file.
    CSS_PATH = str(Path(voltui.tui.app.__file__).with_name("app.tcss"))

    def __init__(self, db: Path) -> None:
        self.mono = SteppedClock()
        engine = Orchestrator(
            OrchestratorConfig(db=db, workflows_dir=WORKFLOWS, agents=AGENTS),
            clock=lambda: FIXED_TS,
            timer=lambda: 0.0,
            new_id=counter_ids(),
        )
        super().__init__(engine, clock=lambda: APP_NOW, monotonic=self.mono)
        self.theme = "textual-dark"  # not whatever TEXTUAL_THEME says on this machine
        self.orchestrator = engine
        self.run_id: str | None = None

    async def on_load(self) -> None:
        # Load comes before VoltApp's mount, which takes the engine's snapshot.
        await self.orchestrator.start(watch=False)

    async def on_unmount(self) -> None:
        await self.orchestrator.stop()

    async def start_pipeline(self) -> str:
        run = await self.orchestrator.run_workflow(simulated_pipeline())
        self.run_id = run.id
        return run.id


async def until(
    pilot: Pilot[None], cond: Callable[[], object], what: str, limit: float = 20.0
) -> None:
    """Let the app run until `cond()` holds (bounded: fails after `limit` seconds)."""
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"snapshot set-up: {what} not reached within {limit}s")
        await pilot.pause(0.05)


async def settle(pilot: Pilot[None]) -> None:
    """Fold every event the engine has emitted, then let one time-based refresh (header,
    runs, DAG) run with the final state, so the screen no longer depends on how the events
    happened to be batched."""
    app = pilot.app
    assert isinstance(app, SnapshotApp)
    engine_seq = (await app.orchestrator.snapshot()).seq
    await until(
        pilot, lambda: app.state is not None and app.state.seq >= engine_seq, "all events folded"
    )
    app.mono.advance(SLOW_REFRESH)
    await pilot.pause(0.3)  # a few fold ticks (10 Hz): the slow refresh runs in one of them
    # KeyedTable drops DataTable's line caches once new rows are measured; a cell update
    # that widens a column can still leave a line cached at the old width for one repaint,
    # so drop the caches once more before the picture (seen once in 18 runs without this).
    for screen in app.screen_stack:
        for table in screen.query(DataTable):
            table._clear_caches()
            table.refresh()
    await pilot.pause()


async def reach_mid_run(pilot: Pilot[None]) -> None:
    """Start the simulated pipeline and wait until it sits in `validation` on screen."""
    app = pilot.app
    assert isinstance(app, SnapshotApp)
    await until(pilot, lambda: app.state is not None, "dashboard snapshot")
    run_id = await app.start_pipeline()

    def mid_run() -> bool:
        view = app.state.runs.get(run_id) if app.state else None
        if view is None or len(view.steps) != 6:
            return False
        states = {sid: str(s.state) for sid, s in view.steps.items()}
        done = [s for sid, s in states.items() if sid not in (RUNNING_STEP, "deployment")]
        return (
            states[RUNNING_STEP] == "running"
            and states["deployment"] == "pending"
            and done == ["succeeded"] * 4
        )

    await until(pilot, mid_run, "validation running")
    runs = app.query_one(RunsTable)
    await until(pilot, lambda: run_id in runs.rows, "run listed")
    runs.move_cursor(row=runs.get_row_index(run_id))
    await until(pilot, lambda: app.selected_run == run_id, "run selected")
    dag = app.query_one(DagView)
    await until(pilot, lambda: RUNNING_STEP in dag.text(), "DAG drawn")
    await settle(pilot)


def _simulated(workflow_id: str, name: str, steps: list[tuple[str, float, int]]) -> Workflow:
    """A chain of simulated steps: (id, seconds, failing first attempts)."""
    body: list[dict[str, object]] = []
    for n, (step_id, seconds, fails) in enumerate(steps):
        body.append(
            {
                "id": step_id,
                "requires": ["analysis"],
                "depends_on": [steps[n - 1][0]] if n else [],
                "run": {"simulated": {"duration": seconds, "fail_attempts": fails}},
            }
        )
    return Workflow.model_validate({"id": workflow_id, "name": name, "steps": body})


EARLIER_RUNS = (
    ("nightly_report", "Nightly report", [("collect", 0.0, 0), ("render", 0.0, 0)], "succeeded"),
    ("data_import", "Data import", [("fetch", 0.0, 0), ("load", 0.0, 9)], "failed"),
    ("cleanup", "Cleanup job", [("scan", RUNNING_SECONDS, 0), ("delete", 0.0, 0)], "cancelled"),
)
"""Runs that ended before the pipeline started: one of each outcome, for the runs table."""


def _in_state(app: VoltApp, run_id: str, state: str) -> Callable[[], bool]:
    def check() -> bool:
        view = app.state.runs.get(run_id) if app.state is not None else None
        return view is not None and str(view.run.state) == state

    return check


async def reach_several_runs(pilot: Pilot[None]) -> None:
    """Three earlier runs (succeeded, failed, cancelled), then the pipeline mid-run."""
    app = pilot.app
    assert isinstance(app, SnapshotApp)
    await until(pilot, lambda: app.state is not None, "dashboard snapshot")
    engine = app.orchestrator
    for workflow_id, name, steps, outcome in EARLIER_RUNS:
        run = await engine.run_workflow(_simulated(workflow_id, name, steps))
        if outcome == "cancelled":
            await until(pilot, _in_state(app, run.id, "running"), f"{workflow_id} running")
            await engine.cancel_run(run.id)
        await until(pilot, _in_state(app, run.id, outcome), f"{workflow_id} {outcome}")
    await reach_mid_run(pilot)


def map_workflow() -> Workflow:
    """A map over 30 planned items (`tests.tui.map_steps`), four at a time: items 20 to 23
    run for minutes, item 7 fails, the rest end at once; so the map sits with 19 children
    succeeded, one failed, four running and six not started."""
    step = "tests.tui.map_steps:"
    plan = {"count": 30, "fail": [7], "fail_if": __file__, "slow": [20, 21, 22, 23]}
    plan["slow_seconds"] = RUNNING_SECONDS
    return Workflow.model_validate(
        {
            "id": "review_fanout",
            "name": "Review fan-out",
            "steps": [
                {
                    "id": "plan",
                    "requires": ["python"],
                    "run": {"python": step + "plan"},
                    "params": plan,
                },
                {
                    "id": "each",
                    "depends_on": ["plan"],
                    "requires": ["python"],
                    "map": {
                        "over": "${steps.plan.output.tasks}",
                        "max_parallel": 4,
                        "on_failure": "collect",
                    },
                    "run": {"python": step + "work"},
                },
                {
                    "id": "gather",
                    "depends_on": ["each"],
                    "requires": ["python"],
                    "run": {"python": step + "total"},
                },
            ],
        }
    )


async def reach_map_run(pilot: Pilot[None]) -> str:
    """Start `map_workflow` and wait until its map sits as described there, selected."""
    app = pilot.app
    assert isinstance(app, SnapshotApp)
    await until(pilot, lambda: app.state is not None, "dashboard snapshot")
    run = await app.orchestrator.run_workflow(map_workflow())

    def settled() -> bool:
        view = app.state.runs.get(run.id) if app.state else None
        if view is None or len(view.children) != 24:
            return False
        states = sorted(str(c.state) for c in view.children.values())
        return states == sorted(["succeeded"] * 19 + ["failed"] + ["running"] * 4)

    await until(pilot, settled, "map children settled")
    runs = app.query_one(RunsTable)
    await until(pilot, lambda: run.id in runs.rows, "run listed")
    runs.move_cursor(row=runs.get_row_index(run.id))
    await until(pilot, lambda: app.selected_run == run.id, "run selected")
    # The agents' load events are paced by time, so their number (and the header's event
    # rate) varies from run to run: let the rate window pass them by (the monotonic clock
    # only paces; durations and uptime read the pinned wall clock).
    app.mono.advance(RATE_WINDOW + 1.0)
    await settle(pilot)
    return run.id


async def open_with_key(pilot: Pilot[None], key: str, screen: type) -> None:
    """Mid-run, press `key` and wait for `screen` to be on top, with no blinking cursor."""
    await reach_mid_run(pilot)
    await pilot.press(key)
    await until(pilot, lambda: isinstance(pilot.app.screen, screen), f"{screen.__name__} open")
    await pilot.pause()
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    await settle(pilot)
