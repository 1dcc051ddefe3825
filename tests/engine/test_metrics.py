"""Prometheus metrics: scrape a real engine's /metrics after real runs and parse what it says."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from voltui.config import OrchestratorConfig
from voltui.engine.errors import UserError
from voltui.engine.metrics import EngineMetrics, parse_address
from voltui.engine.models import AgentSpec, Event, Workflow
from voltui.engine.orchestrator import Orchestrator

WAIT = 30.0


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(name, sorted labels): value}, parsed by prometheus_client's parser."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


WORKFLOW = Workflow.model_validate(
    {
        "id": "metered",
        "steps": [
            {
                "id": "flaky",
                "retry": {"max_attempts": 2, "base_delay": "1ms", "jitter": 0},
                "run": {"simulated": {"duration": "5ms", "fail_attempts": 1}},
            },
            {
                "id": "cached",
                "depends_on": ["flaky"],
                "cache": {"ttl": "1h", "namespace": "results"},
                "run": {"simulated": {"duration": "1ms", "output": {"n": 1}}},
            },
        ],
    }
)


async def test_metrics_endpoint_after_runs(tmp_path: Path) -> None:
    engine = Orchestrator(
        OrchestratorConfig(
            db=tmp_path / "engine.db",
            agents=[AgentSpec(id="sim", kind="simulated", capabilities=[], capacity=3)],
            metrics={"address": "127.0.0.1:0"},
            metrics_collection_interval=0.05,
        )
    )
    await engine.start()
    try:
        address = engine.automation.metrics_address
        assert address is not None and not address.endswith(":0")
        for _ in range(2):  # the second run's `cached` step is a cache hit
            run = await engine.run_workflow(WORKFLOW)
            await asyncio.wait_for(engine.wait_run(run.id), WAIT)
        async with asyncio.timeout(WAIT):  # cache:stats is reported on the metrics interval
            while True:
                samples = await asyncio.to_thread(scrape, address)
                if samples.get(("voltui_cache_hits_total", (("namespace", "results"),))):
                    break
                await asyncio.sleep(0.05)
    finally:
        await engine.stop()

    assert value(samples, "voltui_runs_started_total", workflow="metered", trigger="manual") == 2
    assert value(samples, "voltui_runs_finished_total", workflow="metered", state="succeeded") == 2
    assert value(samples, "voltui_run_queue_wait_seconds_count", workflow="metered") == 2
    step = {"workflow": "metered", "step": "flaky", "agent": "sim"}
    assert value(samples, "voltui_step_duration_seconds_count", **step, state="succeeded") == 2
    assert value(samples, "voltui_step_duration_seconds_count", **step, state="retrying") == 2
    assert value(samples, "voltui_step_retries_total", workflow="metered", step="flaky") == 2
    assert value(samples, "voltui_steps_cached_total", workflow="metered", step="cached") == 1
    assert (
        value(samples, "voltui_step_queue_wait_seconds_count", workflow="metered", step="flaky")
        == 4
    )
    assert value(samples, "voltui_agent_capacity", agent="sim") == 3
    assert value(samples, "voltui_agent_active", agent="sim") == 0
    assert value(samples, "voltui_cache_hits_total", namespace="results") == 1
    assert value(samples, "voltui_cache_misses_total", namespace="results") >= 1
    assert value(samples, "voltui_events_total", type="step:started") == 5
    health = {
        labels: v for (name, labels), v in samples.items() if name == "voltui_component_health"
    }
    assert any(("component", "store") in labels for labels in health)


def test_each_engine_has_its_own_registry() -> None:
    a, b = EngineMetrics(), EngineMetrics()  # the global registry would raise "duplicated"
    a.sink(Event(seq=1, ts=0, type="x:y", source="t"))
    assert a.registry.get_sample_value("voltui_events_total", {"type": "x:y"}) == 1
    assert b.registry.get_sample_value("voltui_events_total", {"type": "x:y"}) is None


def test_step_usage_events_count_llm_tokens_and_cost() -> None:
    m = EngineMetrics()
    m.sink(
        Event(
            seq=1,
            ts=0,
            type="workflow:queued",
            source="t",
            correlation_id="r",
            data={"workflow_id": "agent"},
        )
    )
    m.sink(
        Event(
            seq=2,
            ts=1,
            type="step:usage",
            source="t",
            correlation_id="r",
            data={"model": "m1", "prompt_tokens": 120, "completion_tokens": 30, "cost_usd": 0.002},
        )
    )
    labels = {"workflow": "agent", "model": "m1"}
    assert (
        m.registry.get_sample_value("voltui_llm_tokens_total", {**labels, "kind": "prompt"}) == 120
    )
    assert m.registry.get_sample_value("voltui_llm_cost_usd_total", labels) == 0.002


def test_addresses() -> None:
    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_address("[::1]:9464") == ("::1", 9464)
    assert parse_address(":9464") == ("127.0.0.1", 9464)
    with pytest.raises(ValueError, match="not HOST:PORT"):
        parse_address("localhost")


async def test_a_busy_metrics_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        engine = Orchestrator(
            OrchestratorConfig(db=tmp_path / "e.db", metrics={"address": f"127.0.0.1:{port}"})
        )
        with pytest.raises(UserError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            await engine.start()
        assert not engine.running
