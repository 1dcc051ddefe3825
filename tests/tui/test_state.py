"""DashboardState: the fold must agree with the real engine, stay cheap and stay bounded."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from voltui.config import OrchestratorConfig
from voltui.engine.api import EngineSnapshot
from voltui.engine.models import (
    AgentLoad,
    AgentSpec,
    CacheStats,
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
from voltui.engine.orchestrator import Orchestrator
from voltui.tui.state import PANELS, DashboardState, RunView, compile_filter, compute_levels

# --------------------------------------------------------------------------- helpers

T0 = 1_700_000_000.0


def ev(
    seq: int,
    type_: str,
    data: dict[str, Any] | None = None,
    cid: str | None = None,
    ts: float | None = None,
) -> Event:
    return Event(
        seq=seq,
        ts=T0 + seq * 0.001 if ts is None else ts,
        type=type_,
        source="test",
        correlation_id=cid,
        data=data or {},
    )


def queued(seq: int, run_id: str, dag: list[list[Any]], ts: float | None = None) -> Event:
    data = {
        "workflow_id": "wf",
        "name": "Workflow",
        "inputs": {},
        "steps_total": len(dag),
        "dag": dag,
        "replay_of": None,
        "replay_mode": None,
    }
    return ev(seq, "workflow:queued", data, run_id, ts)


def step_ev(seq: int, run_id: str, step: str, state: str, **extra: Any) -> Event:
    data = {"step": step, "state": state, "attempt": 1, "max_attempts": 1, "agent": "sim"}
    data.update(extra)
    return ev(seq, f"step:{state}", data, run_id)


def load(agent: str = "sim", **figures: Any) -> dict[str, Any]:
    return AgentLoad(id=agent, kind="simulated", capabilities=["simulated"], **figures).model_dump()


def empty_snapshot(**extra: Any) -> EngineSnapshot:
    fields: dict[str, Any] = {
        "seq": 0,
        "ts": T0,
        "started_at": T0 - 100,
        "health": HealthStatus.HEALTHY,
        "components": [],
        "agents": [],
        "runs": [],
        "cache": [],
        "events": EventStats(),
    }
    fields.update(extra)
    return EngineSnapshot(**fields)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- the real engine


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Orchestrator]:
    config = OrchestratorConfig(
        db=tmp_path / "x.db",
        agents=[AgentSpec(id="sim", kind="simulated", capabilities=["simulated"], capacity=8)],
    )
    orch = Orchestrator(config)
    await orch.start(watch=False)
    try:
        yield orch
    finally:
        await orch.stop()


def sample_workflow() -> Workflow:
    def sim(step_id: str, deps: list[str], **call: Any) -> dict[str, Any]:
        return {
            "id": step_id,
            "depends_on": deps,
            "run": {"simulated": {"duration": "20ms", **call}},
        }

    flaky = sim("flaky", ["fetch"], fail_attempts=1)
    flaky["retry"] = {"max_attempts": 3, "base_delay": "10ms", "jitter": 0}
    return Workflow.model_validate(
        {
            "id": "fold_check",
            "name": "Fold check",
            "steps": [
                sim("fetch", [], output_lines=3),
                flaky,
                sim("build", ["fetch"], output_lines=2),
                sim("broken", ["fetch"], fail_attempts=5),
                sim("join", ["flaky", "build"]),
                sim("after_broken", ["broken"]),
            ],
        }
    )


_FINAL = {f"workflow:{s.value}" for s in RunState if s.finished}


async def collect_until_finished(
    orch: Orchestrator, since_seq: int, started: asyncio.Event
) -> list[list[Event]]:
    batches: list[list[Event]] = []
    stream = orch.subscribe("*", since_seq=since_seq)
    started.set()
    async for batch in stream:
        batches.append(batch)
        if any(e.type in _FINAL for e in batch):
            break
    return batches


def assert_view_matches(view: RunView, detail: RunDetail) -> None:
    run, expected = view.run, detail.run
    assert run.state == expected.state
    assert run.steps_total == expected.steps_total
    assert run.steps_done == expected.steps_done
    assert run.error == expected.error
    assert run.started_at == pytest.approx(expected.started_at, abs=1.0)
    assert run.finished_at == pytest.approx(expected.finished_at, abs=1.0)
    assert list(view.steps) == [s.id for s in detail.workflow.steps]
    for sr in detail.steps:
        sv = view.steps[sr.step_id]
        got = (sv.state, sv.attempt, sv.max_attempts, sv.agent, sv.error)
        want = (sr.state, sr.attempt, sr.max_attempts, sr.agent_id, sr.error)
        assert got == want, sr.step_id
        assert sv.depends_on == detail.workflow.step(sr.step_id).depends_on


async def test_fold_of_a_real_run_agrees_with_the_engine(engine: Orchestrator) -> None:
    snapshot = await engine.snapshot()
    state = DashboardState.from_snapshot(snapshot)
    assert state.seq == snapshot.seq
    assert set(state.agents) == {"sim"}

    started = asyncio.Event()
    collector = asyncio.create_task(collect_until_finished(engine, snapshot.seq, started))
    await started.wait()
    run = await engine.run_workflow(sample_workflow())
    final = await asyncio.wait_for(engine.wait_run(run.id), 20)
    batches = await asyncio.wait_for(collector, 20)
    detail = await engine.get_run(run.id)

    changed: set[str] = set()
    for batch in batches:
        changed |= state.apply(batch)
    assert state.fold_errors == 0
    assert {"runs", "dag", "events", "agents", "header"} <= changed

    assert final.state is RunState.FAILED  # `broken` failed and `after_broken` was skipped
    view = state.runs[run.id]
    assert view.detail_loaded
    assert_view_matches(view, detail)
    assert view.steps["flaky"].attempt == 2
    assert view.steps["flaky"].state is StepState.SUCCEEDED
    assert view.steps["after_broken"].state is StepState.SKIPPED
    assert "working (3/3)" in (view.steps["fetch"].last_line or "")
    assert view.levels == [["fetch"], ["flaky", "build", "broken"], ["join", "after_broken"]]
    assert state.active_runs() == 0

    # Agent figures folded from agent:load match the balancer's.
    real = engine.coordination.loads()[0]
    folded = state.agents["sim"]
    assert (folded.active, folded.completed, folded.failed) == (
        real.active,
        real.completed,
        real.failed,
    )
    # flaky's 1st try failed but was retried: not an agent failure; broken's only try was.
    assert (folded.completed, folded.failed) == (4, 1)
    assert state.seq == max(e.seq for b in batches for e in b)

    # Folding the same batches again changes nothing.
    again = set()
    for batch in batches:
        again |= state.apply(batch)
    assert again == set()
    assert_view_matches(state.runs[run.id], detail)


async def test_run_seen_first_in_a_snapshot_is_completed_by_its_detail(
    engine: Orchestrator,
) -> None:
    run = await engine.run_workflow(sample_workflow())
    await asyncio.wait_for(engine.wait_run(run.id), 20)
    state = DashboardState.from_snapshot(await engine.snapshot())
    view = state.runs[run.id]
    assert not view.detail_loaded and view.steps == {} and view.levels == []
    assert view.run.state is RunState.FAILED
    assert state.events, "recent events seed the stream"
    assert max(e.seq for e in state.events) <= state.seq

    detail = await engine.get_run(run.id)
    state.add_run_detail(detail)
    view = state.runs[run.id]
    assert view.detail_loaded
    assert_view_matches(view, detail)
    assert view.levels[0] == ["fetch"]


# --------------------------------------------------------------------------- unit: seq, panels


def test_duplicate_and_old_events_are_ignored() -> None:
    state = DashboardState.from_snapshot(empty_snapshot(seq=10))
    assert state.apply([queued(5, "r1", [["a", []]])]) == set()  # the snapshot covers seq 5
    assert "r1" not in state.runs and not state.events

    batch = [queued(11, "r1", [["a", []]]), step_ev(12, "r1", "a", "running")]
    assert state.apply(batch) == {"events", "runs", "dag", "header"}
    assert state.seq == 12
    assert state.apply(batch) == set()
    assert state.apply([step_ev(12, "r1", "a", "failed", error="late duplicate")]) == set()
    assert state.runs["r1"].steps["a"].state is StepState.RUNNING
    assert [e.seq for e in state.events] == [11, 12]


def test_each_event_type_reports_only_the_panels_it_changes() -> None:
    state = DashboardState()
    cases: list[tuple[Event, set[str]]] = [
        (queued(1, "r1", [["a", []]]), {"runs", "dag", "header"}),
        (ev(2, "workflow:started", {}, "r1"), {"runs", "dag", "header"}),
        (step_ev(3, "r1", "a", "running"), {"dag"}),
        (
            ev(
                4, "step:output", {"step": "a", "attempt": 1, "stream": "stdout", "line": "x"}, "r1"
            ),
            {"dag"},
        ),
        (ev(5, "agent:load", load(active=1, capacity=8)), {"agents"}),
        (ev(6, "workflow:progress", {"done": 1, "total": 1}, "r1"), {"runs", "dag"}),
        (
            ev(
                7,
                "cache:stats",
                {
                    "namespaces": [
                        CacheStats(namespace="steps", strategy="lru", hits=1).model_dump()
                    ]
                },
            ),
            {"cache"},
        ),
        (
            ev(
                8,
                "health:changed",
                {
                    "component": "store",
                    "name": "Store",
                    "previous": "unknown",
                    "status": "healthy",
                    "message": "ok",
                    "latency": 0.01,
                },
            ),
            {"health"},
        ),
        (
            ev(9, "health:system", {"previous": "unknown", "status": "degraded", "reasons": ["x"]}),
            {"health", "header"},
        ),
        (ev(10, "engine:started", {"db": "x"}), set()),
        (ev(11, "step:output", {"step": "a", "line": "y"}, "unknown-run"), set()),
        (
            ev(
                12,
                "agent:registered",
                {"agent": "b", "kind": "python", "capabilities": [], "capacity": 2},
            ),
            {"agents"},
        ),
    ]
    for event, expected in cases:
        changed = state.apply([event])
        assert changed == expected | {"events"}, event.type
        assert changed <= set(PANELS)
    assert state.touched_runs == set()
    state.apply([step_ev(13, "r1", "a", "succeeded")])
    assert state.touched_runs == {"r1"}
    assert state.health is HealthStatus.DEGRADED and state.health_reasons == ["x"]
    assert state.components["store"].status is HealthStatus.HEALTHY


def test_malformed_events_are_counted_and_do_not_stop_the_fold() -> None:
    state = DashboardState()
    changed = state.apply(
        [
            ev(1, "agent:load", {"no_id": True}),
            ev(2, "cache:stats", {"namespaces": "not a list"}),
            ev(3, "agent:load", load(active=2)),
        ]
    )
    assert state.fold_errors == 2
    assert state.agents["sim"].active == 2
    assert state.seq == 3 and len(state.events) == 3
    assert "agents" in changed


# --------------------------------------------------------------------------- unit: runs and steps


def test_levels_for_a_diamond_and_odd_input() -> None:
    diamond = [("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"])]
    assert compute_levels(diamond) == [["a"], ["b", "c"], ["d"]]
    # Listed out of order: depth still follows the dependencies.
    assert compute_levels([("d", ["b", "c"]), ("c", ["a"]), ("b", ["a"]), ("a", [])]) == [
        ["a"],
        ["c", "b"],
        ["d"],
    ]
    # Unknown/self deps ignored; a cycle lands on one extra level instead of vanishing.
    assert compute_levels([("a", ["zz", "a"]), ("x", ["y"]), ("y", ["x"])]) == [["a"], ["x", "y"]]
    assert compute_levels([]) == []


def test_a_1000_step_chain_does_not_blow_the_stack() -> None:
    n = 1000
    dag = [[f"s{i}", [f"s{i - 1}"] if i else []] for i in range(n)]
    state = DashboardState()
    state.apply([queued(1, "r1", dag)])
    levels = state.runs["r1"].levels
    assert len(levels) == n
    assert levels[0] == ["s0"] and levels[-1] == [f"s{n - 1}"]
    assert list(state.runs["r1"].steps) == [f"s{i}" for i in range(n)]
    backwards = compute_levels(list(reversed(dag)))  # dependents listed before their deps
    assert len(backwards) == n and backwards[0] == ["s0"]
    wide = compute_levels([(f"s{i}", [f"s{j}" for j in range(i)]) for i in range(300)])
    assert len(wide) == 300


def test_a_retried_step_is_folded_attempt_by_attempt() -> None:
    state = DashboardState()
    rid = "r1"
    state.apply([queued(1, rid, [["a", []], ["b", ["a"]]]), ev(2, "workflow:started", {}, rid)])
    a = state.runs[rid].steps["a"]
    state.apply([step_ev(3, rid, "a", "waiting", agent=None, max_attempts=3)])
    assert (a.state, a.attempt, a.max_attempts, a.agent) == (StepState.WAITING, 1, 3, None)
    state.apply([step_ev(4, rid, "a", "running", max_attempts=3)])
    assert a.started_at == pytest.approx(T0 + 0.004)
    state.apply([step_ev(5, rid, "a", "retrying", max_attempts=3, error="\x1b[31mboom\x1b[0m")])
    assert a.state is StepState.RETRYING and a.error == "boom" and a.finished_at is None
    state.apply(
        [
            step_ev(6, rid, "a", "waiting", attempt=2, max_attempts=3),
            step_ev(7, rid, "a", "running", attempt=2, max_attempts=3),
        ]
    )
    assert a.error is None and a.attempt == 2
    state.apply([step_ev(8, rid, "a", "succeeded", attempt=2, max_attempts=3)])
    assert a.state is StepState.SUCCEEDED and a.finished_at == pytest.approx(T0 + 0.008)
    assert a.duration == pytest.approx(0.001, abs=1e-6)
    state.apply(
        [
            step_ev(9, rid, "b", "skipped", attempt=0, agent=None, reason="a did not succeed"),
            ev(10, "workflow:failed", {"state": "failed", "error": "x\x07y"}, rid),
        ]
    )
    run = state.runs[rid].run
    assert run.state is RunState.FAILED and run.error == "xy" and run.steps_done == 2
    assert state.runs[rid].steps["b"].error == "a did not succeed"
    assert state.active_runs() == 0


def test_control_sequences_are_stripped_from_last_line() -> None:
    state = DashboardState()
    state.apply([queued(1, "r1", [["a", []]])])
    nasty = "\x1b[2J\x1b[31mred\x1b[0m \x1b]0;pwned\x07text\x9b5m\rend\x00\nnext"
    state.apply([ev(2, "step:output", {"step": "a", "stream": "stdout", "line": nasty}, "r1")])
    line = state.runs["r1"].steps["a"].last_line
    assert line == "red textend next"
    huge = "y" * 1_000_000
    state.apply([ev(3, "step:output", {"step": "a", "stream": "stdout", "line": huge}, "r1")])
    assert len(state.runs["r1"].steps["a"].last_line or "") <= 500


def test_steps_of_a_run_without_dag_wait_for_its_detail() -> None:
    run = Run(id="r1", workflow_id="wf", workflow_name="wf", created_at=T0, state="running")
    state = DashboardState.from_snapshot(empty_snapshot(runs=[run]))
    state.apply(
        [
            step_ev(1, "r1", "b", "running", attempt=2, max_attempts=3),
            ev(2, "step:output", {"step": "b", "line": "hi"}, "r1"),
        ]
    )
    view = state.runs["r1"]
    assert view.steps == {} and view.levels == [] and not view.detail_loaded
    # The detail was read before those events: the folded figures must survive it.
    state.add_run_detail(
        _detail("r1", RunState.RUNNING, [StepRun(run_id="r1", step_id="b", state="waiting")])
    )
    b = state.runs["r1"].steps["b"]
    assert (b.state, b.attempt, b.max_attempts, b.last_line) == (StepState.RUNNING, 2, 3, "hi")
    assert b.depends_on == ["a"]
    assert state.runs["r1"].early_steps == {}


def _detail(run_id: str, state: RunState, steps: list[StepRun]) -> RunDetail:
    wf = Workflow.model_validate(
        {
            "id": "wf",
            "steps": [
                {"id": "a", "run": {"simulated": {}}},
                {"id": "b", "depends_on": ["a"], "run": {"simulated": {}}},
                {"id": "c", "depends_on": ["a"], "run": {"simulated": {}}},
            ],
        }
    )
    run = Run(id=run_id, workflow_id="wf", workflow_name="wf", created_at=T0, state=state)
    return RunDetail(run=run, workflow=wf, steps=steps)


def test_add_run_detail_fills_what_the_fold_has_not_seen() -> None:
    stale = Run(id="r1", workflow_id="wf", workflow_name="wf", created_at=T0, state="running")
    state = DashboardState.from_snapshot(empty_snapshot(seq=100, runs=[stale]))
    # After the snapshot, the fold sees `b` finish and `a`'s output.
    state.apply(
        [
            step_ev(101, "r1", "b", "succeeded", attempt=1, max_attempts=2),
            ev(102, "step:output", {"step": "a", "line": "tail"}, "r1"),
        ]
    )
    # A detail fetched a moment earlier: `b` still running there.
    detail = _detail(
        "r1",
        RunState.RUNNING,
        [
            StepRun(run_id="r1", step_id="a", state="succeeded", attempt=1, agent_id="sim"),
            StepRun(run_id="r1", step_id="b", state="running", attempt=1, max_attempts=2),
            StepRun(run_id="r1", step_id="c", state="failed", attempt=3, error="\x1b[1mbad"),
        ],
    )
    state.add_run_detail(detail)
    view = state.runs["r1"]
    assert view.detail_loaded
    assert list(view.steps) == ["a", "b", "c"]
    assert view.levels == [["a"], ["b", "c"]]
    a, b, c = view.steps["a"], view.steps["b"], view.steps["c"]
    assert (a.state, a.agent, a.last_line) == (StepState.SUCCEEDED, "sim", "tail")
    assert b.state is StepState.SUCCEEDED  # the fold's first-hand figure wins
    assert b.depends_on == ["a"]
    assert (c.state, c.attempt, c.error) == (StepState.FAILED, 3, "bad")

    # The fold already saw the run finish; an older detail must not bring it back to running.
    state.apply([ev(103, "workflow:succeeded", {"state": "succeeded", "error": None}, "r1")])
    state.add_run_detail(detail)
    assert state.runs["r1"].run.state is RunState.SUCCEEDED
    assert state.runs["r1"].run.finished_at is not None

    # A run the state never knew is added.
    state.add_run_detail(_detail("old", RunState.FAILED, []))
    assert state.runs["old"].detail_loaded
    assert all(s.state is StepState.PENDING for s in state.runs["old"].steps.values())


# --------------------------------------------------------------------------- unit: bounds


def test_events_are_a_bounded_ring() -> None:
    state = DashboardState(max_events=50)
    state.apply([ev(i, "tick") for i in range(1, 501)])
    assert len(state.events) == 50
    assert [e.seq for e in state.events] == list(range(451, 501))
    assert DashboardState().events.maxlen == DashboardState.MAX_EVENTS


def test_runs_are_capped_dropping_the_oldest_finished_first() -> None:
    state = DashboardState(max_runs=5)
    seq = 0
    for i in range(8):
        seq += 1
        state.apply([queued(seq, f"r{i}", [["a", []]], ts=T0 + i)])
        if i >= 2:  # r0 and r1 (the oldest) stay active
            seq += 1
            state.apply([ev(seq, "workflow:succeeded", {"state": "succeeded"}, f"r{i}")])
    assert len(state.runs) == 5
    assert set(state.runs) == {"r0", "r1", "r5", "r6", "r7"}
    assert [v.run.id for v in state.runs_newest_first()] == ["r7", "r6", "r5", "r1", "r0"]
    assert state.active_runs() == 2

    # Only active runs left and still too many: the oldest go, the bound holds.
    busy = DashboardState(max_runs=3)
    busy.apply([queued(i + 1, f"a{i}", [["a", []]], ts=T0 + i) for i in range(6)])
    assert set(busy.runs) == {"a3", "a4", "a5"}


def test_hit_rate_history_keeps_sixty_samples() -> None:
    cache = CacheStats(namespace="steps", strategy="lru", hits=1, misses=3)
    state = DashboardState.from_snapshot(empty_snapshot(cache=[cache]))
    assert list(state.hit_rate_history["steps"]) == [0.25]
    for i in range(1, 101):
        stats = CacheStats(namespace="steps", strategy="lru", hits=i, misses=100 - i)
        state.apply([ev(i, "cache:stats", {"namespaces": [stats.model_dump()]})])
    history = state.hit_rate_history["steps"]
    assert len(history) == 60
    assert history[-1] == pytest.approx(1.0) and history[0] == pytest.approx(0.41)
    assert state.cache["steps"].hits == 100
    state.apply([ev(200, "cache:stats", {"namespaces": []})])
    assert state.hit_rate_history == {} and state.cache == {}


# --------------------------------------------------------------------------- unit: agents, rate


def test_agent_load_updates_in_place_and_unregister_removes() -> None:
    state = DashboardState.from_snapshot(
        empty_snapshot(agents=[AgentLoad(id="sim", kind="simulated", capabilities=["simulated"])])
    )
    original = state.agents["sim"]
    state.apply([ev(1, "agent:load", load(active=3, capacity=8, completed=7, mean_latency=0.5))])
    assert state.agents["sim"] is original
    assert (original.active, original.capacity, original.completed) == (3, 8, 7)
    assert original.model_dump()["mean_latency"] == 0.5
    assert state.apply([ev(2, "agent:unregistered", {"agent": "sim"})]) == {"events", "agents"}
    assert state.agents == {}
    assert state.apply([ev(3, "agent:unregistered", {"agent": "sim"})]) == {"events"}


def test_events_per_second_is_a_sliding_window_that_decays() -> None:
    clock = FakeClock()
    state = DashboardState.from_snapshot(empty_snapshot(ts=T0), clock=clock)
    assert state.events_per_second == 0.0
    # 200 events spread over the last 2 s of event time, 100/s.
    state.apply([ev(i, "tick", ts=T0 + 0.01 * i) for i in range(1, 201)])
    assert state.events_per_second == pytest.approx(200 / 5, rel=0.1)
    clock.now += 3.0  # no events for 3 s: still inside the window
    assert state.events_per_second == pytest.approx(200 / 5, rel=0.15)
    clock.now += 5.0  # the window has moved past them
    assert state.events_per_second == 0.0


def test_filtered_events_and_run_prefix() -> None:
    state = DashboardState()
    state.apply(
        [
            queued(1, "abc123", [["a", []]]),
            queued(2, "abd456", [["a", []]]),
            ev(3, "step:output", {"step": "a", "stream": "stdout", "line": "Hello"}, "abc123"),
            ev(4, "agent:load", load(active=1)),
        ]
    )
    assert [e.seq for e in state.filtered_events("step:*")] == [3]
    assert [e.seq for e in state.filtered_events(text="hello")] == [3]
    assert [e.seq for e in state.filtered_events(text="!hello")] == [1, 2, 4]
    assert [e.seq for e in state.filtered_events(correlation_id="abd456")] == [2]
    assert [e.seq for e in state.filtered_events(text="((")] == []  # bad regex: literal
    assert compile_filter("") is None and compile_filter("!") is None
    view = state.run_by_prefix("abc")
    assert view is not None and view.run.id == "abc123"
    assert state.run_by_prefix("ab") is None  # ambiguous
    assert state.run_by_prefix("zz") is None


def test_snapshot_recent_events_past_its_seq_are_left_to_the_subscription() -> None:
    recent = [ev(i, "tick") for i in range(1, 8)]
    state = DashboardState.from_snapshot(empty_snapshot(seq=5, recent_events=recent))
    assert [e.seq for e in state.events] == [1, 2, 3, 4, 5]
    state.apply(recent[4:])  # the subscription delivers 6 and 7 once more
    assert [e.seq for e in state.events] == [1, 2, 3, 4, 5, 6, 7]


# --------------------------------------------------------------------------- volume


def test_folding_100000_events() -> None:
    n_steps = 50
    dag = [[f"s{i}", []] for i in range(n_steps)]
    events = [queued(1, "r1", dag)]
    seq = 1
    for i in range(100_000 - 1):
        seq += 1
        step = f"s{i % n_steps}"
        kind = i % 10
        if kind == 0:
            events.append(step_ev(seq, "r1", step, "running"))
        elif kind == 1:
            events.append(ev(seq, "agent:load", load(active=i % 8, completed=i), None))
        else:
            line = f"line {i} of {step}"
            events.append(ev(seq, "step:output", {"step": step, "line": line}, "r1"))
    state = DashboardState()
    began = time.perf_counter()
    for i in range(0, len(events), 5000):  # batches as the app folds them
        state.apply(events[i : i + 5000])
    took = time.perf_counter() - began
    print(
        f"\nfolded {len(events)} events in {took:.3f}s ({len(events) / took:,.0f} events/s)",
        file=sys.stderr,
    )
    assert state.seq == 100_000
    assert len(state.events) == DashboardState.MAX_EVENTS
    assert state.runs["r1"].steps["s49"].last_line == "line 99949 of s49"
    assert state.agents["sim"].completed == 99_991
    assert state.fold_errors == 0


def test_step_started_event_marks_the_step_running() -> None:
    """The engine reports a running step as `step:started`; the DAG must show it running."""
    from voltui.engine.models import Event, StepState
    from voltui.tui.state import DashboardState

    state = DashboardState()
    queued = Event(
        seq=1,
        ts=10.0,
        type="workflow:queued",
        source="workflows",
        correlation_id="r1",
        data={"workflow_id": "w", "name": "W", "steps_total": 1, "dag": [["a", []]]},
    )
    started = Event(
        seq=2,
        ts=11.0,
        type="step:started",
        source="workflows",
        correlation_id="r1",
        data={"step": "a", "state": "running", "attempt": 1, "max_attempts": 2, "agent": "x"},
    )
    state.apply([queued, started])
    step = state.runs["r1"].steps["a"]
    assert step.state is StepState.RUNNING
    assert step.agent == "x" and step.started_at == 11.0


# --------------------------------------------------------------------------- issue 9 folds


def test_step_duration_is_the_engines_attempt_time_and_queue_wait_is_apart() -> None:
    """The same step must not read 177 ms live and 14 ms in its event: the fold takes the
    duration the engine reports on the final event (attempt start to end), not the gap between
    event timestamps, which includes the store write before the event."""
    st = DashboardState()
    st.apply([queued(1, "r", [["a", []]], ts=T0)])
    st.apply(
        [
            ev(2, "step:waiting", {"step": "a", "state": "waiting"}, "r", ts=T0 + 1.0),
            ev(3, "step:started", {"step": "a", "state": "running"}, "r", ts=T0 + 1.5),
        ]
    )
    sv = st.runs["r"].steps["a"]
    assert sv.queue_wait == pytest.approx(0.5)
    assert sv.duration is None and sv.elapsed(T0 + 2.0) == pytest.approx(0.5)
    st.apply(
        [
            ev(
                4,
                "step:succeeded",
                {"step": "a", "state": "succeeded", "duration": 0.014},
                "r",
                ts=T0 + 1.677,
            )
        ]
    )
    assert sv.duration == pytest.approx(0.014)
    assert sv.elapsed(T0 + 100) == pytest.approx(0.014)
    assert sv.queue_wait == pytest.approx(0.5)


def progress_ev(seq: int, run_id: str, **counts: int) -> Event:
    done = sum(counts.values())
    return ev(seq, "workflow:progress", {"done": done, "total": 3, **counts}, run_id)


def test_progress_splits_outcomes_from_the_engines_counters() -> None:
    st = DashboardState()
    st.apply([queued(1, "r", [["a", []], ["b", ["a"]], ["c", ["a"]]])])
    rv = st.runs["r"]
    p = rv.progress()
    assert (p.succeeded, p.failed, p.cancelled, p.unknown, p.total) == (0, 0, 0, 0, 3)
    changed = st.apply([progress_ev(2, "r", succeeded=1, failed=1, skipped=0, cancelled=1)])
    assert "runs" in changed
    p = rv.progress()
    assert (p.succeeded, p.failed, p.cancelled, p.total) == (1, 1, 1, 3)


def test_cancelled_run_without_a_finished_step_is_not_full() -> None:
    """The final event's counters win: a cancelled run whose steps were all stopped reads
    0 succeeded of 3, 3 cancelled or skipped (it used to read 3/3, "finished")."""
    st = DashboardState()
    st.apply([queued(1, "r", [["a", []], ["b", ["a"]], ["c", ["b"]]])])
    data = {"state": "cancelled", "succeeded": 0, "failed": 0, "skipped": 2, "cancelled": 1}
    st.apply(
        [
            step_ev(2, "r", "a", "running"),
            ev(3, "workflow:cancelling", {}, "r"),
        ]
    )
    assert st.runs["r"].run.state is RunState.CANCELLING
    st.apply(
        [
            step_ev(4, "r", "a", "cancelled"),
            step_ev(5, "r", "b", "skipped"),
            step_ev(6, "r", "c", "skipped"),
            ev(7, "workflow:cancelled", data, "r"),
        ]
    )
    run = st.runs["r"].run
    assert run.state is RunState.CANCELLED and run.steps_done == 3
    p = st.runs["r"].progress()
    assert (p.succeeded, p.failed, p.cancelled, p.total) == (0, 0, 3, 3)


def test_runs_without_counters_do_not_guess_outcomes() -> None:
    """An older engine sends no counters: a failed run's ended steps are `unknown`, never
    shown as succeeded."""
    run = Run(
        id="r",
        workflow_id="w",
        workflow_name="w",
        created_at=T0,
        steps_total=4,
        steps_done=4,
        state=RunState.FAILED,
    )
    p = RunView(run=run).progress()
    assert p.unknown == 4 and p.succeeded == 0
    ok = run.model_copy(update={"state": RunState.SUCCEEDED})
    assert RunView(run=ok).progress().succeeded == 4
    counted = run.model_copy(update={"steps_succeeded": 2, "steps_failed": 1, "steps_cancelled": 1})
    p = RunView(run=counted).progress()
    assert (p.succeeded, p.failed, p.cancelled, p.total) == (2, 1, 1, 4)


def test_every_health_check_updates_the_component() -> None:
    st = DashboardState()
    data = {
        "component": "store",
        "name": "Run store",
        "kind": "store",
        "status": "healthy",
        "message": "last seq 1",
        "latency": 0.002,
        "checked_at": T0 + 5,
    }
    assert st.apply([ev(1, "health:checked", data)]) == {"health", "events"}
    c = st.components["store"]
    assert (c.last_check, c.latency, c.message, c.kind) == (T0 + 5, 0.002, "last seq 1", "store")
    st.apply(
        [
            ev(
                2,
                "health:checked",
                {**data, "checked_at": T0 + 35, "latency": 0.004, "message": "last seq 9\x1b[31m"},
            )
        ]
    )
    c = st.components["store"]
    assert (c.last_check, c.latency) == (T0 + 35, 0.004)
    assert "\x1b" not in c.message


def test_rate_limited_step_says_until_when() -> None:
    state = DashboardState()
    state.apply([queued(1, "r1", [["a", []]])])
    until = T0 + 75
    limited = {"step": "a", "state": "running", "until": until, "reason": "rpm of agent x"}
    changed = state.apply([ev(2, "step:rate_limited", limited, "r1")])
    assert changed >= {"dag"}  # the DAG repaints
    expected = time.strftime("%H:%M:%S", time.localtime(until))
    assert state.runs["r1"].steps["a"].last_line == f"rate limited until {expected}"
    slot = {"step": "a", "until": None, "reason": "max_concurrent 2 of \x1b[31magent x"}
    state.apply([ev(3, "step:rate_limited", slot, "r1")])
    assert state.runs["r1"].steps["a"].last_line == "rate limited: max_concurrent 2 of agent x"


def test_llm_usage_adds_up_in_the_header_figures() -> None:
    state = DashboardState()
    state.apply([queued(1, "r1", [["a", []]])])
    call = {
        "step": "a",
        "model": "m",
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "cost_usd": 0.25,
        "priced": True,
        "run_usage": {"prompt_tokens": 100, "completion_tokens": 20, "calls": 1, "cost_usd": 0.25},
    }
    changed = state.apply([ev(2, "step:usage", call, "r1")])
    assert changed == {"header", "events"}  # the figures, and the event itself in the log
    state.apply([ev(3, "step:usage", {**call, "priced": False, "cost_usd": 0.0}, "r1")])
    assert (state.usage.total_tokens, state.usage.calls) == (240, 2)
    assert state.usage.cost_usd == pytest.approx(0.25) and not state.usage.priced
    assert state.runs["r1"].run.usage is not None
    assert state.runs["r1"].run.usage.prompt_tokens == 100


def test_usage_has_one_rendering_and_the_runs_table_gives_cost_a_column() -> None:
    from voltui.engine.models import Usage
    from voltui.engine.usage import format_usage
    from voltui.tui.widgets.runs import layout

    priced = Usage(prompt_tokens=1000, completion_tokens=234, calls=2, cost_usd=0.0123)
    unpriced = Usage(prompt_tokens=50, completion_tokens=5, calls=1, priced=False)
    assert format_usage(priced) == "1,234 tok $0.0123"
    assert format_usage(priced, short=True) == "$0.0123"
    assert format_usage(unpriced, short=True) == "55 tok"
    assert format_usage(None) == "" and format_usage(Usage()) == ""
    widths = {"run": 8, "state": 11, "progress": 5, "time": 6, "started": 8, "cost": 7}
    wide, _, bar = layout(200, widths, 20, cost=True)
    assert wide == ["run", "workflow", "state", "progress", "time", "cost", "started"] and bar
    # Narrower: the bar goes first, then the start time, then the cost; identity stays.
    order = [layout(w, widths, 20, cost=True)[0] for w in range(110, 30, -1)]
    assert ["run", "workflow", "state", "progress", "time", "cost"] in order
    assert ["run", "workflow", "state", "progress", "time"] in order
    assert order[-1] == ["run", "workflow", "state"]
    assert "cost" not in layout(200, widths, 20, cost=False)[0]


def test_a_resumed_run_is_live_again_and_its_old_ending_is_gone() -> None:
    state = DashboardState.from_snapshot(empty_snapshot(seq=0))
    state.apply([queued(1, "r1", [["gate", []]])])
    state.apply([ev(2, "workflow:interrupted", {"state": "interrupted", "error": "stopped"}, "r1")])
    assert state.runs["r1"].run.state is RunState.INTERRUPTED
    again = queued(3, "r1", [["gate", []]])
    again.data["resumed"] = True
    state.apply([again, ev(4, "workflow:started", {}, "r1")])
    run = state.runs["r1"].run
    assert run.state is RunState.RUNNING
    assert run.error is None and run.finished_at is None


def test_llm_usage_is_kept_per_agent_for_the_agents_table() -> None:
    from voltui.engine.models import Usage
    from voltui.engine.usage import UsageTotals
    from voltui.tui.widgets.agents import _sig

    before = Usage(prompt_tokens=10, completion_tokens=5, calls=1, cost_usd=0.5)
    snap = empty_snapshot(usage=UsageTotals(total=before, by_agent={"llm-a": before}))
    state = DashboardState.from_snapshot(snap)
    state.apply([queued(1, "r1", [["ask", []]])])
    call = {"step": "ask", "agent": "llm-b", "model": "m", "prompt_tokens": 7}
    call |= {"completion_tokens": 3, "cost_usd": 0.25, "run_usage": {}}
    assert state.apply([ev(2, "step:usage", call, "r1")]) >= {"agents", "header"}
    assert state.usage_by_agent["llm-b"].total_tokens == 10
    assert state.usage_by_agent["llm-a"].cost_usd == 0.5
    assert state.usage.cost_usd == 0.75
    load = AgentLoad(id="llm-b", kind="llm", capabilities=["llm"], capacity=1)
    assert _sig(load, state.usage_by_agent["llm-b"])[6] == "$0.2500"
    assert _sig(load, None)[6] == ""  # no call yet: an empty cell, not $0


def test_a_run_waiting_for_a_person_and_working_again() -> None:
    state = DashboardState.from_snapshot(empty_snapshot(seq=0))
    state.apply([queued(1, "r1", [["gate", []]]), ev(2, "workflow:started", {}, "r1")])
    assert state.apply([ev(3, "workflow:waiting", {"approvals": 1}, "r1")]) >= {"runs"}
    assert state.runs["r1"].run.state is RunState.WAITING
    assert state.active_runs() == 1  # waiting is still active
    state.apply([ev(4, "workflow:running", {}, "r1")])
    assert state.runs["r1"].run.state is RunState.RUNNING
    state.apply([ev(5, "workflow:cancelled", {"state": "cancelled"}, "r1")])
    state.apply([ev(6, "workflow:waiting", {}, "r1")])  # late: an ended run stays ended
    assert state.runs["r1"].run.state is RunState.CANCELLED


def test_a_waiting_approval_is_timed_from_when_it_was_first_asked() -> None:
    state = DashboardState.from_snapshot(empty_snapshot(seq=0))
    state.apply([queued(1, "r1", [["gate", []]])])
    asked = T0 - 600  # asked ten minutes ago, before the engine restarted
    data = {"step": "gate", "prompt": "go?", "requested_at": asked}
    state.apply([ev(2, "step:approval_requested", data, "r1")])
    gate = state.runs["r1"].steps["gate"]
    assert gate.started_at == asked and gate.elapsed(T0) == 600
    state.apply([ev(3, "step:succeeded", {"step": "gate", "state": "succeeded"}, "r1", ts=T0)])
    assert gate.duration == 600  # the same figure as the engine's StepRun.duration
