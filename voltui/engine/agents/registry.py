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
            f"agent {spec.id!r}: Dask agents are not configured one by one; set "
            "executor.dask.address in the config (or VOLTUI_DASK_ADDRESS, or "
            "`voltui serve --dask ADDRESS`) and every worker of that cluster becomes an agent"
        )
    try:
        cls = AGENT_KINDS[spec.kind]
    except KeyError:
        known = ", ".join(sorted(AGENT_KINDS))
        raise UserError(
            f"agent {spec.id!r} has unknown kind {spec.kind!r}; known kinds: {known}"
        ) from None
    return cls(spec)
