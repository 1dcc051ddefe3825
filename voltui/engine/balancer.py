"""LoadBalancer: which of several capable agents gets the next step.

Pure bookkeeping with no asyncio and no randomness: the CoordinationEngine decides *whether* a
step may run (capabilities, queueing); this module only decides *where*, from counters it keeps
per agent. Being deterministic given the same history keeps tests and TUI snapshots stable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from voltui.engine.errors import NotFoundError, UserError
from voltui.engine.models import AgentLoad

Strategy = Literal["round_robin", "least_connections", "weighted", "performance_based"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)

# Floors for the performance score: a 0 s latency (simulated work) or a 0 % success rate must
# not turn the score into 0 or infinity, which would freeze the choice forever.
_MIN_LATENCY = 1e-3
_MIN_SUCCESS = 0.01


@dataclass
class _AgentState:
    """Everything the balancer remembers about one agent."""

    id: str
    kind: str
    capabilities: list[str]
    capacity: int
    weight: float
    order: int
    """Registration order; stable tie-breaker that survives dict re-creation."""
    active: int = 0
    completed: int = 0
    failed: int = 0
    latency_sum: float = 0.0
    seeded: int = 0
    """Outcomes counted from the stored history (no latency known for them)."""
    ewma_latency: float | None = None
    ewma_success: float | None = None
    healthy: bool = True
    last_pick: int = -1
    """Tick of the latest round-robin pick; the least recent one goes next."""
    current_weight: float = 0.0
    """Smooth weighted round robin running weight (nginx's `current_weight`)."""
    limited_until: float = 0.0
    """Epoch seconds until which a rate limit holds this agent's calls back."""

    @property
    def finished(self) -> int:
        return self.completed + self.failed

    @property
    def free(self) -> bool:
        return self.healthy and self.active < self.capacity

    @property
    def load_ratio(self) -> float:
        return self.active / self.capacity

    def snapshot(self) -> AgentLoad:
        finished = self.finished
        return AgentLoad(
            id=self.id,
            kind=self.kind,
            capabilities=list(self.capabilities),
            active=self.active,
            capacity=self.capacity,
            completed=self.completed,
            failed=self.failed,
            mean_latency=(
                self.latency_sum / (finished - self.seeded) if finished > self.seeded else None
            ),
            success_rate=self.completed / finished if finished else None,
            healthy=self.healthy,
            weight=self.weight,
        )


class LoadBalancer:
    """Chooses an agent among capability-matched candidates and keeps their load figures.

    `select` only chooses (it advances rotation state); the caller then calls `acquire`, and
    `release` when the work ends, so `active` always reflects steps really running.
    """

    def __init__(
        self,
        strategy: Strategy = "round_robin",
        *,
        ewma_alpha: float = 0.3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`clock` only tells whether a rate limit is over (see `mark_limited`)."""
        self._clock = clock
        if not 0 < ewma_alpha <= 1:
            raise ValueError(f"ewma_alpha must be in (0, 1], got {ewma_alpha}")
        self.strategy = strategy
        self.ewma_alpha = ewma_alpha
        self._agents: dict[str, _AgentState] = {}
        self._tick = 0
        self._registered = 0

    # ------------------------------------------------------------------ configuration

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    @strategy.setter
    def strategy(self, value: Strategy) -> None:
        # Checked here because the value usually comes from a config file, where a typo should
        # fail loudly at once rather than silently fall back to some default.
        if value not in STRATEGIES:
            raise ValueError(
                f"unknown load-balancing strategy {value!r}; choose one of {', '.join(STRATEGIES)}"
            )
        self._strategy = value

    def register(
        self,
        agent_id: str,
        *,
        kind: str,
        capabilities: list[str],
        capacity: int,
        weight: float = 1.0,
    ) -> None:
        if agent_id in self._agents:
            raise UserError(f"agent {agent_id!r} is already registered; agent ids must be unique")
        if capacity < 1:
            raise ValueError(f"agent {agent_id!r}: capacity must be at least 1, got {capacity}")
        if weight <= 0:
            raise ValueError(f"agent {agent_id!r}: weight must be positive, got {weight}")
        self._agents[agent_id] = _AgentState(
            id=agent_id,
            kind=kind,
            capabilities=list(capabilities),
            capacity=capacity,
            weight=float(weight),
            order=self._registered,
        )
        self._registered += 1

    def unregister(self, agent_id: str) -> None:
        self._state(agent_id)
        del self._agents[agent_id]

    def set_healthy(self, agent_id: str, healthy: bool) -> None:
        self._state(agent_id).healthy = healthy

    def mark_limited(self, agent_id: str, until: float) -> None:
        """A rate limit holds the agent's calls back until `until` (epoch seconds): the
        performance strategy prefers agents that are not limited meanwhile."""
        state = self._agents.get(agent_id)
        if state is not None:
            state.limited_until = max(state.limited_until, until)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._agents

    # ------------------------------------------------------------------ choosing

    def select(self, candidates: Sequence[str]) -> str | None:
        """The agent to use next among `candidates`, or None when none is free right now."""
        seen: set[str] = set()
        eligible: list[_AgentState] = []
        for agent_id in candidates:
            state = self._agents.get(agent_id)
            if state is None or agent_id in seen or not state.free:
                continue
            seen.add(agent_id)
            eligible.append(state)
        if not eligible:
            return None
        if self._strategy == "round_robin":
            chosen = self._round_robin(eligible)
        elif self._strategy == "least_connections":
            chosen = min(eligible, key=lambda s: (s.load_ratio, s.active, s.id))
        elif self._strategy == "weighted":
            chosen = self._smooth_weighted(eligible)
        else:
            chosen = self._performance(eligible)
        self._tick += 1
        chosen.last_pick = self._tick
        return chosen.id

    @staticmethod
    def _round_robin(eligible: list[_AgentState]) -> _AgentState:
        # "Least recently picked" rotates fairly even when the candidate set differs from call
        # to call (different steps need different capabilities), which a single index cannot.
        return min(eligible, key=lambda s: (s.last_pick, s.order))

    @staticmethod
    def _smooth_weighted(eligible: list[_AgentState]) -> _AgentState:
        # nginx's smooth weighted round robin: spreads a heavy agent's turns out (a,a,b,a,c,a,a
        # for 5:1:1) instead of bursts. Only eligible agents take part, as nginx skips down peers.
        total = 0.0
        best: _AgentState | None = None
        for state in eligible:
            state.current_weight += state.weight
            total += state.weight
            if best is None or state.current_weight > best.current_weight:
                best = state
        assert best is not None
        best.current_weight -= total
        return best

    def _performance(self, eligible: list[_AgentState]) -> _AgentState:
        # An agent held back by a rate limit would make the step wait however fast it is, so
        # agents that are free to call now go first; among those, the usual comparison.
        now = self._clock()
        unlimited = [s for s in eligible if s.limited_until <= now]
        eligible = unlimited or eligible
        untried = [s for s in eligible if s.finished == 0]
        if untried:
            # Without a measurement there is nothing to compare; measure everyone first.
            return min(untried, key=lambda s: (s.load_ratio, s.active, s.order))
        return min(eligible, key=lambda s: (self._cost(s), s.load_ratio, s.active, s.order))

    @staticmethod
    def _cost(state: _AgentState) -> float:
        """Expected seconds per *successful* step: latency over success probability.

        Dividing by the success rate folds reliability in the way retries do: an agent that
        fails half the time costs about two attempts per result.
        """
        latency = max(state.ewma_latency or 0.0, _MIN_LATENCY)
        success = max(state.ewma_success if state.ewma_success is not None else 1.0, _MIN_SUCCESS)
        return latency / success

    # ------------------------------------------------------------------ counting

    def acquire(self, agent_id: str) -> None:
        state = self._state(agent_id)
        if state.active >= state.capacity:
            raise RuntimeError(
                f"agent {agent_id!r} is full ({state.active}/{state.capacity}); select() first"
            )
        state.active += 1

    def release(self, agent_id: str, *, latency: float, success: bool, final: bool = True) -> None:
        """Give back a slot with the attempt's outcome.

        `final=False` is a failed attempt that will be retried: it still teaches the
        performance strategy (EWMAs) but is not counted as a failure, since the step may yet
        succeed. Cancellations use `abandon` and teach nothing.
        """
        state = self._take_back(agent_id)
        latency = max(0.0, latency)
        if success:
            state.completed += 1
        elif final:
            state.failed += 1
        if success or final:
            state.latency_sum += latency
        outcome = 1.0 if success else 0.0
        a = self.ewma_alpha
        if state.ewma_latency is None or state.ewma_success is None:
            state.ewma_latency, state.ewma_success = latency, outcome
        else:
            state.ewma_latency = a * latency + (1 - a) * state.ewma_latency
            state.ewma_success = a * outcome + (1 - a) * state.ewma_success

    def abandon(self, agent_id: str) -> None:
        """Give back a slot that was acquired but never used (a waiter cancelled in time).

        Unlike `release` it records no outcome, so cancellations do not skew the statistics.
        """
        self._take_back(agent_id)

    def _take_back(self, agent_id: str) -> _AgentState:
        state = self._state(agent_id)
        if state.active <= 0:
            raise RuntimeError(f"agent {agent_id!r} has no active work to release")
        state.active -= 1
        return state

    # ------------------------------------------------------------------ reporting

    def seed(self, agent_id: str, *, completed: int, failed: int) -> None:
        """Counts from the stored history, so an agent's figures survive an engine restart.

        They add to `completed`/`failed` only: latencies and the performance EWMAs start from
        what this engine measures itself.
        """
        state = self._state(agent_id)
        state.completed += completed
        state.failed += failed
        state.seeded += completed + failed

    def any_free(self) -> bool:
        """Whether any healthy agent has a free slot (no snapshots built)."""
        return any(state.free for state in self._agents.values())

    def load(self, agent_id: str) -> AgentLoad:
        return self._state(agent_id).snapshot()

    def loads(self) -> list[AgentLoad]:
        return [self._agents[k].snapshot() for k in sorted(self._agents)]

    def _state(self, agent_id: str) -> _AgentState:
        try:
            return self._agents[agent_id]
        except KeyError:
            known = ", ".join(sorted(self._agents)) or "none"
            raise NotFoundError(
                f"no agent {agent_id!r} is registered (registered agents: {known})"
            ) from None
