"""CoordinationEngine: matches steps to agents and queues them while every capable agent is busy.

The WorkflowManager asks `acquire(step)` for an agent and `release(agent, ...)` when the attempt
ends. Capability matching and the wait queue live here; the choice among several free agents is
the LoadBalancer's. Waiting is done with futures granted on release or registration, never by
polling, so a thousand queued steps cost nothing while they wait.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from dataclasses import dataclass, field
from typing import Any

from voltui.engine.agents.base import Agent
from voltui.engine.balancer import LoadBalancer
from voltui.engine.errors import NoCapableAgentError, NotFoundError, UserError
from voltui.engine.events import EventEmitter
from voltui.engine.models import AgentLoad, Priority, Step

SOURCE = "coordination"


@dataclass(eq=False)
class _Waiter:
    """One queued `acquire`; `key` orders the queue (higher priority first, then FIFO)."""

    step: Step
    run_id: str
    priority: Priority
    seq: int
    future: asyncio.Future[Agent]
    candidates: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[int, int]:
        return (-self.priority.rank, self.seq)


class CoordinationEngine:
    """Registered agents, the capacity they have left, and the steps queued for them."""

    def __init__(self, dispatcher: EventEmitter, balancer: LoadBalancer) -> None:
        self._dispatcher = dispatcher
        self._balancer = balancer
        self._agents: dict[str, Agent] = {}
        self._queue: list[_Waiter] = []
        self._seq = itertools.count()
        self._matches: dict[tuple[str, tuple[str, ...], str | None], list[str]] = {}
        self._dirty_loads: set[str] = set()
        self._load_flush_scheduled = False

    @property
    def balancer(self) -> LoadBalancer:
        return self._balancer

    # ------------------------------------------------------------------ agents

    async def register_agent(self, agent: Agent) -> None:
        spec = agent.spec
        if spec.id in self._agents:
            raise UserError(
                f"agent {spec.id!r} is already registered; give each agent a unique id "
                f"(the existing one is of kind {self._agents[spec.id].spec.kind!r})"
            )
        self._balancer.register(
            spec.id,
            kind=spec.kind,
            capabilities=list(spec.capabilities),
            capacity=spec.capacity,
            weight=spec.weight,
        )
        self._agents[spec.id] = agent
        self._matches.clear()
        self._emit(
            "agent:registered",
            {
                "agent": spec.id,
                "kind": spec.kind,
                "capabilities": list(spec.capabilities),
                "capacity": spec.capacity,
            },
        )
        for waiter in self._queue:
            if agent.can_run(waiter.step):
                waiter.candidates.append(spec.id)
        self._dispatch()

    async def unregister_agent(self, agent_id: str) -> None:
        agent = self.get(agent_id)
        del self._agents[agent_id]
        self._matches.clear()
        self._balancer.unregister(agent_id)
        self._emit("agent:unregistered", {"agent": agent_id})
        # Steps that only this agent could run will never run now: fail them instead of letting
        # the run hang. The others just lose one candidate.
        for waiter in list(self._queue):
            if agent_id in waiter.candidates:
                waiter.candidates.remove(agent_id)
            if not waiter.candidates:
                self._queue.remove(waiter)
                if not waiter.future.done():
                    waiter.future.set_exception(NoCapableAgentError(self._explain(waiter.step)))
        await agent.close()

    def agents(self) -> list[Agent]:
        return list(self._agents.values())

    def get(self, agent_id: str) -> Agent:
        try:
            return self._agents[agent_id]
        except KeyError:
            known = ", ".join(sorted(self._agents)) or "none"
            raise NotFoundError(
                f"no agent {agent_id!r} is registered (registered agents: {known})"
            ) from None

    def set_healthy(self, agent_id: str, healthy: bool) -> None:
        """Mark an agent (un)healthy; an agent coming back may serve queued steps at once."""
        self.get(agent_id)
        self._balancer.set_healthy(agent_id, healthy)
        if healthy:
            self._dispatch()

    # ------------------------------------------------------------------ steps

    def check_assignable(self, step: Step) -> None:
        """Fail fast, before a run starts, on a step that no registered agent can ever run."""
        if not self._candidates(step):
            raise NoCapableAgentError(self._explain(step))

    def try_acquire(self, step: Step) -> Agent | None:
        """A free capable agent taken at once, or None when the step would have to queue.

        Raises NoCapableAgentError when no registered agent can ever run the step. Never
        jumps the queue: with steps waiting, it defers to `acquire`.
        """
        candidates = self._candidates(step)
        if not candidates:
            raise NoCapableAgentError(self._explain(step))
        if self._queue:
            return None
        chosen = self._balancer.select(candidates)
        return self._grant(chosen) if chosen is not None else None

    async def acquire(self, step: Step, *, run_id: str, priority: Priority | None = None) -> Agent:
        candidates = self._candidates(step)
        if not candidates:
            raise NoCapableAgentError(self._explain(step))
        # Queued steps were granted whatever they could use on every change, so a free slot now
        # is one no waiter can use and taking it jumps nobody. Dispatching first keeps that true
        # even if someone flipped health on the balancer directly.
        if self._queue:
            self._dispatch()
        chosen = self._balancer.select(candidates)
        if chosen is not None:
            return self._grant(chosen)

        waiter = _Waiter(
            step=step,
            run_id=run_id,
            priority=priority if priority is not None else step.priority,
            seq=next(self._seq),
            future=asyncio.get_running_loop().create_future(),
            candidates=candidates,
        )
        bisect.insort(self._queue, waiter, key=lambda w: w.key)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                # Granted a slot in the same loop iteration as the cancellation: hand it back,
                # or the agent would look busy forever.
                self._give_back(future.result())
            elif waiter in self._queue:
                self._queue.remove(waiter)
            raise

    def release(
        self, agent: Agent, *, latency: float, success: bool | None, final: bool = True
    ) -> None:
        """End an attempt. `success=None` is a cancellation: the slot comes back but nothing
        counts for or against the agent; `final=False` is a failure that will be retried."""
        if self._agents.get(agent.id) is not agent:
            # Unregistered (or replaced by a new agent with the same id) while the step ran:
            # its slot no longer exists, so there is nothing to give back.
            return
        if success is None:
            self._balancer.abandon(agent.id)
        else:
            self._balancer.release(agent.id, latency=latency, success=success, final=final)
        self._emit_load(agent.id)
        self._dispatch()

    def loads(self) -> list[AgentLoad]:
        return self._balancer.loads()

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._queue if not w.future.done())

    # ------------------------------------------------------------------ internals

    def _candidates(self, step: Step) -> list[str]:
        """Agents that can run `step`, computed once per kind of step until agents change."""
        key = (step.run.kind, tuple(step.requires), step.agent)
        found = self._matches.get(key)
        if found is None:
            found = self._matches[key] = [a.id for a in self._agents.values() if a.can_run(step)]
        return list(found)

    def _grant(self, agent_id: str) -> Agent:
        self._balancer.acquire(agent_id)
        self._emit_load(agent_id)
        return self._agents[agent_id]

    def _give_back(self, agent: Agent) -> None:
        if self._agents.get(agent.id) is not agent:
            return
        self._balancer.abandon(agent.id)
        self._emit_load(agent.id)
        self._dispatch()

    def _dispatch(self) -> None:
        """Grant free capacity to queued steps in queue order, skipping ones still blocked."""
        if not self._queue:
            return
        remaining: list[_Waiter] = []
        for index, waiter in enumerate(self._queue):
            if waiter.future.done():  # cancelled, dropped from the queue
                continue
            chosen = self._balancer.select(waiter.candidates)
            if chosen is None:
                remaining.append(waiter)
                if not self._any_free():
                    remaining.extend(w for w in self._queue[index + 1 :] if not w.future.done())
                    break
                continue
            waiter.future.set_result(self._grant(chosen))
        self._queue = remaining

    def _any_free(self) -> bool:
        return self._balancer.any_free()

    def _emit_load(self, agent_id: str) -> None:
        """Report an agent's load once per loop tick, however many slots changed in it.

        Sixty-four steps finishing together are one `agent:load` per agent with the final
        figures, not 128 events; without a running loop (tests driving it synchronously) the
        event goes out at once.
        """
        if agent_id in self._dirty_loads:
            return
        self._dirty_loads.add(agent_id)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush_loads()
            return
        if not self._load_flush_scheduled:
            self._load_flush_scheduled = True
            loop.call_soon(self._flush_loads)

    def _flush_loads(self) -> None:
        self._load_flush_scheduled = False
        dirty, self._dirty_loads = self._dirty_loads, set()
        for agent_id in sorted(dirty):
            if agent_id in self._balancer:
                self._emit("agent:load", self._balancer.load(agent_id).model_dump())

    def _emit(self, type: str, data: dict[str, Any]) -> None:
        self._dispatcher.emit(type, SOURCE, data)

    def _explain(self, step: Step) -> str:
        """Say what the step needs, what each agent offers and why it does not fit."""
        needs = [f"run kind {step.run.kind!r}", f"requires=[{', '.join(step.requires)}]"]
        if step.agent is not None:
            needs.append(f"agent={step.agent!r}")
        head = f"no registered agent can run step {step.id!r}; it needs {', '.join(needs)}."
        if not self._agents:
            return f"{head} No agents are registered; add one to the configuration."
        lines = [head, "Registered agents:"]
        for agent in self._agents.values():
            spec = agent.spec
            caps = ", ".join(spec.capabilities) or "none"
            runs = ", ".join(sorted(agent.kinds)) or "nothing"
            lines.append(
                f"  - {spec.id} (kind {spec.kind}, runs {runs}; capabilities: {caps})"
                f": {self._mismatch(agent, step)}"
            )
        if step.agent is not None and step.agent not in self._agents:
            lines.append(f"No agent has the id {step.agent!r}; check the step's `agent:` value.")
        else:
            lines.append("Fix the step's `requires:`/`agent:` or add an agent with what it needs.")
        return "\n".join(lines)

    @staticmethod
    def _mismatch(agent: Agent, step: Step) -> str:
        reasons: list[str] = []
        if step.agent is not None and step.agent != agent.id:
            reasons.append("not the pinned agent")
        if step.run.kind not in agent.kinds:
            reasons.append(f"cannot run {step.run.kind!r} steps")
        missing = [c for c in step.requires if c not in set(agent.spec.capabilities)]
        if missing:
            reasons.append(f"missing {', '.join(missing)}")
        return "; ".join(reasons) or "fits"
