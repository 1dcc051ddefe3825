"""Prometheus metrics of the engine, built from its events.

`EngineMetrics` is a dispatcher sink: every event updates a few counters, gauges or histograms in
O(1) (a dict lookup by type, a label lookup), so metrics cost the same per event however long
the engine runs. It keeps its own `CollectorRegistry` rather than prometheus-client's global one,
so two engines in one process (tests, embedding programs) never share or clash over series.

`voltui serve --metrics 127.0.0.1:9464` serves the registry at `/metrics` through
prometheus-client's own HTTP server (a thread; scraping never touches the event loop).

Series (all prefixed `voltui_`): runs started/finished by workflow, trigger and state; run and
step queue wait; step attempt duration by workflow/step/agent/state; retries; agent active and
capacity; cache hits/misses/evictions/entries by namespace; events by type (rate() of it is
events/s); health per component; schedule fires and misses; notifications by rule and outcome;
LLM tokens and cost from `step:usage` events.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from voltui.engine.models import AgentLoad, ComponentStatus, Event, HealthStatus

__all__ = ["EngineMetrics", "MetricsServer", "parse_address"]

log = logging.getLogger(__name__)

_HEALTH_STATES = [s.value for s in HealthStatus]
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_UNKNOWN = "unknown"
_MAX_TRACKED = 100_000
"""Open per-run/per-step bookkeeping entries kept before the oldest are dropped (a bound for
runs whose end this engine never sees, e.g. owned by another process)."""


class _CacheCollector(Collector):
    """Cache figures are cumulative counts from `cache:stats`; exposed as counters at scrape."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[str, Any]] = {}

    def collect(self) -> Iterable[Any]:
        hits = CounterMetricFamily("voltui_cache_hits", "Cache hits", labels=["namespace"])
        misses = CounterMetricFamily("voltui_cache_misses", "Cache misses", labels=["namespace"])
        evictions = CounterMetricFamily(
            "voltui_cache_evictions", "Cache evictions", labels=["namespace"]
        )
        entries = GaugeMetricFamily(
            "voltui_cache_entries", "Entries in the cache", labels=["namespace"]
        )
        for ns, st in sorted(self.latest.items()):
            hits.add_metric([ns], float(st.get("hits") or 0))
            misses.add_metric([ns], float(st.get("misses") or 0))
            evictions.add_metric([ns], float(st.get("evictions") or 0))
            entries.add_metric([ns], float(st.get("size") or 0))
        return [hits, misses, evictions, entries]


