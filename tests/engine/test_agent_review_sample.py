"""The agent_review sample through the real engine with the default agents: offline plan, map
over the planned files, a scored review, a condition and an approval before publishing; and the
same plan made by an LLM (the fake OpenAI server), with its tokens on the run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fixtures.fake_openai import FakeOpenAI, Reply
from voltui.config import OrchestratorConfig
from voltui.engine.api import ApprovalRequest, StartRequest
from voltui.engine.models import RunState, StepState
from voltui.engine.orchestrator import Orchestrator

SAMPLES = Path(__file__).resolve().parents[2] / "sample-workflows"
FLOW = str(SAMPLES / "agent_review.yaml")


async def start(tmp_path: Path, **config: object) -> Orchestrator:
    engine = Orchestrator(OrchestratorConfig(db=tmp_path / "s.db", **config))  # type: ignore[arg-type]
    await engine.start(watch=False)
    return engine


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Orchestrator]:
    orch = await start(tmp_path)
    try:
        yield orch
    finally:
        await orch.stop()


async def wait_for_approval(engine: Orchestrator, run_id: str) -> None:
    deadline = time.monotonic() + 60
    while not any(a.run_id == run_id for a in engine.workflows.approvals.pending()):
        assert time.monotonic() < deadline, "the sample never asked for approval"
        run = await engine.get_run(run_id)
        assert not run.run.state.finished, run.run.error
        await asyncio.sleep(0.05)


async def test_offline_review_waits_for_approval_then_publishes(engine: Orchestrator) -> None:
    run = await engine.start_workflow(StartRequest(workflow=FLOW, inputs={"min_score": 0}))
    await wait_for_approval(engine, run.id)
    detail = await engine.get_run(run.id)
    plan, review, score = detail.steps[:3]
    assert plan.output["source"] == "heuristic" and len(plan.output["tasks"]) == 6
    assert [r["path"] for r in review.output] == [t["path"] for t in plan.output["tasks"]]
    assert 0 <= score.output["score"] <= 10
    children = [s for s in await engine.store.get_steps(run.id) if s.step_id.startswith("review[")]
    assert len(children) == 6 and all(c.state is StepState.SUCCEEDED for c in children)
    await engine.approve(
        ApprovalRequest(run_id=run.id, step_id="approve_deploy", by="lead", comment="fine")
    )
    final = await asyncio.wait_for(engine.wait_run(run.id), 30)
    assert final.state is RunState.SUCCEEDED
    published = Path((await engine.get_run(run.id)).steps[4].output["published"])
    text = await asyncio.to_thread(published.read_text)
    assert text.startswith(f"# Review (score {score.output['score']})")
    assert "Approved by lead via api." in text and "Comment: fine" in text


async def test_no_deploy_skips_the_approval_and_still_succeeds(engine: Orchestrator) -> None:
    run = await engine.start_workflow(StartRequest(workflow=FLOW, inputs={"deploy": False}))
    final = await asyncio.wait_for(engine.wait_run(run.id), 60)
    assert final.state is RunState.SUCCEEDED
    steps = {s.step_id: s for s in (await engine.get_run(run.id)).steps}
    assert steps["approve_deploy"].state is StepState.SKIPPED
    assert steps["approve_deploy"].error == "condition false"
    assert steps["deploy"].state is StepState.SKIPPED


async def test_plan_by_an_llm_counts_its_tokens(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.then(
        Reply(
            text='{"files": [{"path": "codereview/checker.py", "why": "the core"}, '
            '{"path": "no/such.py", "why": "made up"}]}',
            prompt_tokens=300,
            completion_tokens=40,
        )
    )
    engine = await start(
        tmp_path,
        llm_base_url=fake_openai.base_url,
        llm_model="tiny",
        llm={"prices": {"tiny": {"input_per_1m": 1.0, "output_per_1m": 2.0}}},
    )
    try:
        run = await engine.start_workflow(StartRequest(workflow=FLOW, inputs={"deploy": False}))
        final = await asyncio.wait_for(engine.wait_run(run.id), 60)
        detail = await engine.get_run(run.id)
    finally:
        await engine.stop()
    assert final.state is RunState.SUCCEEDED
    plan = detail.steps[0]
    assert plan.output["source"] == "llm"
    assert plan.output["tasks"] == [{"path": "codereview/checker.py", "why": "the core"}]
    assert plan.usage is not None and plan.usage.total_tokens == 340
    assert detail.run.usage is not None
    assert detail.run.usage.cost_usd == pytest.approx((300 * 1.0 + 40 * 2.0) / 1e6)
