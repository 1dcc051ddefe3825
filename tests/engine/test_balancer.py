"""LoadBalancer: each strategy's choices, skipping of busy or sick agents, and the load figures."""

from __future__ import annotations

import pytest

from voltui.engine.balancer import LoadBalancer, Strategy
from voltui.engine.errors import NotFoundError, UserError


def make(strategy: Strategy, *agents: tuple[str, int, float]) -> LoadBalancer:
    lb = LoadBalancer(strategy)
    for agent_id, capacity, weight in agents:
        lb.register(
            agent_id, kind="simulated", capabilities=["x"], capacity=capacity, weight=weight
        )
    return lb


def pick(lb: LoadBalancer, candidates: list[str], n: int) -> list[str | None]:
    """Select n times without acquiring, as when each pick's work ends at once."""
    return [lb.select(candidates) for _ in range(n)]


def run_once(lb: LoadBalancer, agent_id: str, *, latency: float, success: bool = True) -> None:
    lb.acquire(agent_id)
    lb.release(agent_id, latency=latency, success=success)


# ---------------------------------------------------------------------- round robin


def test_round_robin_rotates_through_candidates() -> None:
    lb = make("round_robin", ("a", 4, 1), ("b", 4, 1), ("c", 4, 1))
    assert pick(lb, ["a", "b", "c"], 7) == ["a", "b", "c", "a", "b", "c", "a"]


def test_round_robin_stays_fair_when_candidate_sets_differ() -> None:
    lb = make("round_robin", ("a", 4, 1), ("b", 4, 1), ("c", 4, 1))
    assert lb.select(["a", "b"]) == "a"
    # a went most recently, so the never-picked b and c come first, then a again.
    assert lb.select(["a", "b", "c"]) == "b"
    assert lb.select(["a", "b", "c"]) == "c"
    assert lb.select(["a", "b", "c"]) == "a"


def test_round_robin_skips_unhealthy_full_and_unknown() -> None:
    lb = make("round_robin", ("a", 1, 1), ("b", 4, 1), ("c", 4, 1))
    lb.acquire("a")
    lb.set_healthy("c", False)
    assert pick(lb, ["a", "ghost", "b", "c"], 3) == ["b", "b", "b"]
    lb.set_healthy("c", True)
    assert set(pick(lb, ["a", "b", "c"], 2)) == {"b", "c"}


def test_select_none_when_all_full_or_no_candidates() -> None:
    lb = make("round_robin", ("a", 1, 1), ("b", 2, 1))
    for agent_id in ("a", "b", "b"):
        lb.acquire(agent_id)
    for strategy in ("round_robin", "least_connections", "weighted", "performance_based"):
        lb.strategy = strategy  # type: ignore[assignment]
        assert lb.select(["a", "b"]) is None
        assert lb.select([]) is None
        assert lb.select(["ghost"]) is None
    lb.release("b", latency=0.1, success=True)
    assert lb.select(["a", "b"]) == "b"


# ---------------------------------------------------------------------- least connections


def test_least_connections_picks_the_idle_agent() -> None:
    lb = make("least_connections", ("a", 4, 1), ("b", 4, 1), ("c", 4, 1))
    lb.acquire("a")
    lb.acquire("a")
    lb.acquire("b")
    assert lb.select(["a", "b", "c"]) == "c"
    lb.acquire("c")
    lb.acquire("c")
    assert lb.select(["a", "b", "c"]) == "b"


def test_least_connections_uses_ratio_then_active_then_id() -> None:
    lb = make("least_connections", ("big", 10, 1), ("small", 2, 1), ("tiny", 1, 1))
    for _ in range(3):
        lb.acquire("big")  # 0.3
    lb.acquire("small")  # 0.5
    assert lb.select(["small", "big"]) == "big"
    # All idle: equal ratio and active count, so the id decides, whatever the candidate order.
    lb2 = make("least_connections", ("b", 2, 1), ("a", 5, 1))
    assert lb2.select(["b", "a"]) == "a"
    # Equal ratio 0.5: fewer active wins.
    lb3 = make("least_connections", ("a", 4, 1), ("b", 2, 1))
    lb3.acquire("a")
    lb3.acquire("a")
    lb3.acquire("b")
    assert lb3.select(["a", "b"]) == "b"


# ---------------------------------------------------------------------- weighted


