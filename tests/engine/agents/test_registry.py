"""The registry turns agent configuration into agent objects."""

from __future__ import annotations

import pytest

from voltui.engine.agents.command import CommandAgent
from voltui.engine.agents.llm import LLMAgent
from voltui.engine.agents.python import PythonAgent
from voltui.engine.agents.registry import AGENT_KINDS, create_agent
from voltui.engine.agents.simulated import SimulatedAgent
from voltui.engine.errors import UserError
from voltui.engine.models import AgentSpec, Step


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("command", CommandAgent),
        ("python", PythonAgent),
        ("llm", LLMAgent),
        ("simulated", SimulatedAgent),
    ],
)
def test_kinds_map_to_classes(kind: str, cls: type) -> None:
    agent = create_agent(AgentSpec.model_validate({"id": f"a-{kind}", "kind": kind}))
    assert type(agent) is cls
    assert AGENT_KINDS[kind] is cls
    assert agent.kinds == frozenset({kind})
    assert agent.id == f"a-{kind}"


def test_every_run_kind_has_an_agent() -> None:
    runs = {
        "command": {"command": ["true"]},
        "python": {"python": "m:f"},
        "llm": {"llm": {"prompt": "hi"}},
        "simulated": {"simulated": {}},
    }
    for kind, run in runs.items():
        step = Step.model_validate({"id": "s", "run": run})
        agent = create_agent(AgentSpec.model_validate({"id": "a", "kind": kind}))
        assert agent.can_run(step)
        others = [k for k in AGENT_KINDS if k != kind]
        for other in others:
            assert not create_agent(AgentSpec.model_validate({"id": "b", "kind": other})).can_run(
                step
            )


def test_dask_agents_come_from_the_cluster_not_the_agent_list() -> None:
    with pytest.raises(UserError, match=r"executor\.dask\.address"):
        create_agent(AgentSpec.model_validate({"id": "cluster", "kind": "dask"}))
    assert "dask" not in AGENT_KINDS
