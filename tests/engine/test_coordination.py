"""CoordinationEngine: capability matching, the priority queue, cancellation and agent churn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from voltui.engine.agents.base import Agent, StepContext
from voltui.engine.balancer import LoadBalancer, Strategy
from voltui.engine.coordination import CoordinationEngine
from voltui.engine.errors import NoCapableAgentError, NotFoundError, UserError
from voltui.engine.models import AgentSpec, Priority, Step


class Recorder:
    """Stands in for EventDispatcher: same `emit` signature, keeps what was emitted."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def emit(
        self,
        type: str,
        source: str,
        data: dict[str, Any] | None = None,
        *,
        priority: Priority = Priority.NORMAL,
        correlation_id: str | None = None,
    ) -> None:
        self.events.append((type, source, dict(data or {})))

    def of(self, type: str) -> list[dict[str, Any]]:
        return [data for t, _, data in self.events if t == type]


class FakeAgent(Agent):
    kinds = frozenset({"simulated"})

    def __init__(
        self, agent_id: str, capabilities: Sequence[str] = ("x",), capacity: int = 1
    ) -> None:
        super().__init__(
            AgentSpec(
                id=agent_id, kind="simulated", capabilities=list(capabilities), capacity=capacity
            )
        )
        self.closed = False

    async def execute(self, ctx: StepContext) -> Any:
        return None

    async def close(self) -> None:
        self.closed = True


def make_step(
    step_id: str = "s",
    requires: Sequence[str] = ("x",),
    *,
    agent: str | None = None,
    priority: str = "normal",
    command: bool = False,
) -> Step:
    run: dict[str, Any] = {"command": ["true"]} if command else {"simulated": {"duration": 0}}
    return Step.model_validate(
        {
            "id": step_id,
            "requires": list(requires),
            "agent": agent,
            "priority": priority,
            "run": run,
        }
    )


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until `condition` holds; no wall-clock sleeps."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def engine(
    *agents: FakeAgent, strategy: Strategy = "round_robin"
) -> tuple[CoordinationEngine, Recorder]:
    recorder = Recorder()
    coord = CoordinationEngine(recorder, LoadBalancer(strategy))
    for agent in agents:
        await coord.register_agent(agent)
    return coord, recorder


# ---------------------------------------------------------------------- matching


async def test_capability_matching_picks_an_agent_that_has_the_capability() -> None:
    coord, _ = await engine(FakeAgent("a", ["x"], 4), FakeAgent("b", ["y"], 4))
    for _ in range(3):
        assert (await coord.acquire(make_step(requires=["y"]), run_id="r")).id == "b"
        assert (await coord.acquire(make_step(requires=["x"]), run_id="r")).id == "a"
    assert [load.active for load in coord.loads()] == [3, 3]


async def test_pinned_agent_is_the_only_choice() -> None:
    coord, _ = await engine(FakeAgent("a", ["x"], 4), FakeAgent("b", ["x"], 4))
    chosen = [(await coord.acquire(make_step(agent="b"), run_id="r")).id for _ in range(3)]
    assert chosen == ["b", "b", "b"]


async def test_unpinned_steps_are_spread_by_the_balancer() -> None:
    coord, _ = await engine(FakeAgent("a", ["x"], 4), FakeAgent("b", ["x"], 4))
    chosen = [(await coord.acquire(make_step(), run_id="r")).id for _ in range(4)]
    assert chosen == ["a", "b", "a", "b"]


async def test_check_assignable_explains_what_is_missing() -> None:
    coord, _ = await engine(FakeAgent("a", ["x"]), FakeAgent("b", ["y", "z"]))
    coord.check_assignable(make_step(requires=["y"]))  # fine: b has it

    with pytest.raises(NoCapableAgentError) as info:
        coord.check_assignable(make_step("build", requires=["gpu", "x"]))
    message = str(info.value)
    assert "step 'build'" in message
    assert "run kind 'simulated'" in message
    assert "requires=[gpu, x]" in message
    assert "- a (kind simulated, runs simulated; capabilities: x): missing gpu" in message
    assert "- b (kind simulated, runs simulated; capabilities: y, z): missing gpu, x" in message
    assert info.value.retryable is False

    with pytest.raises(NoCapableAgentError) as info:
        coord.check_assignable(make_step(requires=[], agent="ghost"))
    assert "agent='ghost'" in str(info.value)
    assert "No agent has the id 'ghost'" in str(info.value)

    with pytest.raises(NoCapableAgentError, match=r"(?s)run kind 'command'.*cannot run 'command'"):
        coord.check_assignable(make_step(requires=[], command=True))

    empty, _ = await engine()
    with pytest.raises(NoCapableAgentError, match="No agents are registered"):
        empty.check_assignable(make_step())