def test_smooth_weighted_round_robin_5_1_1() -> None:
    lb = make("weighted", ("a", 100, 5), ("b", 100, 1), ("c", 100, 1))
    expected = ["a", "a", "b", "a", "c", "a", "a"]
    assert pick(lb, ["a", "b", "c"], 14) == expected * 2


def test_weighted_skips_full_agents() -> None:
    lb = make("weighted", ("a", 1, 5), ("b", 100, 1), ("c", 100, 1))
    lb.acquire("a")
    assert pick(lb, ["a", "b", "c"], 4) == ["b", "c", "b", "c"]


def test_weighted_proportions_over_many_picks() -> None:
    lb = make("weighted", ("a", 1000, 3), ("b", 1000, 1))
    chosen = pick(lb, ["a", "b"], 400)
    assert chosen.count("a") == 300
    assert chosen.count("b") == 100


# ---------------------------------------------------------------------- performance based


def test_performance_tries_untried_agents_first() -> None:
    lb = make("performance_based", ("a", 4, 1), ("b", 4, 1), ("c", 4, 1))
    run_once(lb, "a", latency=0.01)
    # b and c have no history yet, so they are measured before a's good figure is trusted.
    assert lb.select(["a", "b", "c"]) == "b"
    run_once(lb, "b", latency=5.0)
    assert lb.select(["a", "b", "c"]) == "c"


def test_performance_prefers_faster_agent_after_history() -> None:
    lb = make("performance_based", ("fast", 4, 1), ("slow", 4, 1))
    for _ in range(3):
        run_once(lb, "fast", latency=0.1)
        run_once(lb, "slow", latency=1.0)
    assert pick(lb, ["slow", "fast"], 3) == ["fast"] * 3
    # Once the fast one is full, the slow one still gets work.
    for _ in range(4):
        lb.acquire("fast")
    assert lb.select(["slow", "fast"]) == "slow"


def test_performance_prefers_agents_not_rate_limited() -> None:
    now = [1000.0]
    lb = LoadBalancer("performance_based", clock=lambda: now[0])
    for agent_id in ("fast", "slow"):
        lb.register(agent_id, kind="llm", capabilities=["x"], capacity=4)
    for _ in range(3):
        run_once(lb, "fast", latency=0.1)
        run_once(lb, "slow", latency=1.0)
    lb.mark_limited("fast", until=1010.0)
    assert lb.select(["fast", "slow"]) == "slow"  # limited for 10 s: the slow one goes first
    lb.mark_limited("fast", until=1005.0)  # an earlier end does not shorten the limit
    now[0] = 1009.9
    assert lb.select(["fast", "slow"]) == "slow"
    now[0] = 1010.0
    assert lb.select(["fast", "slow"]) == "fast"
    lb.mark_limited("fast", until=2000.0)
    lb.mark_limited("slow", until=2000.0)
    assert lb.select(["fast", "slow"]) == "fast"  # all limited: the usual comparison
    lb.mark_limited("ghost", until=2000.0)  # an unknown agent is ignored (it just left)


def test_performance_prefers_reliable_agent() -> None:
    lb = make("performance_based", ("flaky", 4, 1), ("solid", 4, 1))
    for i in range(4):
        run_once(lb, "flaky", latency=0.5, success=i % 2 == 0)
        run_once(lb, "solid", latency=0.6, success=True)
    assert lb.select(["flaky", "solid"]) == "solid"


def test_performance_follows_recent_latency_not_mean() -> None:
    lb = make("performance_based", ("a", 4, 1), ("b", 4, 1))
    run_once(lb, "a", latency=1.0)
    run_once(lb, "b", latency=0.5)
    run_once(lb, "b", latency=2.0)
    # b's mean is 1.25 s (worse than a's 1.0) but its EWMA is 0.3*2 + 0.7*0.5 = 0.95 s.
    assert lb.load("b").mean_latency == pytest.approx(1.25)
    assert lb.select(["a", "b"]) == "b"
    run_once(lb, "b", latency=2.0)  # EWMA 1.265 s now: a wins.
    assert lb.select(["a", "b"]) == "a"


def test_performance_ties_broken_by_load() -> None:
    lb = make("performance_based", ("a", 4, 1), ("b", 4, 1))
    run_once(lb, "a", latency=0.2)
    run_once(lb, "b", latency=0.2)
    lb.acquire("a")
    assert lb.select(["a", "b"]) == "b"


