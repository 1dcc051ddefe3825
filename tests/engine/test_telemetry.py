"""OpenTelemetry traces of real runs: the SDK's in-memory exporter, and a local OTLP receiver."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk.trace", reason="needs the otel extra")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

from voltui.config import OrchestratorConfig
from voltui.engine.models import AgentSpec, Workflow
from voltui.engine.orchestrator import Orchestrator
from voltui.engine.telemetry import RunTracer, otel_wanted

WAIT = 30.0

WORKFLOW = Workflow.model_validate(
    {
        "id": "traced",
        "steps": [
            {
                "id": "flaky",
                "retry": {"max_attempts": 3, "base_delay": "1ms", "jitter": 0},
                "run": {"simulated": {"duration": "2ms", "fail_attempts": 2}},
            },
            {
                "id": "memo",
                "depends_on": ["flaky"],
                "cache": {"ttl": "1h"},
                "run": {"simulated": {"duration": "1ms"}},
            },
        ],
    }
)


def config(tmp_path: Path, **extra: Any) -> OrchestratorConfig:
    return OrchestratorConfig(
        db=tmp_path / "engine.db",
        agents=[AgentSpec(id="sim", kind="simulated", capabilities=[], capacity=4)],
        **extra,
    )


async def test_a_trace_per_run_a_span_per_attempt_and_retry_events(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    tracer = RunTracer(exporter=exporter, batch=False)
    engine = Orchestrator(config(tmp_path))
    await engine.start(watch=False)
    engine.dispatcher.add_sink(tracer.sink)
    try:
        runs = []
        for _ in range(2):  # the second run's `memo` is a cache hit
            run = await engine.run_workflow(WORKFLOW)
            await asyncio.wait_for(engine.wait_run(run.id), WAIT)
            runs.append(run.id)
    finally:
        await engine.stop()
        tracer.shutdown()

    spans = exporter.get_finished_spans()
    roots = {s.attributes["voltui.run_id"]: s for s in spans if s.parent is None}
    assert sorted(roots) == sorted(runs)
    first = roots[runs[0]]
    assert first.name == "run traced"
    assert first.attributes["voltui.state"] == "succeeded"
    assert first.attributes["voltui.trigger"] == "manual"
    assert [e.name for e in first.events] == ["started"]
    children = [
        s for s in spans if s.parent is not None and s.parent.span_id == first.context.span_id
    ]
    assert all(s.context.trace_id == first.context.trace_id for s in children)
    flaky = sorted((s for s in children if s.name == "flaky"), key=lambda s: s.start_time)
    assert [s.attributes["voltui.attempt"] for s in flaky] == [1, 2, 3]
    assert [s.attributes["voltui.state"] for s in flaky] == ["retrying", "retrying", "succeeded"]
    assert all(s.attributes["voltui.agent"] == "sim" for s in flaky)
    assert [e.name for e in flaky[0].events] == ["retry"]
    assert flaky[0].events[0].attributes["next_attempt"] == 2
    assert flaky[0].status.status_code is StatusCode.ERROR
    assert not flaky[2].events
    assert all(s.start_time <= s.end_time for s in flaky)
    assert flaky[0].end_time <= flaky[1].start_time  # attempts follow each other
    (memo1,) = [s for s in children if s.name == "memo"]
    assert memo1.attributes["voltui.cache_hit"] is False
    second = roots[runs[1]]
    assert second.context.trace_id != first.context.trace_id  # one trace per run
    (memo2,) = [s for s in spans if s.name == "memo" and s.parent.span_id == second.context.span_id]
    assert memo2.attributes["voltui.cache_hit"] is True
    assert memo2.attributes["voltui.state"] == "cached"


class OtlpReceiver:
    """A tiny OTLP/HTTP collector: records the protobuf bodies POSTed to /v1/traces."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append((self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


async def test_spans_are_exported_over_otlp_http_to_the_standard_endpoint(
    tmp_path: Path, otlp: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "voltui-test")
    engine = Orchestrator(config(tmp_path))  # otel.enabled unset: on because the variable is
    await engine.start(watch=False)
    try:
        assert engine.automation.tracer is not None
        run = await engine.run_workflow(WORKFLOW)
        await asyncio.wait_for(engine.wait_run(run.id), WAIT)
    finally:
        await engine.stop()  # flushes the batch processor

    assert otlp.requests, "nothing was exported"
    names: list[str] = []
    services: set[str] = set()
    for path, content_type, body in otlp.requests:
        assert path == "/v1/traces"
        assert content_type == "application/x-protobuf"
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for attr in resource_spans.resource.attributes:
                if attr.key == "service.name":
                    services.add(attr.value.string_value)
            for scope in resource_spans.scope_spans:
                names += [span.name for span in scope.spans]
    assert services == {"voltui-test"}
    assert sorted(names) == ["flaky", "flaky", "flaky", "memo", "run traced"]


def test_otel_switches_on_with_the_endpoint_variable_or_the_config() -> None:
    assert otel_wanted(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"})
    assert otel_wanted(None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"})
    assert not otel_wanted(None, {})
    assert not otel_wanted(False, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"})
    assert otel_wanted(True, {})