async def test_acquire_fails_at_once_when_no_agent_can_ever_run_the_step() -> None:
    coord, _ = await engine(FakeAgent("a", ["x"]))
    with pytest.raises(NoCapableAgentError, match="requires=\\[y\\]"):
        await asyncio.wait_for(coord.acquire(make_step(requires=["y"]), run_id="r"), 5)
    assert coord.waiting == 0


# ---------------------------------------------------------------------- queueing


async def test_waiters_are_granted_on_release_in_priority_then_fifo_order() -> None:
    agent = FakeAgent("a", ["x"], capacity=1)
    coord, recorder = await engine(agent)
    held = await coord.acquire(make_step(), run_id="r")
    await asyncio.sleep(0)  # the acquire's agent:load goes out on the next loop tick
    order: list[str] = []

    async def want(name: str, priority: Priority | None, step_priority: str = "normal") -> Agent:
        got = await coord.acquire(
            make_step(name, priority=step_priority), run_id="r", priority=priority
        )
        order.append(name)
        return got

    events_before = len(recorder.events)
    tasks = []
    wanted: list[tuple[str, Priority | None, str]] = [
        ("low1", Priority.LOW, "normal"),
        ("normal1", Priority.NORMAL, "normal"),
        ("high-from-step", None, "high"),
        ("low2", Priority.LOW, "normal"),
        ("normal2", None, "normal"),
        ("critical", Priority.CRITICAL, "low"),
    ]
    for n, (name, priority, step_priority) in enumerate(wanted, start=1):
        tasks.append(asyncio.create_task(want(name, priority, step_priority)))
        await until(lambda n=n: coord.waiting == n)
    assert order == []
    assert len(recorder.events) == events_before  # waiting itself emits nothing

    current = held
    for n in range(1, len(wanted) + 1):
        coord.release(current, latency=0.01, success=True)
        await until(lambda n=n: len(order) == n)
        current = agent
        assert coord.loads()[0].active == 1
    assert order == ["critical", "high-from-step", "normal1", "normal2", "low1", "low2"]
    assert coord.waiting == 0
    await asyncio.gather(*tasks)

    loads = recorder.of("agent:load")
    assert all(source == "coordination" for _, source, _ in recorder.events)
    assert loads[-1]["id"] == "a" and loads[-1]["active"] == 1
    assert loads[-1]["completed"] == len(wanted)
    # Load is reported once per loop tick with the final figures: a release and the grant it
    # triggers in the same tick are one event, not two.
    assert len(loads) == 1 + len(wanted)
    assert [load["completed"] for load in loads] == list(range(len(wanted) + 1))


async def test_waiter_skipped_when_its_agents_are_still_full() -> None:
    a, b = FakeAgent("a", ["x", "y"]), FakeAgent("b", ["x"])
    coord, _ = await engine(a, b)
    held_a = await coord.acquire(make_step(requires=["y"]), run_id="r")
    held_b = await coord.acquire(make_step(requires=["x"]), run_id="r")
    assert (held_a.id, held_b.id) == ("a", "b")
    first = asyncio.create_task(
        coord.acquire(make_step(requires=["y"]), run_id="r", priority=Priority.HIGH)
    )
    second = asyncio.create_task(coord.acquire(make_step(requires=["x"]), run_id="r"))
    await until(lambda: coord.waiting == 2)
    coord.release(held_b, latency=0.1, success=True)
    # b is free: the high-priority waiter needs y (only a), so the x waiter gets b.
    assert (await asyncio.wait_for(second, 5)).id == "b"
    assert not first.done()
    coord.release(held_a, latency=0.1, success=True)
    assert (await asyncio.wait_for(first, 5)).id == "a"


