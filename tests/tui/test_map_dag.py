"""A map step in the DAG panel: one row with its children's counts that `enter` opens into one
row per child (state, duration, attempt, last line or error), whose own `enter` opens that
child's log; the children's states come from the loaded run detail and then from events, and
the cost of an event does not grow with the number of children.

Real engine (python agent, `tests.tui.map_steps`), real dashboard (Pilot).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot

from voltui.config import OrchestratorConfig
from voltui.engine.api import ReplayRequest
from voltui.engine.models import AgentSpec, Event, RunState, StepState, Workflow
from voltui.engine.orchestrator import Orchestrator
from voltui.tui.app import VoltApp
from voltui.tui.screens.run_detail import RunDetailScreen
from voltui.tui.state import DashboardState
from voltui.tui.widgets import RunsTable
from voltui.tui.widgets.dag import DagView
from voltui.tui.widgets.logview import LogView

FAILING = 7


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Orchestrator]:
    agents = [AgentSpec(id="py", kind="python", capabilities=["python"], capacity=16)]
    orch = Orchestrator(OrchestratorConfig(db=tmp_path / "m.db", agents=agents))
    await orch.start(watch=False)
    try:
        yield orch
    finally:
        await orch.stop()


def map_flow(count: int, marker: Path | None = None, **params: Any) -> Workflow:
    """plan → each (a map over the planned items, collecting failures) → gather."""
    plan_params: dict[str, Any] = {"count": count, **params}
    if marker is not None:
        plan_params |= {"fail": [FAILING], "fail_if": str(marker)}
    return Workflow.model_validate(
        {
            "id": "fanout",
            "name": "Fan out",
            "steps": [
                {
                    "id": "plan",
                    "run": {"python": "tests.tui.map_steps:plan"},
                    "params": plan_params,
                },
                {
                    "id": "each",
                    "depends_on": ["plan"],
                    "map": {
                        "over": "${steps.plan.output.tasks}",
                        "max_parallel": 8,
                        "on_failure": "collect",
                    },
                    "run": {"python": "tests.tui.map_steps:work"},
                },
                {
                    "id": "gather",
                    "depends_on": ["each"],
                    "run": {"python": "tests.tui.map_steps:total"},
                },
            ],
        }
    )


async def until(pilot: Pilot[Any], cond: Callable[[], object], limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {limit}s")
        await pilot.pause(0.05)


def child_rows(text: str) -> dict[str, str]:
    """The child rows of the panel's text, by child id (`each[3]` → its whole line)."""
    rows: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if line.startswith("   ") and len(parts) > 1 and parts[1].startswith("each["):
            rows[parts[1]] = line
    return rows


def group_line(text: str) -> str:
    [line] = [x for x in text.splitlines() if x.split()[1:2] == ["each"]]
    return line


async def select_run(pilot: Pilot[Any], app: VoltApp, run_id: str) -> DagView:
    runs = app.query_one(RunsTable)
    await until(pilot, lambda: run_id in runs.rows)
    runs.move_cursor(row=runs.get_row_index(run_id))
    await until(pilot, lambda: app.selected_run == run_id)
    await pilot.press("2")
    dag = app.query_one(DagView)
    await until(pilot, lambda: "gather" in dag.text())
    return dag


# --------------------------------------------------------------------------- in the dashboard


