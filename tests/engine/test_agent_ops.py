"""Approval steps, `when:` conditions and LLM budgets through the real engine (real SQLite)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.fake_openai import FakeOpenAI, Reply
from voltui.config import OrchestratorConfig
from voltui.engine.api import ApprovalRequest, ReplayRequest
from voltui.engine.errors import NotFoundError, UserError
from voltui.engine.models import AgentSpec, RunState, StepState, Workflow
from voltui.engine.orchestrator import Orchestrator

ROOT = Path(__file__).parents[2]


def agents() -> list[AgentSpec]:
    return [
        AgentSpec(id="sim", kind="simulated", capabilities=["simulated"], capacity=1),
        AgentSpec(id="py", kind="python", capabilities=["python"], capacity=2),
    ]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Orchestrator]:
    orch = Orchestrator(OrchestratorConfig(db=tmp_path / "e.db", agents=agents()))
    await orch.start(watch=False)
    try:
        yield orch
    finally:
        await orch.stop()


def wf(steps: list[dict[str, Any]], **extra: Any) -> Workflow:
    return Workflow.model_validate({"id": "ops", "steps": steps, **extra})


def sim(step_id: str, deps: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    output = extra.pop("output", {})
    call = {"duration": extra.pop("duration", "5ms"), "output": output}
    return {"id": step_id, "depends_on": deps or [], "run": {"simulated": call}, **extra}


def gate(step_id: str = "gate", **call: Any) -> dict[str, Any]:
    return {"id": step_id, "run": {"approval": {"prompt": "Ship it?", **call}}}


async def until(predicate: Callable[[], Any], limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not await _value(predicate()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def _value(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


def types(engine: Orchestrator, run_id: str) -> list[str]:
    return [e.type for e in engine.dispatcher.correlated(run_id)]


# --------------------------------------------------------------------------- approvals


async def test_approval_waits_without_an_agent_slot_and_feeds_dependents(
    engine: Orchestrator,
) -> None:
    flow = wf(
        [
            gate(),
            sim("busy", duration="50ms"),  # the only simulated slot: must not wait for the gate
            {
                "id": "deploy",
                "depends_on": ["gate"],
                "run": {"python": "tests.engine.test_agent_ops:echo_upstream"},
            },
        ]
    )
    run = await engine.run_workflow(flow)
    await until(lambda: "step:approval_requested" in types(engine, run.id))
    detail = await engine.get_run(run.id)
    assert detail.steps[0].state is StepState.WAITING
    await until(lambda: "step:succeeded" in types(engine, run.id))  # `busy` ran meanwhile
    assert all(load.active == 0 for load in engine.coordination.loads())
    [pending] = (await engine.snapshot()).approvals
    assert (pending.step_id, pending.prompt, pending.decision) == ("gate", "Ship it?", None)

    decided = await engine.approve(
        ApprovalRequest(run_id=run.id, step_id="gate", comment="looks good", by="ada", via="test")
    )
    assert decided.decision == "approved"
    final = await asyncio.wait_for(engine.wait_run(run.id), 20)
    assert final.state is RunState.SUCCEEDED
    detail = await engine.get_run(run.id)
    gate_out = detail.steps[0].output
    assert gate_out["approved"] is True and gate_out["by"] == "ada" and gate_out["via"] == "test"
    assert detail.steps[2].output == {"gate": gate_out}
    [event] = [e for e in engine.dispatcher.correlated(run.id) if e.type.endswith("decided")]
    assert event.data["decision"] == "approved"
    assert (event.data["by"], event.data["via"], event.data["comment"]) == (
        "ada",
        "test",
        "looks good",
    )
    assert (await engine.snapshot()).approvals == []
    with pytest.raises(UserError, match="already ended as succeeded"):
        await engine.approve(ApprovalRequest(run_id=run.id, step_id="gate"))


def echo_upstream(ctx: Any) -> Any:
    return ctx.upstream


async def test_rejection_fails_the_step_and_skips_dependents(engine: Orchestrator) -> None:
    run = await engine.run_workflow(wf([gate(), sim("deploy", ["gate"])]))
    await until(lambda: "step:approval_requested" in types(engine, run.id))
    with pytest.raises(NotFoundError, match="no step 'nope'; its approval steps: gate"):
        await engine.approve(ApprovalRequest(run_id=run.id, step_id="nope"))
    with pytest.raises(UserError, match="is a simulated step, not an approval step"):
        await engine.approve(ApprovalRequest(run_id=run.id, step_id="deploy"))
    await engine.approve(
        ApprovalRequest(run_id=run.id, step_id="gate", approve=False, comment="not on Friday")
    )
    with pytest.raises(UserError, match="already rejected"):
        await engine.approve(ApprovalRequest(run_id=run.id, step_id="gate"))
    final = await asyncio.wait_for(engine.wait_run(run.id), 20)
    assert final.state is RunState.FAILED
    detail = await engine.get_run(run.id)
    assert detail.steps[0].state is StepState.FAILED
    assert detail.steps[0].error is not None
    assert detail.steps[0].error.endswith("via api: not on Friday")
    assert detail.steps[1].state is StepState.SKIPPED


@pytest.mark.parametrize(("on_timeout", "state"), [("approve", "succeeded"), ("reject", "failed")])
async def test_approval_timeout(engine: Orchestrator, on_timeout: str, state: str) -> None:
    run = await engine.run_workflow(wf([gate(timeout="200ms", on_timeout=on_timeout)]))
    final = await asyncio.wait_for(engine.wait_run(run.id), 20)
    assert final.state.value == state
    step = (await engine.get_run(run.id)).steps[0]
    assert step.output["by"] == "timeout"
    assert step.output["comment"] == "no decision within 200ms"


async def test_decision_from_another_engine_on_the_same_file(
    engine: Orchestrator, tmp_path: Path
) -> None:
    run = await engine.run_workflow(wf([gate()]))
    await until(lambda: "step:approval_requested" in types(engine, run.id))
    other = Orchestrator(OrchestratorConfig(db=tmp_path / "e.db", agents=[]))
    await other.start(watch=False)
    try:
        await other.approve(ApprovalRequest(run_id=run.id, step_id="gate", via="elsewhere"))
    finally:
        await other.stop()
    final = await asyncio.wait_for(engine.wait_run(run.id), 5)  # the owner polls the row
    assert final.state is RunState.SUCCEEDED


def _voltui(*args: str, db: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VOLTUI_DB": str(db)}
    return subprocess.run(
        [sys.executable, "-m", "voltui", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        **kw,
    )


APPROVAL_FILE = """\
id: gated
steps:
  - id: build
    requires: [simulated]
    run: {simulated: {duration: 10ms, output: {artefact: app.tar}}}
  - id: gate
    depends_on: [build]
    run: {approval: {prompt: "Deploy app.tar?"}}
  - id: deploy
    depends_on: [gate]
    requires: [simulated]
    run: {simulated: {duration: 10ms, output: {deployed: true}}}