async def test_cancelled_waiter_leaves_the_queue_without_leaking() -> None:
    coord, _ = await engine(FakeAgent("a", ["x"], capacity=1))
    held = await coord.acquire(make_step(), run_id="r")
    waiter = asyncio.create_task(coord.acquire(make_step(), run_id="r"))
    await until(lambda: coord.waiting == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert coord.waiting == 0
    coord.release(held, latency=0.1, success=True)
    assert coord.loads()[0].active == 0
    again = await asyncio.wait_for(coord.acquire(make_step(), run_id="r"), 5)
    assert again.id == "a"


async def test_slot_granted_just_before_cancellation_is_given_back() -> None:
    coord, _ = await engine(FakeAgent("a", ["x"], capacity=1))
    held = await coord.acquire(make_step(), run_id="r")
    unlucky = asyncio.create_task(coord.acquire(make_step("one"), run_id="r"))
    await until(lambda: coord.waiting == 1)
    patient = asyncio.create_task(coord.acquire(make_step("two"), run_id="r"))
    await until(lambda: coord.waiting == 2)

    coord.release(held, latency=0.1, success=True)  # grants the slot to `unlucky` ...
    assert coord.loads()[0].active == 1
    unlucky.cancel()  # ... which is cancelled before it could resume with it.
    with pytest.raises(asyncio.CancelledError):
        await unlucky

    # The slot went back and on to the next waiter; nothing recorded for the abandoned grant.
    got = await asyncio.wait_for(patient, 5)
    assert got.id == "a"
    load = coord.loads()[0]
    assert (load.active, load.completed, load.failed) == (1, 1, 0)
    coord.release(got, latency=0.1, success=True)
    assert coord.loads()[0].active == 0
    assert coord.waiting == 0


async def test_registering_an_agent_wakes_waiters_it_can_serve() -> None:
    coord, recorder = await engine(FakeAgent("a", ["x", "y"], capacity=1))
    await coord.acquire(make_step(), run_id="r")
    needs_y = asyncio.create_task(coord.acquire(make_step(requires=["y"]), run_id="r"))
    await until(lambda: coord.waiting == 1)

    await coord.register_agent(FakeAgent("b", ["x"], capacity=1))  # cannot serve y
    await asyncio.sleep(0)
    assert not needs_y.done()

    await coord.register_agent(FakeAgent("c", ["y"], capacity=2))
    assert (await asyncio.wait_for(needs_y, 5)).id == "c"
    assert recorder.of("agent:registered")[-1] == {
        "agent": "c",
        "kind": "simulated",
        "capabilities": ["y"],
        "capacity": 2,
    }


async def test_healthy_again_wakes_waiters() -> None:
    coord, _ = await engine(FakeAgent("a", ["x"], capacity=2))
    coord.set_healthy("a", False)
    waiter = asyncio.create_task(coord.acquire(make_step(), run_id="r"))
    await until(lambda: coord.waiting == 1)
    coord.set_healthy("a", True)
    assert (await asyncio.wait_for(waiter, 5)).id == "a"


async def test_unregistering_fails_waiters_no_agent_can_serve() -> None:
    a, b = FakeAgent("a", ["x", "y"]), FakeAgent("b", ["x"])
    coord, recorder = await engine(a, b)
    held_a = await coord.acquire(make_step(requires=["y"]), run_id="r")
    held_b = await coord.acquire(make_step(requires=["x"]), run_id="r")
    needs_y = asyncio.create_task(coord.acquire(make_step("needs-y", requires=["y"]), run_id="r"))
    needs_x = asyncio.create_task(coord.acquire(make_step("needs-x", requires=["x"]), run_id="r"))
    await until(lambda: coord.waiting == 2)

    await coord.unregister_agent("a")
    assert a.closed
    assert recorder.of("agent:unregistered") == [{"agent": "a"}]
    with pytest.raises(NoCapableAgentError, match="step 'needs-y'"):
        await asyncio.wait_for(needs_y, 5)
    assert not needs_x.done()
    assert coord.waiting == 1

    # The step still running on `a` finishes: its release is ignored, even once a new agent
    # reuses the id.
    replacement = FakeAgent("a", ["x"], capacity=1)
    await coord.register_agent(replacement)
    assert (await asyncio.wait_for(needs_x, 5)).id == "a"
    coord.release(held_a, latency=0.1, success=True)
    assert coord.balancer.load("a").active == 1
    assert coord.balancer.load("a").completed == 0

    coord.release(held_b, latency=0.1, success=True)
    assert coord.balancer.load("b").active == 0


async def test_agent_registry_errors_and_listing() -> None:
    coord, _ = await engine(FakeAgent("a"), FakeAgent("b"))
    assert [agent.id for agent in coord.agents()] == ["a", "b"]
    assert coord.get("b").id == "b"
    with pytest.raises(UserError, match="agent 'a' is already registered"):
        await coord.register_agent(FakeAgent("a"))
    with pytest.raises(NotFoundError, match=r"'ghost'.*registered agents: a, b"):
        coord.get("ghost")
    with pytest.raises(NotFoundError):
        await coord.unregister_agent("ghost")
    assert [load.id for load in coord.loads()] == ["a", "b"]
