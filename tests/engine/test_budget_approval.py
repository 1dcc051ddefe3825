"""Budgets that ask a person before overspending, and a run's own budget (real engine, real
SQLite, the fake OpenAI-compatible server)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.engine.test_agent_ops import _voltui, until
from tests.fixtures.fake_openai import FakeOpenAI, Reply
from voltui.config import OrchestratorConfig
from voltui.engine.api import ApprovalRequest, ReplayRequest, StartRequest
from voltui.engine.models import AgentSpec, BudgetSpec, RunState, StepState, Workflow
from voltui.engine.orchestrator import Orchestrator

PRICES = {"tiny": {"input_per_1m": 1000.0, "output_per_1m": 1000.0}}


def engine_for(tmp_path: Path, fake: FakeOpenAI, **extra: Any) -> Orchestrator:
    fake.answer = lambda body: Reply(text="word " * 40, prompt_tokens=20)
    return Orchestrator(
        OrchestratorConfig(
            db=tmp_path / "b.db",
            agents=[AgentSpec(id="llm", kind="llm", capabilities=["llm"], capacity=1)],
            llm_base_url=fake.base_url,
            llm_model="tiny",
            llm={"prices": PRICES},
            **extra,
        )
    )


def ask(step_id: str, deps: list[str]) -> dict[str, Any]:
    call = {"prompt": "short prompt", "max_tokens": 100}
    return {"id": step_id, "depends_on": deps, "requires": ["llm"], "run": {"llm": call}}


def cli_config(tmp_path: Path, fake: FakeOpenAI) -> Path:
    """A voltui.toml for CLI runs against the fake server: PRICES and one llm agent."""
    config = tmp_path / "voltui.toml"
    config.write_text(
        f'llm_base_url = "{fake.base_url}"\nllm_model = "tiny"\n'
        "[llm.prices.tiny]\ninput_per_1m = 1000.0\noutput_per_1m = 1000.0\n"
        '[[agents]]\nid = "llm"\nkind = "llm"\ncapabilities = ["llm"]\n'
    )
    fake.answer = lambda body: Reply(text="word " * 40, prompt_tokens=20)
    return config


def two_calls(budget: dict[str, Any]) -> Workflow:
    # Each call may use up to ~110 tokens ($0.11); the first really uses 60 ($0.06), so the
    # second could take the run past $0.15.
    return Workflow.model_validate(
        {"id": "spend", "steps": [ask("one", []), ask("two", ["one"])], "budget": budget}
    )


async def test_an_overspend_waits_for_a_person_and_goes_ahead_when_approved(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    engine = engine_for(tmp_path, fake_openai)
    await engine.start(watch=False)
    try:
        run = await engine.run_workflow(two_calls({"usd": 0.15, "on_exceed": "approve"}))
        await until(lambda: engine.workflows.approvals.pending(), 20)
        [asked] = engine.workflows.approvals.pending()
        assert asked.step_id == "two"
        assert "could exceed its budget of $0.15" in asked.prompt
        assert "Approve to let step 'two' spend past the run's budget" in asked.prompt
        assert len(fake_openai.requests) == 1  # the call waits; it has not gone out
        detail = await engine.get_run(run.id)
        assert detail.steps[1].state is StepState.WAITING
        # The waiting step holds no agent: the only slot of `llm` is free.
        assert [load.active for load in engine.coordination.loads()] == [0]
        # Nothing else at work: the run itself waits for a person.
        await until(lambda: engine.workflows.live_run(run.id).state is RunState.WAITING)

        await engine.approve(
            ApprovalRequest(run_id=run.id, step_id="two", comment="worth it", via="test")
        )
        final = await asyncio.wait_for(engine.wait_run(run.id), 20)
        detail = await engine.get_run(run.id)
        types = [e.type for e in engine.dispatcher.correlated(run.id)]
    finally:
        await engine.stop()
    assert final is not None and final.state is RunState.SUCCEEDED
    assert len(fake_openai.requests) == 2
    two = detail.steps[1]
    assert two.attempt == 1  # the wait is not a failed attempt
    assert detail.run.usage is not None and detail.run.usage.calls == 2  # as approved
    assert "step:approval_requested" in types and "step:approval_decided" in types


async def test_a_rejected_overspend_fails_the_step_saying_who_refused(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    engine = engine_for(tmp_path, fake_openai)
    await engine.start(watch=False)
    try:
        run = await engine.run_workflow(two_calls({"usd": 0.15, "on_exceed": "approve"}))
        await until(lambda: engine.workflows.approvals.pending(), 20)
        await engine.approve(
            ApprovalRequest(
                run_id=run.id, step_id="two", approve=False, comment="too dear", by="ann"
            )
        )
        final = await asyncio.wait_for(engine.wait_run(run.id), 20)
        two = (await engine.get_run(run.id)).steps[1]
    finally:
        await engine.stop()
    assert final is not None and final.state is RunState.FAILED
    assert len(fake_openai.requests) == 1
    assert two.state is StepState.FAILED
    assert "spending past the budget was rejected by ann via api: too dear" in (two.error or "")


async def test_nobody_answering_in_time_rejects_the_overspend(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    engine = engine_for(tmp_path, fake_openai)
    await engine.start(watch=False)
    try:
        flow = two_calls({"usd": 0.15, "on_exceed": "approve", "approve_timeout": "200ms"})
        run = await engine.run_workflow(flow)
        final = await asyncio.wait_for(engine.wait_run(run.id), 20)
        two = (await engine.get_run(run.id)).steps[1]
    finally:
        await engine.stop()
    assert final is not None and final.state is RunState.FAILED
    assert "rejected by timeout" in (two.error or "")
    assert len(fake_openai.requests) == 1


async def test_a_run_s_own_budget_replaces_only_the_limits_it_names(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    text = json.dumps(two_calls({"usd": 0.15, "tokens": 100_000}).model_dump(exclude_unset=True))
    (flows / "spend.yaml").write_text(text)
    engine = engine_for(tmp_path, fake_openai, workflows_dir=flows)
    await engine.start(watch=False)
    try:
        # The file's $0.15 refuses the second call; this run's $1 does not.
        bigger = StartRequest(workflow="spend", budget=BudgetSpec(usd=1))
        run = await engine.start_workflow(bigger)
        final = await asyncio.wait_for(engine.wait_run(run.id), 20)
        stored = await engine.store.get_workflow(run.id)
        assert stored is not None and stored.budget is not None
        assert (stored.budget.usd, stored.budget.tokens) == (1, 100_000)

        plain = await engine.start_workflow(StartRequest(workflow="spend"))
        failed = await asyncio.wait_for(engine.wait_run(plain.id), 20)
        # Raise the budget on the replay: the failed call goes ahead, the first is reused.
        replay = await engine.replay_run(
            ReplayRequest(run_id=plain.id, mode="failed", budget=BudgetSpec(usd=2))
        )
        replayed = await asyncio.wait_for(engine.wait_run(replay.id), 20)
    finally:
        await engine.stop()
    assert final is not None and final.state is RunState.SUCCEEDED
    assert failed is not None and failed.state is RunState.FAILED
    assert replayed is not None and replayed.state is RunState.SUCCEEDED
    assert len(fake_openai.requests) == 2 + 1 + 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--budget-usd", "0"], "expected an amount above 0"),
        (["--budget-usd", "lots"], "expected an amount in US dollars"),
        (["--budget-tokens", "-3"], "expected a whole number"),
        (["--over-budget", "maybe"], "invalid choice"),
    ],
)
def test_budget_flags_refuse_bad_values(tmp_path: Path, flags: list[str], message: str) -> None:
    done = _voltui("run", "whatever", *flags, db=tmp_path / "x.db")
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_cli_budget_flags_reach_the_run(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    flow = tmp_path / "spend.yaml"
    flow.write_text(json.dumps(two_calls({"usd": 0.15}).model_dump(exclude_unset=True)))
    config = cli_config(tmp_path, fake_openai)
    db = tmp_path / "c.db"
    refused = _voltui("run", str(flow), "--config", str(config), db=db)
    assert refused.returncode != 0 and "could exceed its budget of $0.15" in refused.stdout
    done = _voltui("run", str(flow), "--config", str(config), "--budget-usd", "$1", db=db)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_an_overspend_question_outlives_a_restart(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    first = engine_for(tmp_path, fake_openai)
    await first.start()
    try:
        run = await first.run_workflow(two_calls({"usd": 0.15, "on_exceed": "approve"}))
        await until(lambda: first.workflows.approvals.pending(), 20)
    finally:
        await first.stop()
    second = engine_for(tmp_path, fake_openai)
    await second.start()
    try:
        assert second.resumed_on_start == [run.id]
        await until(lambda: second.workflows.approvals.pending(), 20)
        assert len(fake_openai.requests) == 1  # step one was not called again
        await second.approve(ApprovalRequest(run_id=run.id, step_id="two"))
        final = await asyncio.wait_for(second.wait_run(run.id), 20)
    finally:
        await second.stop()
    assert final is not None and final.state is RunState.SUCCEEDED
    assert len(fake_openai.requests) == 2
    assert final.usage is not None and final.usage.calls == 2  # spending before the stop counts


def test_voltui_spend_reports_per_model_and_agent(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    flow = tmp_path / "spend.yaml"
    flow.write_text(json.dumps(two_calls({"usd": 5}).model_dump(exclude_unset=True)))
    config = cli_config(tmp_path, fake_openai)
    db = tmp_path / "u.db"
    empty = _voltui("spend", "--config", str(config), db=db)
    assert empty.returncode == 0 and "no LLM calls in the kept runs" in empty.stdout
    assert _voltui("run", str(flow), "--config", str(config), db=db).returncode == 0
    done = _voltui("spend", "--config", str(config), "--json", db=db)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["runs"] == 1 and report["total"]["calls"] == 2
    assert report["total"]["prompt_tokens"] == 40 and report["total"]["completion_tokens"] == 80
    assert set(report["by_model"]) == {"tiny"} and set(report["by_agent"]) == {"llm"}
    table = _voltui("spend", "--config", str(config), "--since", "1h", db=db)
    assert table.returncode == 0, table.stderr
    assert "1 run(s), 120 tok $0.1200" in table.stdout
    assert "By model" in table.stdout and "tiny" in table.stdout and "By agent" in table.stdout


async def test_a_step_reused_by_a_replay_is_counted_once(tmp_path: Path) -> None:
    from voltui.engine.models import Run, StepRun, Usage

    engine = Orchestrator(OrchestratorConfig(db=tmp_path / "r.db", agents=[]))
    await engine.start(watch=False)
    try:
        used = Usage(prompt_tokens=10, completion_tokens=5, calls=1, model="m", cost_usd=0.1)
        for run_id, reused in (("first", None), ("replay", "first")):
            run = Run(id=run_id, workflow_id="w", workflow_name="w", created_at=1.0)
            await engine.store.save_run(run)
            step = StepRun(run_id=run_id, step_id="ask[0]", usage=used, reused_from=reused)
            await engine.store.save_step(step.model_copy(update={"agent_id": "llm"}))
        report = await engine.usage()
    finally:
        await engine.stop()
    assert report.runs == 1 and report.total.calls == 1 and report.by_agent["llm"].calls == 1