async def test_enter_opens_a_map_into_its_children_and_a_child_into_its_log(
    engine: Orchestrator, tmp_path: Path
) -> None:
    """A finished run seen first in the snapshot: its children come from the run detail."""
    marker = tmp_path / "fail"
    marker.touch()
    run = await engine.run_workflow(map_flow(30, marker))
    assert (await engine.wait_run(run.id)).state is RunState.FAILED
    app = VoltApp(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        dag = await select_run(pilot, app, run.id)
        assert dag.has_focus and dag.cursor == ("level", 0)
        await pilot.press("j", "j", "j")
        assert dag.cursor == ("step", "each")
        text = dag.text()
        assert child_rows(text) == {}
        group = group_line(text)
        assert "▸ ✓ 29 ✗ 1 / 30" in group  # shut: enter opens it
        assert "1 of 30 children failed (all ran); each[7]: RuntimeError" in group

        await pilot.press("enter")  # the group opens: one row per child, under it
        text = dag.text()
        assert "▾ ✓ 29 ✗ 1 / 30" in group_line(text)
        rows = child_rows(text)
        assert list(rows) == [f"each[{i}]" for i in range(30)]
        lines = text.splitlines()
        assert lines.index(rows["each[0]"]) == lines.index(group_line(text)) + 1
        # The panel is narrow beside the runs and agents: the error before attempt and agent.
        assert dag.size.width < 40
        failed = rows[f"each[{FAILING}]"].split()
        assert (
            failed[:2] == ["✗", "each[7]"]
            and failed[3:] == "RuntimeError: item 7 is broken".split()
        )
        await pilot.press("m")  # maximised: every column
        await until(pilot, lambda: dag.size.width > 100 and "1/1" in dag.text())
        rows = child_rows(dag.text())
        failed = rows[f"each[{FAILING}]"].split()
        assert failed[0] == "✗" and failed[3:5] == ["1/1", "py"]
        assert " ".join(failed[5:]) == "RuntimeError: item 7 is broken"
        ok = [r for cid, r in rows.items() if cid != "each[7]"]
        # state, id, duration, attempt, agent (a loaded run's steps carry no output line)
        assert all(r.split()[0] == "✓" and r.split()[3:] == ["1/1", "py"] for r in ok), ok
        assert dag.cursor == ("step", "each")

        await pilot.press("j")  # the cursor goes onto the children
        assert dag.cursor == ("child", "each[0]")
        await pilot.press("k", "n")  # the failed child, from its map step
        assert dag.cursor == ("child", "each[7]")

        await pilot.press("enter")  # the child's log and error, as a step's
        detail = app.screen
        assert isinstance(detail, RunDetailScreen)
        await until(pilot, lambda: detail.selected_step == "each[7]")
        log = detail.query_one("#detail-log", LogView)
        await until(pilot, lambda: "working on 7" in "\n".join(log.lines))
        side = str(detail.query_one("#detail-output").render())
        assert "item 7 is broken" in side
        table = detail.query_one("#detail-steps")
        assert list(table.rows) == ["plan", "each", "each[7]", "gather"]  # under its map step
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is not detail)

        assert dag.cursor == ("child", "each[7]")
        await pilot.press("h")  # folds the group from one of its children
        assert dag.cursor == ("step", "each") and child_rows(dag.text()) == {}
        await pilot.press("l")
        assert len(child_rows(dag.text())) == 30
        await pilot.press("enter")  # enter again on the group folds it
        assert child_rows(dag.text()) == {} and "▸ " in group_line(dag.text())


async def test_children_follow_the_events_of_a_live_map(engine: Orchestrator) -> None:
    """Opened while the map runs: children appear and change state from events; those that
    have not started show as pending."""
    app = VoltApp(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.state is not None)
        run = await engine.run_workflow(map_flow(12, slow=[10, 11], slow_seconds=600.0))
        dag = await select_run(pilot, app, run.id)
        view = app.state.runs[run.id]  # type: ignore[union-attr]
        await until(pilot, lambda: view.steps["each"].map_total == 12)
        dag.move_cursor(("step", "each"))
        await pilot.press("enter")
        await until(
            pilot, lambda: sum(r.split()[0] == "✓" for r in child_rows(dag.text()).values()) == 10
        )
        rows = child_rows(dag.text())
        assert [rows[f"each[{i}]"].split()[0] for i in (10, 11)] == ["▶", "▶"]
        assert "working on 10" in rows["each[10]"]
        assert "▾ ▶ 2 ✓ 10 / 12" in group_line(dag.text())
        assert view.changed_steps <= set(view.steps)  # children never enter the DAG's counts
        await engine.cancel_run(run.id)
        await until(pilot, lambda: child_rows(dag.text())["each[11]"].split()[0] == "■")


# --------------------------------------------------------------------------- the fold


