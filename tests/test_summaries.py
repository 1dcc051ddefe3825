"""Event summaries shared by the CLI and the dashboard."""

from __future__ import annotations

from voltui.engine.models import Event
from voltui.summaries import summarize


def ev(type_: str, **data: object) -> Event:
    return Event(seq=1, ts=0.0, type=type_, source="t", data=data)


def test_step_summaries_read_like_sentences() -> None:
    assert summarize(
        ev("step:started", step="build", agent="shell-1", attempt=1, max_attempts=3)
    ) == ("build started on shell-1 (attempt 1/3)")
    retry = ev("step:retrying", step="s", attempt=2, max_attempts=4, delay=0.5, error="boom")
    assert summarize(retry) == "s attempt 2/4 failed, retrying in 500ms: boom"


def test_untrusted_text_is_cleaned() -> None:
    text = summarize(
        ev("step:output", step="s", stream="stdout", line="\x1b[31mred\x1b[0m\x07 [b]x[/b]")
    )
    assert "\x1b" not in text and "\x07" not in text
    assert text.endswith("red [b]x[/b]")


def test_metrics_and_cache_have_readable_summaries() -> None:
    metrics = ev(
        "metrics:system",
        process_cpu_percent=12.4,
        process_rss_bytes=50 * 2**20,
        host_cpu_percent=30,
        host_memory_percent=41,
    )
    assert summarize(metrics) == "cpu 12%  rss 50MB  host cpu 30%  mem 41%"
    cache = ev("cache:stats", namespaces=[{"namespace": "steps", "hits": 3, "misses": 1}])
    assert summarize(cache) == "steps 75% hit"
    assert summarize(ev("cache:stats", namespaces=[])) == "no cache namespaces yet"


def test_agent_operation_summaries() -> None:
    asked = Event(
        seq=1,
        ts=0.0,
        type="step:approval_requested",
        source="t",
        correlation_id="abc123",
        data={"step": "ship", "prompt": "Go \x1b]0;x\x07live?"},
    )
    assert summarize(asked) == (
        "ship awaits approval: Go live? (voltui approve abc123 ship [--reject] [--comment TEXT])"
    )
    decided = ev("step:approval_decided", step="ship", decision="rejected", by="ada", via="cli")
    assert summarize(decided) == "ship rejected by ada via cli"
    assert summarize(ev("step:waiting", step="ship", reason="awaiting approval")) == (
        "ship awaiting approval"
    )
    usage = ev(
        "step:usage",
        step="ask",
        prompt_tokens=12,
        completion_tokens=5,
        model="m",
        cost_usd=0.00012,
        priced=True,
    )
    assert summarize(usage) == "ask used 12+5 tokens of m $0.000120"
    slot = ev("step:rate_limited", step="ask", until=None, reason="max_concurrent 2 of agent a")
    assert summarize(slot) == "ask rate limited for a free slot (max_concurrent 2 of agent a)"
    fan = ev("step:map_progress", step="m", running=3, succeeded=41, failed=1, total=50)
    assert summarize(fan) == "m children: 3 running, 41 ok, 1 failed of 50"


def test_a_resumed_run_says_so() -> None:
    from voltui.engine.models import Event
    from voltui.summaries import summarize

    data = {"name": "Review", "steps_total": 5, "resumed": True}
    event = Event(seq=1, ts=0.0, type="workflow:queued", source="t", data=data)
    assert summarize(event) == "Review resumed after its engine stopped (waits for an approval)"
