"""The DAG panel: steps by level with edges, state symbols that read without colour, literal ids.

Runs of a real engine (simulated agents) are folded into a `DashboardState` from the events it
publishes, and the panel is rendered in a small host app, as the dashboard does; the views for
markup-laden ids and every step state are built directly.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot

from voltui.config import OrchestratorConfig
from voltui.engine.models import AgentSpec, Event, Run, RunState, StepState, Workflow
from voltui.engine.orchestrator import Orchestrator
from voltui.tui.state import DashboardState, RunView, StepView, compute_levels
from voltui.tui.widgets.dag import SYMBOL, DagView, dag_edges, render_dag

SHARDS = [f"shard_{i}" for i in range(8)]
_FINAL = {f"workflow:{s.value}" for s in RunState if s.finished}


class _Host(App[None]):
    """Only the panel, full screen, as `m` (maximise) shows it in the dashboard."""

    def compose(self) -> ComposeResult:
        yield DagView(id="dag")


async def until(pilot: Pilot[None], cond: Callable[[], object], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {limit}s")
        await pilot.pause(0.05)


def step_line(text: str, step_id: str) -> str:
    """The line of `step_id` in the level layout (` <symbol> <id> <duration> <agent> ...`)."""
    pattern = re.compile(rf"^ \S+(?: \d+/\d+)? +{re.escape(step_id)} ")
    found = [line for line in text.splitlines() if pattern.match(line)]
    assert len(found) == 1, (step_id, text)
    return found[0]


def line_after(text: str, step_id: str) -> str:
    lines = text.splitlines()
    return lines[lines.index(step_line(text, step_id)) + 1]


# --------------------------------------------------------------------------- a real engine


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Orchestrator]:
    config = OrchestratorConfig(
        db=tmp_path / "x.db",
        agents=[AgentSpec(id="sim", kind="simulated", capabilities=["simulated"], capacity=10)],
    )
    orch = Orchestrator(config)
    await orch.start(watch=False)
    try:
        yield orch
    finally:
        await orch.stop()


def workflow(wf_id: str, dag: list[tuple[str, list[str]]]) -> Workflow:
    steps = [
        {"id": sid, "depends_on": deps, "run": {"simulated": {"duration": "10ms"}}}
        for sid, deps in dag
    ]
    return Workflow.model_validate({"id": wf_id, "name": wf_id.title(), "steps": steps})


DIAMOND = [("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"])]
CHAIN = [("one", []), ("two", ["one"]), ("three", ["two"]), ("four", ["three"])]
# `merge` names `split` too, as the sample fan_out workflow does; the shards already imply it.
FAN = [("split", []), *((s, ["split"]) for s in SHARDS), ("merge", ["split", *SHARDS])]


async def fold_runs(
    engine: Orchestrator, workflows: list[Workflow]
) -> tuple[DashboardState, list[str]]:
    """Run the workflows to the end and fold every event they publish, as the dashboard does."""
    state = DashboardState.from_snapshot(await engine.snapshot())
    stream = engine.subscribe("*", since_seq=state.seq)
    runs = [await engine.run_workflow(wf) for wf in workflows]
    ids = {r.id for r in runs}
    finished: set[str] = set()

    async def collect() -> None:
        async for batch in stream:
            state.apply(batch)
            finished.update(e.correlation_id for e in batch if _final(e, ids))
            if finished == ids:
                return

    await asyncio.wait_for(collect(), 30)
    assert state.fold_errors == 0
    return state, [r.id for r in runs]


def _final(event: Event, ids: set[str]) -> bool:
    return event.type in _FINAL and event.correlation_id in ids


async def test_edges_of_real_runs(engine: Orchestrator) -> None:
    state, (diamond, chain, fan) = await fold_runs(
        engine, [workflow("diamond", DIAMOND), workflow("chain", CHAIN), workflow("fan", FAN)]
    )
    app = _Host()
    async with app.run_test(size=(100, 30)) as pilot:
        dag = app.query_one(DagView)
        await pilot.pause()

        dag.refresh_from(state.runs[diamond])
        text = dag.text()
        assert text.startswith("Diamond  ")
        assert "✓ 4 succeeded" in text.splitlines()[1]  # the tally doubles as the legend
        assert step_line(text, "d").endswith("sim  ← b, c")
        assert step_line(text, "a").endswith("sim  → 2")
        for sid in ("b", "c"):  # the single step above feeds them: no arrow needed
            assert "←" not in step_line(text, sid) and "→" not in step_line(text, sid)
        assert step_line(text, "d").startswith(" ✓ d ")

        dag.refresh_from(state.runs[chain])
        text = dag.text()
        assert [step_line(text, s).split()[1] for s, _ in CHAIN] == [s for s, _ in CHAIN]
        assert "←" not in text and "→" not in text
        assert "level 3" in text

        dag.refresh_from(state.runs[fan])
        text = dag.text()
        assert step_line(text, "split").endswith("sim  → 8")  # not 9: merge comes via shards
        assert step_line(text, "merge").endswith("sim  ← 8 steps (shard_0…shard_7)")
        assert "level 1  8 steps" in text
        assert all("←" not in step_line(text, s) for s in SHARDS)

        # Narrow, the summary no longer fits on merge's line: it goes below, under the id.
        await pilot.resize_terminal(40, 30)
        await until(pilot, lambda: "←" not in step_line(dag.text(), "merge"))
        text = dag.text()
        assert line_after(text, "merge") == "   ← 8 steps (shard_0…shard_7)"
        assert step_line(text, "split").endswith("→ 8")
        # Narrower still, only the count fits.
        await pilot.resize_terminal(24, 30)
        await until(pilot, lambda: line_after(dag.text(), "merge") == "   ← 8 steps")


# --------------------------------------------------------------------------- built views


def run_view(
    dag: list[tuple[str, list[str]]], states: dict[str, StepState] | None = None, **run: Any
) -> RunView:
    fields: dict[str, Any] = {
        "id": "r0123456789abcdef",
        "workflow_id": "wf",
        "workflow_name": "Built",
        "state": RunState.RUNNING,
        "created_at": 1_700_000_000.0,
    }
    fields.update(run)
    steps = {sid: StepView(id=sid, depends_on=list(deps)) for sid, deps in dag}
    for sid, st in (states or {}).items():
        steps[sid].state = st
    return RunView(run=Run(**fields), steps=steps, levels=compute_levels(dag), detail_loaded=True)


async def test_untrusted_ids_and_errors_stay_literal() -> None:
    markup = "[bold]x[/]"
    view = run_view(
        [("a", []), (markup, []), ("[red]y", ["a", markup])],
        {"[red]y": StepState.FAILED},
        workflow_name="[b]Name[/b]",
        error="[link=http://x]click[/link]\x1b[2J",
    )
    view.steps["[red]y"].error = "[blink]boom[/]"
    view.steps[markup].agent = "[i]agent[/i]"
    app = _Host()
    async with app.run_test(size=(100, 20)) as pilot:
        dag = app.query_one(DagView)
        dag.refresh_from(view)
        await pilot.pause()
        text = dag.text()
        assert text.startswith("[b]Name[/b]  r0123456789a")
        assert "error: [link=http://x]click[/link]" in text and "\x1b" not in text
        assert step_line(text, markup).startswith(f" · {markup} ")
        assert step_line(text, markup).endswith("[i]agent[/i]")
        assert step_line(text, "[red]y").endswith(f"  ← a, {markup}  [blink]boom[/]")
        # No markup was parsed into styles: every span's style is a theme variable or bold.
        assert {str(span.style) for span in dag._content.spans} <= {
            "bold",
            "$error",
            "$text-muted",
            "bold $error",
        }


def test_every_state_has_a_symbol_and_a_name() -> None:
    states = list(StepState)
    view = run_view([(f"s_{s}", []) for s in states], {f"s_{s}": s for s in states})
    retrying = view.steps["s_retrying"]
    retrying.attempt, retrying.max_attempts = 2, 3
    text = render_dag(view, 200).plain
    tally = text.splitlines()[1]
    symbols = set()
    for state in states:
        mark, style = SYMBOL[state]
        assert style.startswith(("$", "bold $")), "colours come from theme variables"
        assert f"{mark} 1 {state}" in tally
        shown = f"{mark} 2/3" if state is StepState.RETRYING else mark
        assert re.match(rf"^ {re.escape(shown)} +s_{state} ", step_line(text, f"s_{state}"))
        symbols.add(mark)
    assert len(symbols) == len(states), "two states share a symbol"
    # Wrapped to the width given, the tally keeps every entry whole.
    narrow = render_dag(view, 30).plain.splitlines()
    tally_lines = narrow[1 : narrow.index("level 0  9 steps")]
    assert len(tally_lines) > 2 and all(len(line) <= 30 for line in tally_lines)
    assert " ".join(tally_lines).count(" 1 ") == len(states)


def test_edges_are_the_transitive_reduction() -> None:
    # d names a, b and c; b and c follow a, so a is implied. e names an unknown step and
    # itself; f and g depend on each other (a cycle the engine would refuse).
    dag = [
        ("a", []),
        ("b", ["a"]),
        ("c", ["a"]),
        ("d", ["c", "a", "b"]),
        ("e", ["ghost", "e"]),
        ("f", ["g"]),
        ("g", ["f"]),
    ]
    view = run_view(dag)
    parents, children = dag_edges(view.steps, view.levels)
    assert parents["d"] == ["b", "c"]  # in reading order, `a` left out
    assert children["a"] == ["b", "c"]
    assert parents["e"] == [] and parents["a"] == []
    assert set(parents["f"] + parents["g"]) <= {"f", "g"}
    text = render_dag(view).plain
    assert step_line(text, "d").endswith("← b, c")
    assert step_line(text, "a").endswith("→ 2")


def test_many_dependencies_are_summarised_and_few_are_named() -> None:
    four = [("s", [])] + [(f"p{i}", ["s"]) for i in range(4)] + [("j", [f"p{i}" for i in range(4)])]
    text = render_dag(run_view(four)).plain
    assert step_line(text, "j").endswith("← p0, p1, p2, p3")
    five = [(f"p{i}", []) for i in range(5)] + [("j", [f"p{i}" for i in range(5)])]
    text = render_dag(run_view(five)).plain
    assert step_line(text, "j").endswith("← 5 steps (p0…p4)")
    # A step whose only dependency is not the single step of the level above gets its arrow.
    mixed = [("a", []), ("b", []), ("c", ["a"]), ("d", ["c", "b"])]
    text = render_dag(run_view(mixed)).plain
    assert step_line(text, "c").endswith("← a")
    assert step_line(text, "d").endswith("← b, c")
