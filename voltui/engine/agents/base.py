"""What every agent kind implements, and what a step attempt is given to work with.

The WorkflowManager owns retries, timeouts and cancellation; an agent only runs one attempt.
Cancellation and timeouts arrive as `asyncio.CancelledError` inside `execute`; an agent that
started a child process must stop it (terminate, then kill after `ctx.cancel_grace`) before
letting the cancellation propagate.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from voltui.engine.budget import RunBudget
from voltui.engine.models import AgentSpec, RunKind, Step, Usage
from voltui.engine.ratelimit import OnWait, RateLimits

OutputSink = Callable[[Literal["stdout", "stderr", "engine"], str], None]


@dataclass
class StepContext:
    """One attempt of one step: its definition, the data it may use, and where to report."""

    run_id: str
    step: Step
    attempt: int
    inputs: dict[str, Any]
    """The run's workflow inputs (after defaults)."""
    upstream: dict[str, Any]
    """Outputs of the steps this one depends on, by step id."""
    base_dir: Path
    """Folder of the workflow file; relative `cwd` and script paths resolve against it."""
    run_dir: Path
    """Scratch folder of this run, shared by its steps, for artefacts."""
    emit: OutputSink = field(default=lambda stream, line: None)
    """Report one line of output; becomes a `step:output` event and a stored log line."""
    cancel_grace: float = 5.0
    """Seconds a child process gets between terminate and kill."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Engine settings an agent may need (LLM endpoint, model, key)."""
    on_spawn: Callable[[int], None] = field(default=lambda pid: None)
    """Report a child process group leader, so a crashed engine's orphans can be found later."""
    cancel_event: threading.Event = field(default_factory=threading.Event)
    """Set when the attempt is cancelled or timed out; sync Python steps running in a worker
    thread cannot be interrupted, so long loops should check `ctx.cancel_event.is_set()`."""
    limits: RateLimits | None = None
    """The engine's rate limits (per agent, per provider); None means unlimited."""
    budget: RunBudget | None = None
    """The run's LLM budget; an LLM call reserves its worst case here first."""
    on_usage: Callable[[Usage], None] = field(default=lambda usage: None)
    """Report the tokens and cost of one LLM call; summed into the step, run and agent."""
    on_rate_limited: OnWait = field(default=lambda until, reason: None)
    """Report that the attempt waits for a rate limit until `until` (epoch s, or None)."""

    @property
    def params(self) -> dict[str, Any]:
        return self.step.params

    def log(self, line: str) -> None:
        """Convenience for Python steps: one line to the step's stdout log."""
        self.emit("stdout", line)

    def payload(self) -> dict[str, Any]:
        """The JSON document a step receives (stdin for commands)."""
        return {
            "run_id": self.run_id,
            "step_id": self.step.id,
            "attempt": self.attempt,
            "inputs": self.inputs,
            "params": self.step.params,
            "upstream": self.upstream,
            "run_dir": str(self.run_dir),
        }


class Agent(abc.ABC):
    """A worker that can run steps of some kinds; capacity is enforced by the coordinator."""

    kinds: ClassVar[frozenset[RunKind]] = frozenset()
    """Which `run:` kinds this agent can execute."""

    def __init__(self, spec: AgentSpec) -> None:
        self.spec = spec

    @property
    def id(self) -> str:
        return self.spec.id

    def can_run(self, step: Step) -> bool:
        """Kind, capabilities and pinned agent id all fit."""
        if step.agent is not None and step.agent != self.spec.id:
            return False
        if step.run.kind not in self.kinds:
            return False
        return set(step.requires) <= set(self.spec.capabilities)

    @abc.abstractmethod
    async def execute(self, ctx: StepContext) -> Any:
        """Run one attempt and return its output (JSON-able). Raise StepError on failure."""

    async def check_health(self) -> bool:
        """Whether the agent can take work now; the default agent is always healthy."""
        return True

    async def close(self) -> None:  # noqa: B027 - optional hook, default does nothing
        """Release resources when unregistered or at engine stop."""
