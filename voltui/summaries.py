"""One-line, human summaries of engine events, shared by the CLI and the dashboard.

Kept free of Rich and Textual so both front ends (and tests) use the same words.
"""

from __future__ import annotations

import time
from typing import Any

from voltui.engine.durations import format_duration
from voltui.engine.models import Event
from voltui.safetext import clean

SUMMARY_CHARS = 200


def _d(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    return "" if value is None else clean(value, max_len=SUMMARY_CHARS)


def summarize(event: Event) -> str:
    """What happened, in a few words; untrusted parts already cleaned."""
    d = event.data
    t = event.type
    step = _d(d, "step")
    attempt = f"{d.get('attempt', '?')}/{d.get('max_attempts', '?')}"
    if t == "step:output":
        return f"{step} {d.get('stream', '')}: {_d(d, 'line')}"
    if t == "step:started":
        return f"{step} started on {_d(d, 'agent')} (attempt {attempt})"
    if t == "step:waiting":
        return f"{step} {_d(d, 'reason') or 'waiting for an agent'}"
    if t == "step:approval_requested":
        run = clean(event.correlation_id or "RUN", max_len=40)
        return (
            f"{step} awaits approval: {_d(d, 'prompt')} "
            f"(voltui approve {run} {step} [--reject] [--comment TEXT])"
        )
    if t == "step:approval_decided":
        note = f": {_d(d, 'comment')}" if d.get("comment") else ""
        return f"{step} {_d(d, 'decision')} by {_d(d, 'by')} via {_d(d, 'via')}{note}"
    if t == "step:rate_limited":
        until = d.get("until")
        when = (
            f"until {time.strftime('%H:%M:%S', time.localtime(until))}"
            if isinstance(until, int | float)
            else "for a free slot"
        )
        return f"{step} rate limited {when} ({_d(d, 'reason')})"
    if t == "step:usage":
        cost = f" ${d.get('cost_usd', 0):.6f}" if d.get("priced", True) else " (no price)"
        return (
            f"{step} used {d.get('prompt_tokens', 0)}+{d.get('completion_tokens', 0)} tokens "
            f"of {_d(d, 'model')}{cost}"
        )
    if t == "step:map_progress":
        return (
            f"{step} children: {d.get('running', 0)} running, {d.get('succeeded', 0)} ok, "
            f"{d.get('failed', 0)} failed of {d.get('total', '?')}"
        )
    if t == "step:succeeded":
        if d.get("reused_from"):
            return f"{step} reused from run {_d(d, 'reused_from')}"
        took = format_duration(d.get("duration"))
        return f"{step} succeeded in {took} on {_d(d, 'agent')}"
    if t == "step:cached":
        return f"{step} served from cache"
    if t == "step:retrying":
        delay = format_duration(d.get("delay"))
        return f"{step} attempt {attempt} failed, retrying in {delay}: {_d(d, 'error')}"
    if t == "step:failed":
        return f"{step} failed (attempt {attempt}): {_d(d, 'error')}"
    if t in ("step:skipped", "step:cancelled"):
        return f"{step} {t.split(':')[1]}: {_d(d, 'reason')}"
    if t == "workflow:queued":
        if d.get("resumed"):
            return f"{_d(d, 'name')} resumed after its engine stopped (waits for an approval)"
        return f"{_d(d, 'name')} queued ({d.get('steps_total', '?')} steps)"
    if t == "workflow:started":
        return f"{_d(d, 'name')} started"
    if t == "workflow:waiting":
        n = d.get("approvals")
        return f"{_d(d, 'workflow_id')} waits for a person: {n} approval(s), nothing else at work"
    if t == "workflow:running":
        return f"{_d(d, 'workflow_id')} at work again"
    if t == "workflow:progress":
        return f"{d.get('done', '?')}/{d.get('total', '?')} steps done"
    if t.startswith("workflow:"):
        tail = f": {_d(d, 'error')}" if d.get("error") else ""
        took = f" after {format_duration(d['duration'])}" if d.get("duration") else ""
        return f"{_d(d, 'name') or 'run'} {t.split(':')[1]}{took}{tail}"
    if t == "health:changed":
        return f"{_d(d, 'name') or _d(d, 'component')} {_d(d, 'previous')} -> {_d(d, 'status')}"
    if t == "health:checked":
        latency = d.get("latency")
        took = f" in {format_duration(latency)}" if isinstance(latency, int | float) else ""
        message = f": {_d(d, 'message')}" if d.get("message") else ""
        return f"{_d(d, 'name') or _d(d, 'component')} {_d(d, 'status')}{took}{message}"
    if t == "health:system":
        return f"system {_d(d, 'previous')} -> {_d(d, 'status')}"
    if t == "agent:load":
        return f"{_d(d, 'id')} {d.get('active', 0)}/{d.get('capacity', 0)} active"
    if t in ("agent:registered", "agent:unregistered"):
        return f"{_d(d, 'agent')} {t.split(':')[1]}"
    if t == "metrics:system":
        rss = (d.get("process_rss_bytes") or 0) / 2**20
        host_mem = d.get("host_memory_percent", 0)
        return (
            f"cpu {d.get('process_cpu_percent', 0):.0f}%  rss {rss:.0f}MB  "
            f"host cpu {d.get('host_cpu_percent', 0):.0f}%  mem {host_mem:.0f}%"
        )
    if t == "cache:stats":
        parts = []
        for ns in d.get("namespaces") or []:
            total = (ns.get("hits") or 0) + (ns.get("misses") or 0)
            rate = f"{100 * (ns.get('hits') or 0) / total:.0f}%" if total else "-"
            parts.append(f"{clean(ns.get('namespace', '?'), max_len=30)} {rate} hit")
        return ", ".join(parts) or "no cache namespaces yet"
    if t in ("engine:started", "engine:stopped"):
        return f"engine {t.split(':')[1]}"
    if t == "dispatcher:handler_error":
        return f"handler {_d(d, 'handler')} failed on {_d(d, 'event_type')}: {_d(d, 'error')}"
    parts = [f"{k}={clean(v, max_len=40)}" for k, v in list(d.items())[:4]]
    return " ".join(parts)