def test_selection_is_deterministic_given_history() -> None:
    def scenario() -> list[str | None]:
        lb = make("performance_based", ("a", 3, 1), ("b", 3, 2), ("c", 3, 1))
        out: list[str | None] = []
        for i in range(30):
            lb.strategy = ("round_robin", "weighted", "performance_based")[i % 3]  # type: ignore[assignment]
            chosen = lb.select(["a", "b", "c"])
            out.append(chosen)
            assert chosen is not None
            run_once(lb, chosen, latency=0.1 * (i % 4 + 1), success=i % 5 != 0)
        return out

    assert scenario() == scenario()


# ---------------------------------------------------------------------- counting and figures


def test_load_figures_after_acquire_and_release() -> None:
    lb = LoadBalancer()
    lb.register("a", kind="command", capabilities=["x", "y"], capacity=2, weight=2.5)
    idle = lb.load("a")
    assert (idle.active, idle.completed, idle.failed) == (0, 0, 0)
    assert idle.mean_latency is None and idle.success_rate is None
    assert (idle.kind, idle.capabilities, idle.capacity, idle.weight) == (
        "command",
        ["x", "y"],
        2,
        2.5,
    )

    lb.acquire("a")
    lb.acquire("a")
    assert lb.load("a").active == 2
    with pytest.raises(RuntimeError, match="full"):
        lb.acquire("a")
    lb.release("a", latency=1.0, success=True)
    lb.release("a", latency=3.0, success=False)
    done = lb.load("a")
    assert (done.active, done.completed, done.failed) == (0, 1, 1)
    assert done.mean_latency == pytest.approx(2.0)
    assert done.success_rate == pytest.approx(0.5)
    with pytest.raises(RuntimeError, match="no active work"):
        lb.release("a", latency=1.0, success=True)


def test_retried_and_cancelled_attempts_are_not_failures() -> None:
    """`failed` counts steps that failed on the agent: a retried attempt (`final=False`) is
    not one, and a cancelled attempt (`abandon`) records nothing."""
    lb = make("performance_based", ("a", 3, 1))
    for _ in range(3):
        lb.acquire("a")
    lb.release("a", latency=1.0, success=False, final=False)
    lb.abandon("a")
    lb.release("a", latency=3.0, success=True)
    load = lb.load("a")
    assert (load.active, load.completed, load.failed) == (0, 1, 0)
    assert load.success_rate == pytest.approx(1.0), "one step, and it succeeded"
    lb.acquire("a")
    lb.release("a", latency=1.0, success=False)
    assert lb.load("a").failed == 1


def test_abandon_returns_slot_without_recording_an_outcome() -> None:
    lb = make("round_robin", ("a", 1, 1))
    lb.acquire("a")
    lb.abandon("a")
    load = lb.load("a")
    assert (load.active, load.completed, load.failed) == (0, 0, 0)


def test_loads_sorted_and_health_reported() -> None:
    lb = make("round_robin", ("c", 1, 1), ("a", 1, 1), ("b", 1, 1))
    lb.set_healthy("b", False)
    loads = lb.loads()
    assert [load.id for load in loads] == ["a", "b", "c"]
    assert [load.healthy for load in loads] == [True, False, True]
    lb.unregister("a")
    assert [load.id for load in lb.loads()] == ["b", "c"]


def test_errors_for_unknown_duplicate_and_bad_settings() -> None:
    lb = make("round_robin", ("a", 1, 1))
    with pytest.raises(NotFoundError, match=r"'ghost'.*registered agents: a"):
        lb.load("ghost")
    for call in (lambda: lb.unregister("ghost"), lambda: lb.acquire("ghost")):
        with pytest.raises(NotFoundError):
            call()
    with pytest.raises(UserError, match="already registered"):
        lb.register("a", kind="simulated", capabilities=[], capacity=1)
    with pytest.raises(ValueError, match="capacity"):
        lb.register("z", kind="simulated", capabilities=[], capacity=0)
    with pytest.raises(ValueError, match="unknown load-balancing strategy 'fastest'"):
        lb.strategy = "fastest"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="ewma_alpha"):
        LoadBalancer(ewma_alpha=0)