async def fold_run(engine: Orchestrator, workflow: Workflow) -> tuple[DashboardState, str]:
    state = DashboardState.from_snapshot(await engine.snapshot())
    stream = engine.subscribe("*", since_seq=state.seq)
    run = await engine.run_workflow(workflow)

    async def collect() -> None:
        async for batch in stream:
            state.apply(batch)
            if any(
                e.type.startswith("workflow:")
                and e.correlation_id == run.id
                and e.type[9:] in {s.value for s in RunState if s.finished}
                for e in batch
            ):
                return

    await asyncio.wait_for(collect(), 30)
    assert state.fold_errors == 0
    return state, run.id


def child_figures(state: DashboardState, run_id: str) -> dict[str, tuple[Any, ...]]:
    children = state.runs[run_id].children
    return {
        cid: (c.state, c.attempt, c.max_attempts, c.agent, c.error, c.reused_from)
        for cid, c in children.items()
    }


async def from_detail(engine: Orchestrator, run_id: str) -> DashboardState:
    """A fresh state as the dashboard builds one after a (re)sync: snapshot, then get_run."""
    state = DashboardState.from_snapshot(await engine.snapshot())
    state.add_run_detail(await engine.get_run(run_id))
    return state


async def test_events_and_the_run_detail_agree_and_a_replay_shows_reused_children(
    engine: Orchestrator, tmp_path: Path
) -> None:
    marker = tmp_path / "fail"
    marker.touch()
    live, first = await fold_run(engine, map_flow(30, marker))
    folded = child_figures(live, first)
    assert len(folded) == 30
    assert folded[f"each[{FAILING}]"][:2] == (StepState.FAILED, 1)
    assert "RuntimeError: item 7 is broken" in (folded["each[7]"][4] or "")
    assert sum(f[0] is StepState.SUCCEEDED for f in folded.values()) == 29
    loaded = await from_detail(engine, first)
    assert child_figures(loaded, first) == folded  # the store's rows, through get_run
    assert loaded.runs[first].steps["each"].map_total == 30
    assert loaded.runs[first].steps["each"].last_line == "✓ 29 ✗ 1 / 30"

    marker.unlink()  # item 7 works now: replay only what failed
    state = DashboardState.from_snapshot(await engine.snapshot())
    stream = engine.subscribe("*", since_seq=state.seq)
    replay = await engine.replay_run(ReplayRequest(run_id=first, mode="failed"))
    await asyncio.wait_for(engine.wait_run(replay.id), 30)
    async for batch in stream:
        state.apply(batch)
        if state.runs.get(replay.id) and state.runs[replay.id].run.state.finished:
            break
    again = child_figures(state, replay.id)
    assert again == child_figures(await from_detail(engine, replay.id), replay.id)
    assert again["each[7]"][0] is StepState.SUCCEEDED and again["each[7]"][5] is None
    reused = {cid for cid, f in again.items() if f[5] == first}
    assert reused == {f"each[{i}]" for i in range(30) if i != FAILING}

    app = _Host()
    async with app.run_test(size=(120, 45)) as pilot:
        dag = app.query_one(DagView)
        dag.refresh_from(state.runs[replay.id])
        dag.move_cursor(("step", "each"))
        dag.focus()
        await pilot.press("enter")
        rows = child_rows(dag.text())
        assert f"reused from run {first[:12]}" in rows["each[0]"]
        assert "reused" not in rows["each[7]"] and "done with 7" in rows["each[7]"]


class _Host(App[None]):
    def compose(self) -> ComposeResult:
        yield DagView(id="dag")


# --------------------------------------------------------------------------- cost


def _events(run_id: str, children: int) -> tuple[list[Event], list[Event]]:
    """A run whose map step `each` has `children` children: the events that set it up (all
    children running), and two events per child that finish the last 100 (or all) of them,
    each with one line of output."""
    seq = iter(range(1, 10**9))

    def ev(type_: str, **data: Any) -> Event:
        return Event(
            seq=next(seq), ts=1.0, type=type_, source="t", correlation_id=run_id, data=data
        )

    setup = [
        ev("workflow:queued", workflow_id="w", dag=[["plan", []], ["each", ["plan"]]]),
        ev("workflow:started"),
        ev("step:started", step="each", state="running", attempt=1, kind="map", children=children),
    ]
    setup += [
        ev("step:started", step=f"each[{i}]", state="running", attempt=1, agent="py")
        for i in range(children)
    ]
    work: list[Event] = []
    for i in range(max(0, children - 100), children):
        work.append(ev("step:output", step=f"each[{i}]", line=f"line of {i}"))
        work.append(
            ev(
                "step:succeeded",
                step=f"each[{i}]",
                state="succeeded",
                attempt=1,
                duration=0.5,
                map="each",
                index=i,
            )
        )
    return setup, work