"""


async def killed_while_waiting(tmp_path: Path, text: str = APPROVAL_FILE) -> tuple[Path, str]:
    """A real `voltui run` that reaches its approval, then is SIGKILLed: (state file, run id)."""
    db = tmp_path / "state" / "voltui.db"
    flow = tmp_path / "gated.yaml"
    flow.write_text(text)
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "voltui", "run", str(flow)],
        env={**os.environ, "VOLTUI_DB": str(db)},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        reader = Orchestrator(OrchestratorConfig(db=db, agents=[]))
        await until(lambda: db.exists(), 30)
        await reader.store.open()
        try:

            async def asked() -> bool:
                runs = await reader.store.list_runs(limit=5)
                return bool(runs) and bool(await reader.store.approvals(runs[0].id))

            await until(asked, 30)
            [run] = await reader.store.list_runs(limit=5)
        finally:
            await reader.store.close()
    finally:
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
    return db, run.id


async def test_approval_survives_a_sigkill_of_the_engine(tmp_path: Path) -> None:
    """The request is in SQLite before anyone is told; after a SIGKILL the CLI still approves
    it and `replay --failed` goes on from there without asking again."""
    db, run_id = await killed_while_waiting(tmp_path)
    approved = await asyncio.to_thread(
        _voltui, "approve", run_id, "gate", "--comment", "after the crash", db=db
    )
    assert approved.returncode == 0, approved.stderr
    assert "approved by" in approved.stdout and "after the crash" in approved.stdout
    assert f"voltui replay {run_id} --failed" in approved.stdout  # the run was interrupted

    engine = Orchestrator(
        OrchestratorConfig(
            db=db, agents=[AgentSpec(id="s", kind="simulated", capabilities=["simulated"])]
        )
    )
    await engine.start(watch=False)
    try:
        old = await engine.get_run(run_id)
        assert old.run.state is RunState.INTERRUPTED
        replay = await engine.replay_run(ReplayRequest(run_id=run_id, mode="failed"))
        final = await asyncio.wait_for(engine.wait_run(replay.id), 20)
        detail = await engine.get_run(replay.id)
    finally:
        await engine.stop()
    assert final.state is RunState.SUCCEEDED
    gate_out = detail.steps[1].output
    assert gate_out["approved"] and gate_out["comment"] == "after the crash"
    assert gate_out["via"] == f"cli, given to run {run_id}"
    assert detail.steps[0].reused_from == run_id  # build was not run again


async def test_cli_refuses_a_step_that_is_not_waiting(tmp_path: Path, engine: Orchestrator) -> None:
    run = await engine.run_workflow(wf([gate(), sim("x")]))
    await until(lambda: "step:approval_requested" in types(engine, run.id))
    db = tmp_path / "e.db"
    done = await asyncio.to_thread(_voltui, "approve", run.id, "x", "--reject", db=db)
    assert done.returncode == 2
    assert "not an approval step" in done.stderr and "Traceback" not in done.stderr
    done = await asyncio.to_thread(_voltui, "approve", run.id, "gate", "--reject", db=db)
    assert done.returncode == 0, done.stderr
    assert "rejected by" in done.stdout
    final = await asyncio.wait_for(engine.wait_run(run.id), 5)
    assert final.state is RunState.FAILED
    assert "via cli" in (await engine.get_run(run.id)).steps[0].error


# --------------------------------------------------------------------------- conditions


async def test_condition_false_skips_and_dependents_follow(engine: Orchestrator) -> None:
    flow = wf(
        [
            sim("review", output={"score": 6}),
            sim("deploy", ["review"], when="${inputs.deploy} and steps.review.output.score >= 8"),
            sim("announce", ["deploy"]),
            sim("report", ["review"], when="steps.review.output.score < 8"),
        ],
        inputs={"deploy": {"type": "boolean", "default": True}},
    )
    run = await engine.run_workflow(flow)
    final = await asyncio.wait_for(engine.wait_run(run.id), 20)
    assert final.state is RunState.SUCCEEDED  # a false condition is not a failure
    steps = {s.step_id: s for s in (await engine.get_run(run.id)).steps}
    assert steps["deploy"].state is StepState.SKIPPED
    assert steps["deploy"].error == "condition false"
    assert steps["announce"].state is StepState.SKIPPED
    assert steps["report"].state is StepState.SUCCEEDED
    [skip] = [
        e
        for e in engine.dispatcher.correlated(run.id)
        if e.type == "step:skipped" and e.data["step"] == "deploy"
    ]
    assert skip.data["reason"] == "condition false"


async def test_condition_true_runs_and_unreadable_condition_fails(engine: Orchestrator) -> None:
    flow = wf(
        [
            sim("review", output={"score": 9}),
            sim("deploy", ["review"], when="${inputs.deploy} and steps.review.output.score >= 8"),
            sim("odd", ["review"], when="steps.review.output.grade == 'A'"),
        ],
        inputs={"deploy": {"type": "boolean", "default": True}},
    )
    run = await engine.run_workflow(flow)
    final = await asyncio.wait_for(engine.wait_run(run.id), 20)
    steps = {s.step_id: s for s in (await engine.get_run(run.id)).steps}
    assert steps["deploy"].state is StepState.SUCCEEDED
    assert steps["odd"].state is StepState.FAILED
    assert "`steps.review.output` has no key 'grade' (keys: agent, score" in (
        steps["odd"].error or ""
    )
    assert final.state is RunState.FAILED


# --------------------------------------------------------------------------- budgets


async def test_budget_refuses_the_call_that_could_exceed_it(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    engine = Orchestrator(
        OrchestratorConfig(
            db=tmp_path / "b.db",
            agents=[AgentSpec(id="llm", kind="llm", capabilities=["llm"])],
            llm_base_url=fake_openai.base_url,
            llm_model="tiny",
            llm={"prices": {"tiny": {"input_per_1m": 1000.0, "output_per_1m": 1000.0}}},
        )
    )
    fake_openai.answer = lambda body: Reply(text="word " * 40, prompt_tokens=20)

    def ask(step_id: str, deps: list[str]) -> dict[str, Any]:
        call = {"prompt": "short prompt", "max_tokens": 100}
        return {"id": step_id, "depends_on": deps, "requires": ["llm"], "run": {"llm": call}}

    # Each call may use up to ~110 tokens (prompt estimate + max_tokens) = $0.11 at $1000/1M.
    # The first really uses 60 tokens ($0.06); 0.06 + 0.11 > 0.15, so the second is refused.
    flow = wf([ask("one", []), ask("two", ["one"])], budget={"usd": 0.15})
    await engine.start(watch=False)
    try:
        run = await engine.run_workflow(flow)
        final = await asyncio.wait_for(engine.wait_run(run.id), 20)
        detail = await engine.get_run(run.id)
    finally:
        await engine.stop()
    assert final.state is RunState.FAILED
    assert len(fake_openai.requests) == 1  # the refused call was never made
    one, two = detail.steps
    assert one.state is StepState.SUCCEEDED and two.state is StepState.FAILED
    assert two.attempt == 1  # a refusal is not retried
    assert "step 'two' refused: this call could cost up to $" in (two.error or "")
    assert "which could exceed its budget of $0.15" in (two.error or "")
    assert detail.run.usage is not None and detail.run.usage.cost_usd <= 0.15


async def test_usd_budget_needs_a_price(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    engine = Orchestrator(
        OrchestratorConfig(
            db=tmp_path / "b.db",
            agents=[AgentSpec(id="llm", kind="llm", capabilities=["llm"])],
            llm_base_url=fake_openai.base_url,
            llm_model="unpriced",
        )
    )
    step = {"id": "a", "requires": ["llm"], "run": {"llm": {"prompt": "hi"}}}
    await engine.start(watch=False)
    try:
        run = await engine.run_workflow(wf([step], budget={"usd": 1, "tokens": 10_000}))
        await asyncio.wait_for(engine.wait_run(run.id), 20)
        [a] = (await engine.get_run(run.id)).steps
    finally:
        await engine.stop()
    assert fake_openai.requests == []
    assert "model 'unpriced' has no price" in (a.error or "")
    assert '[llm.prices."unpriced"]' in (a.error or "")


async def test_token_budget(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    engine = Orchestrator(
        OrchestratorConfig(
            db=tmp_path / "b.db",
            agents=[AgentSpec(id="llm", kind="llm", capabilities=["llm"], capacity=4)],
            llm_base_url=fake_openai.base_url,
            llm_model="tiny",
        )
    )
    fake_openai.answer = lambda body: Reply(text="ok", prompt_tokens=5, completion_tokens=5)
    steps = [
        {"id": f"s{i}", "requires": ["llm"], "run": {"llm": {"prompt": "p", "max_tokens": 50}}}
        for i in range(4)
    ]
    # Four parallel calls reserving ~55 tokens each against 120: only two fit while in flight.
    await engine.start(watch=False)
    try:
        run = await engine.run_workflow(wf(steps, budget={"tokens": 120}, max_parallel=4))
        await asyncio.wait_for(engine.wait_run(run.id), 20)
        detail = await engine.get_run(run.id)
    finally:
        await engine.stop()
    states = sorted(s.state.value for s in detail.steps)
    assert states.count("succeeded") >= 2 and "failed" in states
    assert len(fake_openai.requests) == states.count("succeeded")
    assert detail.run.usage is not None and detail.run.usage.total_tokens <= 120


async def test_a_run_with_only_an_approval_left_is_waiting(engine: Orchestrator) -> None:
    """`waiting` is the run's state while nothing but a person's decision is due, so
    `voltui list --state waiting` finds what needs someone; any work makes it running again."""
    flow = wf([gate(), sim("work", duration="300ms"), sim("after", ["gate"])])
    run = await engine.run_workflow(flow)
    await until(lambda: engine.workflows.approvals.pending())
    assert engine.workflows.live_run(run.id).state is RunState.RUNNING  # work still runs
    await until(lambda: engine.workflows.live_run(run.id).state is RunState.WAITING)
    await until(lambda: _stored_state(engine, run.id, RunState.WAITING))
    waiting = await engine.list_runs(state=RunState.WAITING)
    assert [r.id for r in waiting] == [run.id]
    await engine.approve(ApprovalRequest(run_id=run.id, step_id="gate"))
    final = await asyncio.wait_for(engine.wait_run(run.id), 20)
    assert final is not None and final.state is RunState.SUCCEEDED
    states = [
        e.type
        for e in engine.dispatcher.correlated(run.id)
        if e.type in ("workflow:waiting", "workflow:running")
    ]
    assert states == ["workflow:waiting", "workflow:running"]


async def _stored_state(engine: Orchestrator, run_id: str, state: RunState) -> bool:
    stored = await engine.store.get_run(run_id)
    return stored is not None and stored.state is state