class EngineMetrics:
    """Prometheus series fed by engine events; see the module docstring."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs_started = Counter(
            "voltui_runs_started", "Runs that started", ["workflow", "trigger"], registry=r
        )
        self.runs_finished = Counter(
            "voltui_runs_finished",
            "Runs that ended, by final state",
            ["workflow", "state"],
            registry=r,
        )
        self.run_queue_wait = Histogram(
            "voltui_run_queue_wait_seconds",
            "Time a run waited queued before it started",
            ["workflow"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.step_duration = Histogram(
            "voltui_step_duration_seconds",
            "Duration of step attempts",
            ["workflow", "step", "agent", "state"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.step_queue_wait = Histogram(
            "voltui_step_queue_wait_seconds",
            "Time a ready step waited for an agent",
            ["workflow", "step"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.step_retries = Counter(
            "voltui_step_retries",
            "Step attempts that failed and were retried",
            ["workflow", "step"],
            registry=r,
        )
        self.steps_cached = Counter(
            "voltui_steps_cached",
            "Steps answered from the cache",
            ["workflow", "step"],
            registry=r,
        )
        self.agent_active = Gauge(
            "voltui_agent_active", "Steps an agent is running", ["agent"], registry=r
        )
        self.agent_capacity = Gauge(
            "voltui_agent_capacity", "Steps an agent can run at once", ["agent"], registry=r
        )
        self.events = Counter("voltui_events", "Engine events, by type", ["type"], registry=r)
        self.health = Enum(
            "voltui_component_health",
            "Health of each watched component",
            ["component"],
            states=_HEALTH_STATES,
            registry=r,
        )
        self.engine_health = Enum(
            "voltui_health", "Aggregate engine health", states=_HEALTH_STATES, registry=r
        )
        self.schedule_fires = Counter(
            "voltui_schedule_fires", "Runs started by schedules", ["schedule"], registry=r
        )
        self.schedule_missed = Counter(
            "voltui_schedule_missed",
            "Schedule instants not fired (catch-up policy)",
            ["schedule"],
            registry=r,
        )
        self.trigger_fires = Counter(
            "voltui_trigger_fires", "Runs started by file triggers", ["trigger"], registry=r
        )
        self.notifications = Counter(
            "voltui_notifications",
            "Notification deliveries by outcome",
            ["rule", "outcome"],
            registry=r,
        )
        self.llm_tokens = Counter(
            "voltui_llm_tokens", "LLM tokens used", ["workflow", "model", "kind"], registry=r
        )
        self.llm_cost = Counter(
            "voltui_llm_cost_usd", "LLM cost in US dollars", ["workflow", "model"], registry=r
        )
        self._cache = _CacheCollector()
        r.register(self._cache)
        self._runs: dict[str, tuple[str, float, str]] = {}  # run -> (workflow, queued, trigger)
        self._waiting: dict[tuple[str, str], float] = {}  # (run, step) -> waiting since
        self._running: dict[tuple[str, str], float] = {}  # (run, step) -> attempt started
        self._event_counters: dict[str, Any] = {}  # event type -> its labelled child
        self._handlers: dict[str, Callable[[Event], None]] = {
            "workflow:queued": self._queued,
            "workflow:started": self._started,
            "step:waiting": self._step_waiting,
            "step:started": self._step_started,
            "step:succeeded": self._step_done,
            "step:failed": self._step_done,
            "step:retrying": self._step_retrying,
            "step:cancelled": self._step_done,
            "step:cached": self._step_cached,
            "agent:load": self._agent_load,
            "agent:registered": self._agent_load,
            "cache:stats": self._cache_stats,
            "health:changed": self._health_changed,
            "health:system": self._health_system,
            "schedule:fired": self._schedule_fired,
            "schedule:missed": self._schedule_missed,
            "trigger:fired": self._trigger_fired,
            "notify:sent": self._notify,
            "notify:failed": self._notify,
            "step:usage": self._llm_usage,
        }
        for state in ("succeeded", "failed", "cancelled", "interrupted", "timed_out"):
            self._handlers[f"workflow:{state}"] = self._finished

    # ------------------------------------------------------------------ feeding

    def sink(self, event: Event) -> None:
        """Dispatcher sink: one counter increment, plus the event type's own handler."""
        counter = self._event_counters.get(event.type)
        if counter is None:
            counter = self._event_counters[event.type] = self.events.labels(event.type)
        counter.inc()
        handler = self._handlers.get(event.type)
        if handler is not None:
            try:
                handler(event)
            except Exception:  # odd event data must not break emit for everyone else
                log.debug("metrics could not use %s #%d", event.type, event.seq, exc_info=True)

    def seed(self, agents: list[AgentLoad], components: list[ComponentStatus]) -> None:
        """Figures already known when metrics start (no event will repeat them)."""
        for load in agents:
            self.agent_active.labels(load.id).set(load.active)
            self.agent_capacity.labels(load.id).set(load.capacity)
        for comp in components:
            self.health.labels(comp.id).state(comp.status.value)

    def _workflow(self, event: Event) -> str:
        found = self._runs.get(event.correlation_id or "")
        return found[0] if found else str(event.data.get("workflow_id") or _UNKNOWN)

    def _bound(self, table: dict[Any, Any]) -> None:
        if len(table) > _MAX_TRACKED:
            for key in list(table)[: len(table) // 10]:
                del table[key]

    def _queued(self, event: Event) -> None:
        cid = event.correlation_id
        if cid and cid not in self._runs:
            d = event.data
            self._runs[cid] = (
                str(d.get("workflow_id") or _UNKNOWN),
                event.ts,
                str(d.get("trigger") or "manual"),
            )
            self._bound(self._runs)

    def _started(self, event: Event) -> None:
        cid = event.correlation_id or ""
        found = self._runs.get(cid)
        workflow = found[0] if found else str(event.data.get("workflow_id") or _UNKNOWN)
        trigger = found[2] if found else "manual"
        self.runs_started.labels(workflow, trigger).inc()
        if found:
            self.run_queue_wait.labels(workflow).observe(max(0.0, event.ts - found[1]))

    def _finished(self, event: Event) -> None:
        cid = event.correlation_id or ""
        found = self._runs.pop(cid, None)
        workflow = found[0] if found else str(event.data.get("workflow_id") or _UNKNOWN)
        state = str(event.data.get("state") or event.type.split(":", 1)[1])
        self.runs_finished.labels(workflow, state).inc()

    def _step_waiting(self, event: Event) -> None:
        key = (event.correlation_id or "", str(event.data.get("step")))
        self._waiting[key] = event.ts
        self._bound(self._waiting)

    def _step_started(self, event: Event) -> None:
        key = (event.correlation_id or "", str(event.data.get("step")))
        self._running[key] = event.ts
        self._bound(self._running)
        since = self._waiting.pop(key, None)
        wait = event.data.get("queue_wait")  # the engine's own figure (StepRun.queue_wait)
        if not isinstance(wait, int | float) and since is not None:
            wait = event.ts - since
        if isinstance(wait, int | float):
            self.step_queue_wait.labels(self._workflow(event), key[1]).observe(max(0.0, wait))

    def _step_done(self, event: Event) -> None:
        """An attempt ended: its measured duration, else the time since its `step:started`
        (events without an attempt, like a skip, have neither and are not counted)."""
        d = event.data
        began = self._running.pop((event.correlation_id or "", str(d.get("step"))), None)
        duration = d.get("duration")
        if not isinstance(duration, int | float) and began is not None:
            duration = max(0.0, event.ts - began)
        if isinstance(duration, int | float):
            self.step_duration.labels(
                self._workflow(event),
                str(d.get("step")),
                str(d.get("agent") or _UNKNOWN),
                str(d.get("state") or event.type.split(":", 1)[1]),
            ).observe(float(duration))

    def _step_retrying(self, event: Event) -> None:
        self.step_retries.labels(self._workflow(event), str(event.data.get("step"))).inc()
        self._step_done(event)

    def _step_cached(self, event: Event) -> None:
        self.steps_cached.labels(self._workflow(event), str(event.data.get("step"))).inc()

    def _agent_load(self, event: Event) -> None:
        d = event.data
        agent = d.get("id") or d.get("agent")
        if not agent:
            return
        if "active" in d:
            self.agent_active.labels(str(agent)).set(float(d["active"]))
        if "capacity" in d:
            self.agent_capacity.labels(str(agent)).set(float(d["capacity"]))

    def _cache_stats(self, event: Event) -> None:
        for st in event.data.get("namespaces") or []:
            if isinstance(st, dict) and st.get("namespace"):
                self._cache.latest[str(st["namespace"])] = st

    def _health_changed(self, event: Event) -> None:
        status = str(event.data.get("status"))
        if event.data.get("component") and status in _HEALTH_STATES:
            self.health.labels(str(event.data["component"])).state(status)

    def _health_system(self, event: Event) -> None:
        status = str(event.data.get("status"))
        if status in _HEALTH_STATES:
            self.engine_health.state(status)

    def _schedule_fired(self, event: Event) -> None:
        self.schedule_fires.labels(str(event.data.get("schedule"))).inc()

    def _schedule_missed(self, event: Event) -> None:
        self.schedule_missed.labels(str(event.data.get("schedule"))).inc(
            float(event.data.get("count") or 0)
        )

    def _trigger_fired(self, event: Event) -> None:
        self.trigger_fires.labels(str(event.data.get("trigger"))).inc()

    def _notify(self, event: Event) -> None:
        outcome = "sent" if event.type == "notify:sent" else "failed"
        self.notifications.labels(str(event.data.get("rule")), outcome).inc()

    def _llm_usage(self, event: Event) -> None:
        d = event.data
        workflow = self._workflow(event)
        model = str(d.get("model") or _UNKNOWN)
        for kind in ("prompt", "completion"):
            value = d.get(f"{kind}_tokens")
            if isinstance(value, int | float) and value > 0:
                self.llm_tokens.labels(workflow, model, kind).inc(float(value))
        cost = d.get("cost_usd")
        if isinstance(cost, int | float) and cost > 0:
            self.llm_cost.labels(workflow, model).inc(float(cost))


def parse_address(text: str) -> tuple[str, int]:
    """`127.0.0.1:9464` -> ("127.0.0.1", 9464); `[::1]:9464` for IPv6; `:9464` means localhost;
    port 0 picks a free port (tests)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT (like 127.0.0.1:9464)")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class MetricsServer:
    """prometheus-client's HTTP server for one registry, started and stopped with the engine."""

    def __init__(self, registry: CollectorRegistry, address: str) -> None:
        self._registry = registry
        self.host, self.port = parse_address(address)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from prometheus_client import start_http_server

        try:
            self._server, self._thread = start_http_server(
                self.port, addr=self.host, registry=self._registry
            )
        except OSError as exc:
            from voltui.engine.errors import UserError

            raise UserError(
                f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}; "
                "choose another --metrics address"
            ) from None
        self.port = int(self._server.server_address[1])  # the real one when asked for port 0

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
