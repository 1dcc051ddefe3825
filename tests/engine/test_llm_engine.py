"""LLM steps through the real engine and a real (fake) OpenAI-compatible server: live streamed
log, Retry-After, rate limits, and token/cost totals per step, run and agent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.fake_openai import FakeOpenAI, Reply
from voltui.config import OrchestratorConfig
from voltui.engine.models import AgentSpec, RunState, StepState, Usage, Workflow
from voltui.engine.orchestrator import Orchestrator

PRICES = {"tiny": {"input_per_1m": 3.0, "output_per_1m": 15.0}}


def llm_step(step_id: str, prompt: str = "say something", **extra: Any) -> dict[str, Any]:
    llm = {"prompt": prompt, **extra.pop("llm", {})}
    return {"id": step_id, "requires": ["llm"], "run": {"llm": llm}, **extra}


def workflow(steps: list[dict[str, Any]], **extra: Any) -> Workflow:
    return Workflow.model_validate({"id": "llm-test", "steps": steps, **extra})


async def make_engine(
    tmp_path: Path, fake: FakeOpenAI, agents: list[AgentSpec] | None = None, **config: Any
) -> Orchestrator:
    cfg = OrchestratorConfig(
        db=tmp_path / "engine.db",
        agents=agents or [AgentSpec(id="llm-a", kind="llm", capabilities=["llm"], capacity=20)],
        llm_base_url=fake.base_url,
        llm_model="tiny",
        llm={"prices": PRICES, **config.pop("llm", {})},
        **config,
    )
    engine = Orchestrator(cfg)
    await engine.start(watch=False)
    return engine


@pytest.fixture
async def engine(tmp_path: Path, fake_openai: FakeOpenAI) -> AsyncIterator[Orchestrator]:
    orch = await make_engine(tmp_path, fake_openai)
    try:
        yield orch
    finally:
        await orch.stop()


async def test_streamed_tokens_reach_the_step_log_before_the_step_ends(
    engine: Orchestrator, fake_openai: FakeOpenAI
) -> None:
    pieces = ["first line\n", "second line\n", "third line"]
    fake_openai.then(Reply(text="".join(pieces), chunks=pieces, chunk_delay=0.3))
    run = await engine.run_workflow(workflow([llm_step("talk", llm={"stream": True})]))
    seen_while_running: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        detail = await engine.get_run(run.id)
        state = detail.steps[0].state
        lines = [entry.line for entry in await engine.step_log(run.id, "talk")]
        if state is StepState.RUNNING and lines:
            seen_while_running = lines
            break
        assert not state.finished, "the step ended before any of its answer reached the log"
        await asyncio.sleep(0.02)
    assert seen_while_running[:1] == ["first line"]
    final = await asyncio.wait_for(engine.wait_run(run.id), 30)
    assert final.state is RunState.SUCCEEDED
    lines = [entry.line for entry in await engine.step_log(run.id, "talk")]
    assert lines == ["first line", "second line", "third line"]


async def test_retry_after_delays_the_retry(engine: Orchestrator, fake_openai: FakeOpenAI) -> None:
    fake_openai.then(
        Reply(status=429, error="rate limited", headers={"Retry-After": "1"}),
        Reply(text="fine now"),
    )
    step = llm_step("ask", retry={"max_attempts": 3, "base_delay": "10ms", "jitter": 0})
    run = await engine.run_workflow(workflow([step]))
    final = await asyncio.wait_for(engine.wait_run(run.id), 30)
    assert final.state is RunState.SUCCEEDED
    first, second = fake_openai.requests
    assert second.mono - first.mono >= 1.0  # the retry waited for Retry-After, not 10 ms
    events = engine.dispatcher.correlated(run.id)
    types = [e.type for e in events]
    assert "step:retrying" in types
    limited = [e for e in events if e.type == "step:rate_limited"]
    assert limited and all(e.data["until"] >= first.at + 0.9 for e in limited)
    assert limited[0].data["reason"] == "HTTP 429 Retry-After of provider default"


async def test_twenty_steps_through_1200_rpm_with_burst_1(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    engine = await make_engine(
        tmp_path, fake_openai, llm={"limits": {"requests_per_minute": 1200, "burst": 1}}
    )
    try:
        wf = workflow([llm_step(f"s{i}") for i in range(20)], max_parallel=20)
        started = time.monotonic()
        run = await engine.run_workflow(wf)
        final = await asyncio.wait_for(engine.wait_run(run.id), 60)
    finally:
        await engine.stop()
    assert final.state is RunState.SUCCEEDED
    assert len(fake_openai.requests) == 20
    assert max(r.mono for r in fake_openai.requests) - started >= 0.95
    limited = [e for e in engine.dispatcher.correlated(run.id) if e.type == "step:rate_limited"]
    assert len(limited) >= 18  # all but the first (or two) waited, and said until when
    assert all(e.data["reason"] == "requests_per_minute of provider default" for e in limited)


def same(a: Usage | None, b: Usage | None) -> bool:
    """Equal counts and (up to float rounding, which depends on the order of sums) cost."""
    assert a is not None and b is not None
    return a.model_copy(update={"cost_usd": 0}) == b.model_copy(
        update={"cost_usd": 0}
    ) and a.cost_usd == pytest.approx(b.cost_usd)


def _sum(usages: list[Usage | None]) -> Usage:
    total = Usage()
    for usage in usages:
        if usage is not None:
            total = total.plus(usage)
    return total


async def test_token_and_cost_totals_add_up(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    agents = [
        AgentSpec(id="llm-a", kind="llm", capabilities=["llm", "a"]),
        AgentSpec(id="llm-b", kind="llm", capabilities=["llm", "b"]),
    ]
    engine = await make_engine(tmp_path, fake_openai, agents)
    schema = {"type": "object", "required": ["ok"]}
    # The first answer of `judge` misses the schema: that attempt was paid for and counts too.
    # Decided by what is asked, not by arrival order: `judge` and `plan` run in parallel, so a
    # queued "next reply" could go to either (a race this test once lost 1 time in 15).
    judged = [0]

    def answer(body: dict) -> Reply:
        if "judge" not in str(body["messages"]):
            return Reply(text="one two three")
        judged[0] += 1
        return Reply(text='{"nope": 1}' if judged[0] == 1 else '{"ok": true}')

    fake_openai.answer = answer
    wf = workflow(
        [
            llm_step(
                "judge",
                "judge this",
                requires=["b"],
                llm={"output_schema": schema},
                retry={"max_attempts": 2, "base_delay": "10ms"},
            ),
            llm_step("plan", "plan the work now", requires=["a"]),
            llm_step("write", "write it", requires=["b"], depends_on=["plan"]),
        ]
    )
    try:
        runs = []
        for _ in range(2):
            run = await engine.run_workflow(wf)
            final = await asyncio.wait_for(engine.wait_run(run.id), 30)
            assert final.state is RunState.SUCCEEDED, final.error
            runs.append(await engine.get_run(run.id))
        snapshot = await engine.snapshot()
    finally:
        await engine.stop()

    judge = runs[0].steps[0]
    assert judge.attempt == 2 and judge.usage is not None and judge.usage.calls == 2
    for detail in runs:
        steps_total = _sum([s.usage for s in detail.steps])
        assert same(detail.run.usage, steps_total)
        assert steps_total.calls == len(detail.steps) + (1 if detail is runs[0] else 0)
    grand = _sum([d.run.usage for d in runs])
    totals = snapshot.usage
    assert same(totals.total, grand)
    assert same(_sum(list(totals.by_agent.values())), grand)
    assert set(totals.by_agent) == {"llm-a", "llm-b"}
    assert totals.by_agent["llm-a"].calls == 2  # `plan`, once per run
    assert same(totals.by_model["tiny"], grand)
    expected_cost = (grand.prompt_tokens * 3.0 + grand.completion_tokens * 15.0) / 1e6
    assert grand.cost_usd == pytest.approx(expected_cost)
    assert grand.priced and grand.prompt_tokens > 0 and grand.completion_tokens > 0

    # The totals are durable: a new engine on the same file reads them back from SQLite.
    again = Orchestrator(OrchestratorConfig(db=tmp_path / "engine.db", agents=[]))
    await again.start(watch=False)
    try:
        stored = await again.get_run(runs[1].run.id)
        # `voltui usage`: the same totals per agent and per model, summed from the store.
        report = await again.usage()
        recent = await again.usage(since=runs[1].run.created_at)
    finally:
        await again.stop()
    assert stored.run.usage == runs[1].run.usage
    assert [s.usage for s in stored.steps] == [s.usage for s in runs[1].steps]
    assert report.runs == 2 and same(report.total, grand)
    assert set(report.by_agent) == {"llm-a", "llm-b"}
    for agent, used in totals.by_agent.items():
        assert same(report.by_agent[agent], used)
    assert same(report.by_model["tiny"], grand)
    assert recent.runs == 1 and same(recent.total, runs[1].run.usage)