async def test_the_cost_of_an_event_does_not_grow_with_the_children() -> None:
    """Counted, never timed: every Python call and line run while 200 child events are folded,
    and while the open group is repainted after each 20 of them (as the app's ticks do), for
    maps of 100 and of 1,000 children. A loop over the children, even one without calls, would
    add its lines per event or per repaint."""

    async def cost(children: int) -> tuple[int, int]:
        state = DashboardState()
        setup, work = _events("r1", children)
        state.apply(setup)
        view = state.runs["r1"]
        app = _Host()
        async with app.run_test(size=(100, 30)) as pilot:
            dag = app.query_one(DagView)
            dag.refresh_from(view)
            dag.move_cursor(("step", "each"))
            dag.focus()
            await pilot.press("enter")
            assert len(child_rows(dag.text())) == children
            dag.move_cursor(("child", f"each[{children - 50}]"))  # among the busy ones
            await pilot.pause()
            counts = {"fold": 0, "repaint": 0}
            what = "fold"

            def trace(frame: Any, event: str, arg: Any) -> Any:
                counts[what] += 1  # every call, line and return
                return trace

            for n in range(0, len(work), 20):
                what = "fold"
                sys.settrace(trace)
                try:
                    state.apply(work[n : n + 20])
                    what = "repaint"
                    dag.refresh_from(view)
                finally:
                    sys.settrace(None)
            row = child_rows(dag.text())[f"each[{children - 50}]"]
            assert row.split()[0] == "✓" and f"line of {children - 50}" in row
            return counts["fold"], counts["repaint"]

    small, large = await cost(100), await cost(1000)
    assert large[0] < small[0] * 1.05, ("fold", small, large)
    assert large[1] < small[1] * 1.05, ("repaint", small, large)


async def test_the_compact_grid_and_back_keep_the_open_map() -> None:
    state = DashboardState()
    setup, work = _events("r1", 40)
    state.apply(setup + work[:20])
    view = state.runs["r1"]
    app = _Host()
    async with app.run_test(size=(80, 24)) as pilot:
        dag = app.query_one(DagView)
        dag.refresh_from(view)
        dag.move_cursor(("child", "each[35]"))  # opens the map to get there
        assert dag.cursor == ("child", "each[35]") and len(child_rows(dag.text())) == 40
        dag.set_compact(True)  # one cell per step: the cursor goes to the map step's cell
        await pilot.pause()
        assert dag.cursor == ("step", "each") and child_rows(dag.text()) == {}
        dag.set_compact(False)
        await pilot.pause()
        assert dag.cursor == ("step", "each") and len(child_rows(dag.text())) == 40
        dag.focus()
        # a/A: the running map step and its running children (0 to 9 finished), in order
        await pilot.press("a")
        assert dag.cursor == ("child", "each[10]")
        await pilot.press("A")
        assert dag.cursor == ("step", "each")
        await pilot.press("A")
        assert dag.cursor == ("child", "each[39]")  # round to the end


def test_a_step_kept_across_a_restart_is_not_reused_from_its_own_run() -> None:
    """A run resumed in place keeps its finished steps with `reused_from` = its own id: that
    is not a replay's reuse, and the DAG must not say so; another run's id is."""
    state = DashboardState()
    dag = [["a", []], ["b", []]]

    def ev(seq: int, type_: str, **data: Any) -> Event:
        return Event(seq=seq, ts=1.0, type=type_, source="t", correlation_id="r1", data=data)

    state.apply(
        [
            ev(1, "workflow:queued", workflow_id="w", dag=dag),
            ev(2, "step:succeeded", step="a", state="succeeded", reused_from="r1"),
            ev(3, "step:succeeded", step="b", state="succeeded", reused_from="r0"),
        ]
    )
    steps = state.runs["r1"].steps
    assert steps["a"].reused_from is None and steps["b"].reused_from == "r0"
