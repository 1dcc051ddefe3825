"""The DAG panel: steps by level with edges, state symbols that read without colour, literal ids.

Runs of a real engine (simulated agents) are folded into a `DashboardState` from the events it
publishes, and the panel is rendered in a small host app, as the dashboard does; the views for
markup-laden ids and every step state are built directly.
"""

from __future__ import annotations

import asyncio
import html
import random
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widgets import DataTable

from voltui.config import OrchestratorConfig
from voltui.engine.models import AgentSpec, Event, Run, RunState, StepState, Workflow
from voltui.engine.orchestrator import Orchestrator
from voltui.tui.app import VoltApp
from voltui.tui.screens.run_detail import RunDetailScreen
from voltui.tui.state import DashboardState, RunView, StepView, compute_levels
from voltui.tui.widgets import RunsTable
from voltui.tui.widgets.dag import (
    SYMBOL,
    DagLayout,
    DagView,
    dag_edges,
    render_compact,
    render_dag,
)

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
    pattern = re.compile(rf"^ \S +{re.escape(step_id)} ")
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
        assert "▾ L3  ✓ 1 / 1" in text.splitlines()  # every level has a summary with counts

        dag.refresh_from(state.runs[fan])
        text = dag.text()
        assert step_line(text, "split").endswith("sim  → 8")  # not 9: merge comes via shards
        assert step_line(text, "merge").endswith("sim  ← 8 steps (shard_0…shard_7)")
        assert "▾ L1  ✓ 8 / 8" in text.splitlines()  # eight steps: small enough to show open
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
        assert {str(span.style) for line in dag.lines() for span in line.spans} <= {
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
        assert re.match(rf"^ {re.escape(mark)} s_{state} ", step_line(text, f"s_{state}"))
        symbols.add(mark)
    assert len(symbols) == len(states), "two states share a symbol"
    assert step_line(text, "s_retrying").endswith("  retry 2/3")
    # The level's summary counts every state, those needing attention first.
    assert "▾ L0  ▶ 1 ↻ 1 ✗ 1 ✓ 1 ◆ 1 ■ 1 \u2013 1 … 1 · 1 / 9" in text.splitlines()
    # Wrapped to the width given, the tally keeps every entry whole.
    narrow = render_dag(view, 30).plain.splitlines()
    tally_lines = narrow[1 : next(n for n, line in enumerate(narrow) if line.startswith("▾ L0"))]
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


# --------------------------------------------------------------------------- large runs


def wide_view(
    shards: int, states: dict[str, StepState] | None = None, **run: Any
) -> tuple[RunView, list[str]]:
    """`prepare`, then `shards` steps after it, then `merge` after them all."""
    ids = [f"shard_{i:03d}" for i in range(shards)]
    dag = [("prepare", []), *((sid, ["prepare"]) for sid in ids), ("merge", ids)]
    view = run_view(dag, {"prepare": StepState.SUCCEEDED, **(states or {})}, **run)
    return view, ids


def step_rows(text: str) -> list[str]:
    """Ids of the step lines, in order."""
    return [m.group(1) for m in re.finditer(r"^ \S (\S+) ", text, re.MULTILINE)]


class _Chooser(_Host):
    """The panel with a record of the steps `enter` chose."""

    def __init__(self) -> None:
        super().__init__()
        self.chosen: list[tuple[str, str]] = []

    def on_dag_view_step_chosen(self, message: DagView.StepChosen) -> None:
        self.chosen.append((message.run_id, message.step_id))


async def test_a_wide_level_folds_to_counts_and_lists_what_needs_attention() -> None:
    states = {f"shard_{i:03d}": StepState.SUCCEEDED for i in range(41)}
    states |= {"shard_100": StepState.RUNNING, "shard_300": StepState.RUNNING}
    states |= {"shard_500": StepState.RUNNING, "shard_700": StepState.FAILED}
    view, ids = wide_view(782, states)
    view.steps["shard_700"].error = "exit code 3"
    app = _Host()
    async with app.run_test(size=(100, 30)) as pilot:
        dag = app.query_one(DagView)
        dag.refresh_from(view)
        await pilot.pause()
        text = dag.text()
        lines = text.splitlines()
        # One summary line for 782 steps, counts first for what needs attention.
        assert "▸ L1  ▶ 3 ✗ 1 ✓ 41 · 737 / 782" in lines
        # Under it, failed first, then running; none of the other 778.
        listed = ["shard_700", "shard_100", "shard_300", "shard_500"]
        assert step_rows(text) == ["prepare", *listed, "merge"]
        assert step_line(text, "shard_700").endswith("exit code 3")
        assert "▾ L2  · 1 / 1" in lines and len(lines) < 15

        # More than ATTENTION_ROWS: the rest is one line, and enter on it opens the level.
        for i in range(600, 610):
            view.steps[f"shard_{i}"].state = StepState.RUNNING
            view.changed_steps.add(f"shard_{i}")
        dag.refresh_from(view)
        text = dag.text()
        assert "▸ L1  ▶ 13 ✗ 1 ✓ 41 · 727 / 782" in text.splitlines()
        assert step_rows(text)[1:6] == [
            "shard_700",
            "shard_100",
            "shard_300",
            "shard_500",
            "shard_600",
        ]
        assert "   … 9 more failed or running: enter opens L1" in text.splitlines()
        dag.focus()
        dag.move_cursor(("more", 1))
        await pilot.press("enter")
        text = dag.text()
        assert "▾ L1  ▶ 13 ✗ 1 ✓ 41 · 727 / 782" in text.splitlines()
        assert step_rows(text) == ["prepare", *ids, "merge"]  # open: every step, in order
        # `h` folds the cursor's level again and leaves the cursor on its summary.
        dag.move_cursor(("step", "shard_400"))
        await pilot.press("h")
        assert dag.cursor == ("level", 1)
        assert "shard_400" not in dag.text()


async def test_counts_follow_only_what_changed() -> None:
    """Random state changes, folded in as events: the panel's counts, which it adjusts for
    the changed steps alone, always equal a recount from scratch."""
    rng = random.Random(7)
    ids = [f"s{i:03d}" for i in range(200)]
    state = DashboardState()
    dag = [["root", []], *([sid, ["root"]] for sid in ids)]
    seq = 1
    state.apply(
        [
            Event(
                seq=seq,
                ts=1.0,
                type="workflow:queued",
                source="t",
                correlation_id="r1",
                data={"workflow_id": "w", "dag": dag},
            )
        ]
    )
    view = state.runs["r1"]
    view.watched = True  # as the panel does for the run it shows
    layout = DagLayout(view, 100, compact=False)
    kinds = ["running", "succeeded", "failed", "retrying", "cancelled", "skipped", "cached"]
    for _round in range(40):
        batch = []
        for _ in range(rng.randint(1, 30)):
            seq += 1
            batch.append(
                Event(
                    seq=seq,
                    ts=float(seq),
                    type=f"step:{rng.choice(kinds)}",
                    source="t",
                    correlation_id="r1",
                    data={"step": rng.choice(ids), "attempt": 1},
                )
            )
        state.apply(batch)
        layout.sync()
        fresh = DagLayout(view, 100, compact=False)
        assert [{k: v for k, v in c.items() if v} for c in layout.counts] == fresh.counts
        assert [set(a) for a in layout.attention] == [set(a) for a in fresh.attention]
        assert layout.failed == fresh.failed and layout.active == fresh.active
    assert sum(layout.total.values()) == len(ids) + 1


async def test_only_the_rows_on_screen_are_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    states = {f"shard_{i:03d}": StepState.RUNNING for i in range(0, 4998, 97)}
    view, _ids = wide_view(4998, states)
    built: list[Any] = []
    original = DagLayout.row_content

    def counted(self: DagLayout, row: Any, *args: Any, **kwargs: Any) -> Any:
        built.append(row)
        return original(self, row, *args, **kwargs)

    monkeypatch.setattr(DagLayout, "row_content", counted)
    app = _Host()
    async with app.run_test(size=(100, 30)) as pilot:
        dag = app.query_one(DagView)
        dag.refresh_from(view)
        dag.fold_all(False)  # every one of the 5,000 steps on a row of its own
        await pilot.pause()
        assert dag.virtual_size.height > 5000
        built.clear()
        view.steps["shard_050"].state = StepState.FAILED  # something to repaint
        view.changed_steps.add("shard_050")
        dag.scroll_to(y=2400, animate=False, immediate=True)
        dag.refresh_from(view)
        await pilot.pause()
        shown = dag.scrollable_content_region.height
        assert 0 < len(built) <= 4 * shown, "rows off screen were rendered"
        assert all(2300 < dag._layout.rows.index(r) < 2500 for r in built)  # type: ignore[union-attr]


async def test_cursor_keys_jumps_and_enter() -> None:
    states = {"shard_03": StepState.FAILED, "shard_20": StepState.FAILED}
    states |= {"shard_10": StepState.RUNNING}
    ids = [f"shard_{i:02d}" for i in range(30)]
    dag = [("a", []), *((sid, ["a"]) for sid in ids), ("merge", ids)]
    view = run_view(dag, {"a": StepState.SUCCEEDED, **states}, state=RunState.FAILED)
    app = _Chooser()
    async with app.run_test(size=(80, 20)) as pilot:
        panel = app.query_one(DagView)
        panel.refresh_from(view)
        panel.focus()
        await pilot.pause()
        assert panel.cursor == ("level", 0)
        await pilot.press("j")
        assert panel.cursor == ("step", "a")
        await pilot.press("down", "down")
        assert panel.cursor == ("step", "shard_03")  # listed under the folded level, failed first
        await pilot.press("k", "k", "k")
        assert panel.cursor == ("level", 0)
        await pilot.press("G")
        assert panel.cursor == ("step", "merge")
        await pilot.press("g")
        assert panel.cursor == ("level", 0) and panel.scroll_y == 0
        # n/N: failed steps in reading order, round to the start; a/A: running ones.
        await pilot.press("n")
        assert panel.cursor == ("step", "shard_03")
        await pilot.press("n")
        assert panel.cursor == ("step", "shard_20")
        await pilot.press("n")
        assert panel.cursor == ("step", "shard_03")
        await pilot.press("N")
        assert panel.cursor == ("step", "shard_20")
        await pilot.press("a")
        assert panel.cursor == ("step", "shard_10")
        # enter on a step asks the app to open it; on a level, opens or folds it.
        await pilot.press("enter")
        assert app.chosen == [(view.run.id, "shard_10")]
        await pilot.press("g", "j", "j", "enter")
        assert panel.cursor == ("level", 1) and "shard_29" in step_rows(panel.text())
        await pilot.press("enter")
        assert "shard_29" not in step_rows(panel.text())
        # The compact grid keeps the cursor on its step; down moves a line of cells.
        panel.move_cursor(("step", "shard_03"))
        panel.set_compact(True)
        await pilot.pause()
        assert panel.cursor == ("step", "shard_03")
        per_line = panel._layout.per_line  # type: ignore[union-attr]
        await pilot.press("down")
        order = ["a", *ids, "merge"]
        assert panel.cursor == ("step", order[order.index("shard_03") + per_line])
        await pilot.press("right", "enter")
        assert app.chosen[-1] == (view.run.id, order[order.index("shard_03") + per_line + 1])


async def test_n_opens_a_folded_level_to_reach_an_unlisted_failure() -> None:
    failed = [f"shard_{i:03d}" for i in range(0, 30, 3)]  # ten: more than ATTENTION_ROWS
    view, ids = wide_view(30, dict.fromkeys(failed, StepState.FAILED))
    app = _Host()
    async with app.run_test(size=(80, 20)) as pilot:
        panel = app.query_one(DagView)
        panel.refresh_from(view)
        panel.focus()
        await pilot.pause()
        wanted = sorted(sid for sid in ids if view.steps[sid].state is StepState.FAILED)
        assert len(wanted) == 10
        assert "▸ L1" in panel.text()
        for sid in wanted:
            await pilot.press("n")
            assert panel.cursor == ("step", sid)
        assert "▾ L1" in panel.text()  # the sixth failure is not listed: its level opened


# --------------------------------------------------------------------------- in the dashboard


def failing_workflow() -> Workflow:
    """`b` fails (no retry), so the run fails with `a` done and `c` never run."""
    sim: dict[str, Any] = {"simulated": {"duration": "10ms"}}
    steps = [
        {"id": "a", "run": sim},
        {"id": "b", "depends_on": ["a"], "run": {"simulated": {"fail_attempts": 9}}},
        {"id": "c", "depends_on": ["b"], "run": sim},
    ]
    return Workflow.model_validate({"id": "failing", "name": "Failing", "steps": steps})


async def test_dag_enter_opens_the_step_and_a_failed_run_opens_on_its_failure(
    engine: Orchestrator,
) -> None:
    run = await engine.run_workflow(failing_workflow())
    assert (await engine.wait_run(run.id)).state is RunState.FAILED
    app = VoltApp(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        runs = app.query_one(RunsTable)
        await until(pilot, lambda: run.id in runs.rows)
        runs.move_cursor(row=runs.get_row_index(run.id))
        await until(pilot, lambda: app.selected_run == run.id)
        # enter on the runs panel: the run detail, on the step that failed.
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, RunDetailScreen)
        await until(pilot, lambda: screen.selected_step == "b")
        table = screen.query_one("#detail-steps", DataTable)
        await pilot.pause()
        assert table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value == "b"
        await pilot.press("escape")
        # The DAG panel: its cursor to step `c`, enter opens the run on `c`.
        await pilot.press("2")
        dag = app.query_one(DagView)
        await until(pilot, lambda: "c" in step_rows(dag.text()))
        assert dag.has_focus and dag.cursor == ("level", 0)
        await pilot.press("G")
        assert dag.cursor == ("step", "c")
        await pilot.press("N")  # the failed step, from anywhere
        assert dag.cursor == ("step", "b")
        await pilot.press("j", "j", "enter")
        detail = app.screen
        assert isinstance(detail, RunDetailScreen) and detail.run_id == run.id
        await until(pilot, lambda: detail.selected_step == "c")
        table = detail.query_one("#detail-steps", DataTable)
        await pilot.pause()
        assert table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value == "c"


async def test_a_panel_key_and_m_typed_together_maximise_the_new_panel(
    engine: Orchestrator,
) -> None:
    app = VoltApp(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.state is not None)
        assert isinstance(app.focused, RunsTable)
        # Both keys queued before either is handled, as when typed fast or pasted.
        app.post_message(events.Key("2", "2"))
        app.post_message(events.Key("m", "m"))
        await pilot.pause()
        assert app.screen.maximized is app.query_one(DagView)


async def test_a_changed_row_is_redrawn_on_screen() -> None:
    """Only rows whose text changed are handed back to Textual: the screen must still show
    every change (read from a screenshot, i.e. what the terminal gets)."""
    view, _ids = wide_view(40, {"shard_005": StepState.RUNNING})
    view.steps["shard_005"].last_line = "working"
    app = _Host()
    async with app.run_test(size=(90, 30)) as pilot:
        dag = app.query_one(DagView)
        dag.refresh_from(view)
        dag.fold_all(False)
        await pilot.pause()

        def screen() -> str:
            svg = app.export_screenshot()
            return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")

        assert "working" in screen()
        view.steps["shard_005"].state = StepState.FAILED
        view.steps["shard_005"].error = "exit code 9"
        view.changed_steps.add("shard_005")
        dag.refresh_from(view)
        await pilot.pause()
        shown = screen()
        assert "exit code 9" in shown and "working" not in shown
        # The cursor moving is drawn too: the row it left and the row it reached, as the
        # compositor gets them (Textual's line cache, refreshed only where asked).
        dag.focus()
        await pilot.pause()
        cursor_bg = dag.get_visual_style("dag--cursor").rich_style.bgcolor

        def highlighted(row: int) -> bool:
            strip = dag.render_lines(Region(0, row - int(dag.scroll_y), dag.size.width, 1))[0]
            return any(seg.style is not None and seg.style.bgcolor == cursor_bg for seg in strip)

        first = dag._cursor_y()
        assert first is not None and highlighted(first)
        dag.move_cursor(("step", "shard_005"))
        await pilot.pause()
        y = dag._cursor_y()
        assert y is not None and y != first
        assert highlighted(y) and not highlighted(first)


def test_render_compact_draws_the_whole_grid() -> None:
    view, _ids = wide_view(98, {"shard_007": StepState.FAILED})
    text = render_compact(view, 40).plain
    lines = text.splitlines()
    assert "ids: " not in text  # `prepare`, `shard_…` and `merge` share no prefix
    grid = lines[2:]
    assert all(len(line) <= 40 for line in grid)
    cells = " ".join(grid).split()
    assert cells.count("✗") == 1 and cells.count("·") == 98 and cells.count("✓") == 1
    assert len(grid) == -(-100 // ((40 + 1) // (10 + 3)))  # 100 cells, 3 to a line of 40


async def test_only_the_run_on_the_panel_records_step_changes() -> None:
    """Runs nobody shows keep no change sets (memory stays bounded by what is on screen)."""
    state = DashboardState()
    dag = [["a", []], ["b", ["a"]]]
    state.apply(
        [
            Event(seq=n, ts=1.0, type="workflow:queued", source="t", correlation_id=rid,
                  data={"workflow_id": "w", "dag": dag})
            for n, rid in ((1, "shown"), (2, "hidden"))
        ]
    )  # fmt: skip

    def step(seq: int, rid: str, sid: str, kind: str) -> Event:
        return Event(seq=seq, ts=2.0, type=f"step:{kind}", source="t", correlation_id=rid,
                     data={"step": sid, "attempt": 1})  # fmt: skip

    app = _Host()
    async with app.run_test(size=(80, 20)) as pilot:
        panel = app.query_one(DagView)
        panel.refresh_from(state.runs["shown"])
        await pilot.pause()
        state.apply([step(3, "shown", "a", "running"), step(4, "hidden", "a", "running")])
        assert state.runs["shown"].changed_steps == {"a"}
        assert state.runs["hidden"].changed_steps == set()
        panel.refresh_from(state.runs["shown"])
        assert state.runs["shown"].changed_steps == set()  # taken by the panel
        assert "▾ L0  ▶ 1 / 1" in panel.text().splitlines()
        # The panel moves to the other run: the first one stops recording.
        panel.refresh_from(state.runs["hidden"])
        state.apply([step(5, "shown", "a", "succeeded"), step(6, "hidden", "a", "failed")])
        assert state.runs["shown"].changed_steps == set()
        assert state.runs["hidden"].changed_steps == {"a"}
        panel.refresh_from(state.runs["hidden"])
        assert "▾ L0  ✗ 1 / 1" in panel.text().splitlines()
