"""OpenTelemetry traces of runs, built from engine events (optional extra `voltui[otel]`).

One trace per run, keyed by the run id (the events' correlation id): a root span from
`workflow:queued` to the run's final event, and one child span per step attempt from
`step:started` to that attempt's end, with the attributes an operator filters on (workflow,
step, agent, attempt, state, cache hit). A retry is a span event on the attempt that failed; a
cached or reused step is a zero-length span. Span times are the events' own timestamps, so a
trace shows when things happened, not when the sink got round to them.

The tracer provider is this engine's own (never the global one), so an embedding program's
tracing is left alone. Export goes over OTLP/HTTP to `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), with the standard `OTEL_*` variables for headers,
timeouts, the service name and resource attributes, all read by the OpenTelemetry SDK itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from voltui.engine.errors import UserError
from voltui.engine.models import Event

__all__ = ["OTEL_MISSING", "RunTracer", "otel_available", "otel_wanted"]

OTEL_MISSING = (
    "OpenTelemetry export is switched on (otel.enabled, or OTEL_EXPORTER_OTLP_ENDPOINT is set) "
    "but the OpenTelemetry SDK is not installed; install it with: pip install 'voltui[otel]'"
)
_FINAL = {
    "workflow:succeeded": "succeeded",
    "workflow:failed": "failed",
    "workflow:cancelled": "cancelled",
    "workflow:interrupted": "interrupted",
    "workflow:timed_out": "timed_out",
}
_STEP_END = frozenset(
    {"step:succeeded", "step:failed", "step:retrying", "step:cancelled", "step:cached"}
)
_ERROR_STATES = frozenset({"failed", "timed_out", "interrupted"})


def otel_wanted(enabled: bool | None, environ: dict[str, str] | None = None) -> bool:
    """On when configured so, or (unset) when an OTLP endpoint variable is set."""
    if enabled is not None:
        return enabled
    env = os.environ if environ is None else environ
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def otel_available() -> bool:
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


def _ns(ts: float) -> int:
    return int(ts * 1_000_000_000)


@dataclass
class _RunTrace:
    span: Any
    workflow: str
    steps: dict[str, Any] = field(default_factory=dict)  # step id -> open attempt span


class RunTracer:
    """A dispatcher sink that turns run events into spans; see the module docstring."""

    def __init__(
        self,
        *,
        exporter: Any = None,
        service_name: str = "voltui",
        batch: bool = True,
    ) -> None:
        """`exporter` defaults to OTLP over HTTP configured by the `OTEL_*` variables; tests
        pass the SDK's InMemorySpanExporter with `batch=False` to see spans at once."""
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        except ImportError:
            raise UserError(OTEL_MISSING) from None
        if exporter is None:
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )
            except ImportError:
                raise UserError(OTEL_MISSING) from None
            exporter = OTLPSpanExporter()
        from opentelemetry import trace

        self._trace_api = trace
        service = os.environ.get("OTEL_SERVICE_NAME") or service_name
        self._provider = TracerProvider(resource=Resource.create({"service.name": service}))
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self._provider.add_span_processor(processor)
        self._tracer = self._provider.get_tracer("voltui.engine")
        self._runs: dict[str, _RunTrace] = {}

    # ------------------------------------------------------------------ events

    def sink(self, event: Event) -> None:
        etype = event.type
        cid = event.correlation_id
        if not cid or not (etype.startswith("workflow:") or etype.startswith("step:")):
            return
        if etype == "workflow:queued":
            if cid not in self._runs:
                self._open_run(event)
            return
        run = self._runs.get(cid) or self._open_run(event)
        if etype == "workflow:started":
            run.span.add_event("started", timestamp=_ns(event.ts))
        elif etype in _FINAL:
            self._close_run(cid, run, event, _FINAL[etype])
        elif etype == "step:started":
            self._open_step(run, event)
        elif etype in _STEP_END:
            self._close_step(run, event)

    def _open_run(self, event: Event) -> _RunTrace:
        d = event.data
        workflow = str(d.get("workflow_id") or "unknown")
        attributes = {
            "voltui.run_id": event.correlation_id or "",
            "voltui.workflow": workflow,
            "voltui.trigger": str(d.get("trigger") or "manual"),
        }
        if d.get("replay_of"):
            attributes["voltui.replay_of"] = str(d["replay_of"])
        span = self._tracer.start_span(
            f"run {workflow}", start_time=_ns(event.ts), attributes=attributes
        )
        run = _RunTrace(span=span, workflow=workflow)
        self._runs[event.correlation_id or ""] = run
        return run

    def _close_run(self, cid: str, run: _RunTrace, event: Event, state: str) -> None:
        for step_span in run.steps.values():  # attempts cut short by the run's end
            step_span.set_attribute("voltui.state", "cancelled")
            step_span.end(end_time=_ns(event.ts))
        run.steps.clear()
        run.span.set_attribute("voltui.state", state)
        error = event.data.get("error")
        if state in _ERROR_STATES:
            run.span.set_status(self._status(True, str(error or state)))
        run.span.end(end_time=_ns(event.ts))
        del self._runs[cid]

    def _open_step(self, run: _RunTrace, event: Event) -> None:
        d = event.data
        step = str(d.get("step"))
        old = run.steps.pop(step, None)
        if old is not None:
            old.end(end_time=_ns(event.ts))
        run.steps[step] = self._tracer.start_span(
            step,
            context=self._trace_api.set_span_in_context(run.span),
            start_time=_ns(event.ts),
            attributes={
                "voltui.run_id": event.correlation_id or "",
                "voltui.workflow": run.workflow,
                "voltui.step": step,
                "voltui.agent": str(d.get("agent") or ""),
                "voltui.attempt": int(d.get("attempt") or 1),
                "voltui.cache_hit": False,
            },
        )

    def _close_step(self, run: _RunTrace, event: Event) -> None:
        d = event.data
        step = str(d.get("step"))
        span = run.steps.pop(step, None)
        when = _ns(event.ts)
        if span is None:  # cached or reused: no attempt ran, record an instant
            span = self._tracer.start_span(
                step,
                context=self._trace_api.set_span_in_context(run.span),
                start_time=when,
                attributes={
                    "voltui.run_id": event.correlation_id or "",
                    "voltui.workflow": run.workflow,
                    "voltui.step": step,
                    "voltui.agent": str(d.get("agent") or ""),
                    "voltui.attempt": int(d.get("attempt") or 0),
                    "voltui.cache_hit": event.type == "step:cached",
                },
            )
            if d.get("reused_from"):
                span.set_attribute("voltui.reused_from", str(d["reused_from"]))
        state = str(d.get("state") or event.type.split(":", 1)[1])
        span.set_attribute("voltui.state", state)
        if event.type == "step:retrying":
            span.add_event(
                "retry",
                attributes={
                    "error": str(d.get("error") or ""),
                    "delay": float(d.get("delay") or 0.0),
                    "next_attempt": int(d.get("next_attempt") or 0),
                },
                timestamp=when,
            )
        if event.type in ("step:failed", "step:retrying"):
            span.set_status(self._status(True, str(d.get("error") or state)))
        span.end(end_time=when)

    def _status(self, error: bool, description: str) -> Any:
        from opentelemetry.trace import Status, StatusCode

        return Status(StatusCode.ERROR if error else StatusCode.UNSET, description[:500])

    # ------------------------------------------------------------------ lifecycle

    def shutdown(self) -> None:
        """End spans still open (as interrupted) and flush everything to the exporter."""
        for run in list(self._runs.values()):
            for span in run.steps.values():
                span.end()
            run.span.set_attribute("voltui.state", "interrupted")
            run.span.end()
        self._runs.clear()
        self._provider.shutdown()
