"""From an agent's configuration to the object that runs its steps."""

from __future__ import annotations

from voltui.engine.agents.base import Agent
from voltui.engine.agents.command import CommandAgent
from voltui.engine.agents.llm import LLMAgent
from voltui.engine.agents.python import PythonAgent
from voltui.engine.agents.simulated import SimulatedAgent
from voltui.engine.errors import UserError
from voltui.engine.models import AgentSpec

AGENT_KINDS: dict[str, type[Agent]] = {
    "command": CommandAgent,
    "python": PythonAgent,
    "llm": LLMAgent,
    "simulated": SimulatedAgent,
}


def create_agent(spec: AgentSpec) -> Agent:
    """The agent for `spec.kind`; kinds that need an optional extra say which one."""
    if spec.kind == "dask":
        raise UserError(
            f"agent {spec.id!r}: the dask agent needs the voltui[dask] extra "
            "(pip install 'voltui[dask]'), which this installation does not provide"
        )
    try:
        cls = AGENT_KINDS[spec.kind]
    except KeyError:
        known = ", ".join(sorted(AGENT_KINDS))
        raise UserError(
            f"agent {spec.id!r} has unknown kind {spec.kind!r}; known kinds: {known}"
        ) from None
    return cls(spec)
