"""A run waiting for a person outlives its engine: the next long-lived engine continues it under
the same id, with what had finished kept as it ended (real SQLite, real subprocesses)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.engine.test_agent_ops import APPROVAL_FILE, _voltui, killed_while_waiting, until
from voltui.config import OrchestratorConfig
from voltui.engine.api import ApprovalRequest, ReplayRequest
from voltui.engine.models import AgentSpec, EventQuery, RunState, StepState, Workflow
from voltui.engine.orchestrator import Orchestrator

SIM = [AgentSpec(id="s", kind="simulated", capabilities=["simulated"], capacity=4)]


def engine_on(db: Path) -> Orchestrator:
    return Orchestrator(OrchestratorConfig(db=db, agents=SIM))


async def test_a_sigkilled_engine_s_waiting_run_waits_again_in_the_next_engine(
    tmp_path: Path,
) -> None:
    db, run_id = await killed_while_waiting(tmp_path)
    engine = engine_on(db)
    await engine.start()  # a dashboard or `voltui serve`: long-lived
    try:
        assert engine.resumed_on_start == [run_id]
        await until(lambda: engine.workflows.approvals.pending(), 20)
        detail = await engine.get_run(run_id)
        assert detail.run.state is RunState.WAITING  # nothing at work but the approval
        assert detail.run.error is None and detail.run.finished_at is None
        steps = {s.step_id: s for s in detail.steps}
        assert steps["gate"].state is StepState.WAITING
        assert steps["build"].state is StepState.SUCCEEDED
        assert steps["deploy"].state is StepState.PENDING
        [pending] = engine.workflows.approvals.pending()
        assert (pending.run_id, pending.step_id) == (run_id, "gate")

        await engine.approve(
            ApprovalRequest(run_id=run_id, step_id="gate", comment="after restart", via="test")
        )
        final = await asyncio.wait_for(engine.wait_run(run_id), 20)
        detail = await engine.get_run(run_id)
        await until(lambda: _has_final_event(engine, run_id), 10)
        events = await engine.store.events(EventQuery(correlation_id=run_id))
    finally:
        await engine.stop()
    assert final is not None and final.state is RunState.SUCCEEDED
    assert final.id == run_id and final.steps_succeeded == 3
    steps = {s.step_id: s for s in detail.steps}
    assert steps["gate"].output["comment"] == "after restart"
    assert steps["build"].attempt == 1  # not run again
    assert steps["deploy"].output["deployed"] is True
    types = [e.type for e in events]
    assert types.count("step:started") == 2  # build before the kill, deploy after
    assert "workflow:interrupted" in types and types[-1] == "workflow:succeeded"


async def test_a_decision_given_while_no_engine_ran_is_acted_on_at_the_next_start(
    tmp_path: Path,
) -> None:
    db, run_id = await killed_while_waiting(tmp_path)
    approved = await asyncio.to_thread(_voltui, "approve", run_id, "gate", "--reject", db=db)
    assert approved.returncode == 0, approved.stderr
    assert "continues the run" in approved.stdout
    engine = engine_on(db)
    await engine.start()
    try:
        final = await asyncio.wait_for(engine.wait_run(run_id), 20)
    finally:
        await engine.stop()
    assert final is not None and final.state is RunState.FAILED
    assert final.error is not None and "rejected" in final.error


async def test_a_one_shot_command_never_adopts_a_waiting_run(tmp_path: Path) -> None:
    db, run_id = await killed_while_waiting(tmp_path)
    listed = await asyncio.to_thread(_voltui, "list", "--state", "interrupted", db=db)
    assert listed.returncode == 0, listed.stderr
    assert run_id in listed.stdout  # still interrupted after a one-shot command
    engine = engine_on(db)
    await engine.start(watch=False)
    try:
        assert engine.resumed_on_start == []
        assert (await engine.get_run(run_id)).run.state is RunState.INTERRUPTED
    finally:
        await engine.stop()
    engine = engine_on(db)
    await engine.start()
    try:
        assert engine.resumed_on_start == [run_id]
    finally:
        await engine.stop()


async def test_quitting_the_dashboard_keeps_the_approval_waiting(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    flow = Workflow.model_validate(
        {
            "id": "q",
            "steps": [
                {"id": "gate", "run": {"approval": {"prompt": "go?", "timeout": "1h"}}},
                {"id": "after", "depends_on": ["gate"], "run": {"simulated": {"duration": "1ms"}}},
            ],
        }
    )
    first = engine_on(db)
    await first.start()
    try:
        run = await first.run_workflow(flow)
        await until(lambda: first.workflows.approvals.pending(), 20)
        [asked] = first.workflows.approvals.pending()
    finally:
        await first.stop()
    assert (await _state(db, run.id)) is RunState.INTERRUPTED

    second = engine_on(db)
    await second.start()
    try:
        await until(lambda: second.workflows.approvals.pending(), 20)
        [again] = second.workflows.approvals.pending()
        # The timeout still counts from the first request, not from the restart.
        assert again.requested_at == asked.requested_at
        assert again.timeout_at == asked.timeout_at
        await second.approve(ApprovalRequest(run_id=run.id, step_id="gate"))
        final = await asyncio.wait_for(second.wait_run(run.id), 20)
    finally:
        await second.stop()
    assert final is not None and final.state is RunState.SUCCEEDED


async def test_a_run_whose_other_work_was_cut_off_stays_interrupted(tmp_path: Path) -> None:
    """A step at work when the engine died may have done half its side effects: running it
    again is the operator's call, so the run is left for `replay --failed`."""
    text = APPROVAL_FILE.replace(
        "  - id: gate\n    depends_on: [build]\n",
        "  - id: slow\n    requires: [simulated]\n"
        "    run: {simulated: {duration: 60s}}\n"
        "  - id: gate\n    depends_on: [build]\n",
    )
    db, run_id = await killed_while_waiting(tmp_path, text)
    engine = engine_on(db)
    await engine.start()
    try:
        assert engine.resumed_on_start == []
        assert (await engine.get_run(run_id)).run.state is RunState.INTERRUPTED
    finally:
        await engine.stop()


async def test_a_replayed_run_is_not_resumed_and_two_engines_claim_once(tmp_path: Path) -> None:
    db, run_id = await killed_while_waiting(tmp_path)
    engine = engine_on(db)
    await engine.start(watch=False)
    try:
        run = (await engine.get_run(run_id)).run
        assert await engine.store.interrupted_with_approvals() == [run_id]
        queued = run.model_copy(update={"state": RunState.QUEUED, "owner_pid": os.getpid()})
        assert await engine.store.claim_interrupted(queued)
        assert not await engine.store.claim_interrupted(queued)  # the second engine loses
        await engine.store.save_run(run)  # back to interrupted
        replay = await engine.replay_run(ReplayRequest(run_id=run_id, mode="failed"))
        assert await engine.store.interrupted_with_approvals() == []
        await engine.cancel_run(replay.id)
    finally:
        await engine.stop()


async def _state(db: Path, run_id: str) -> RunState:
    engine = engine_on(db)
    await engine.store.open()
    try:
        run = await engine.store.get_run(run_id)
    finally:
        await engine.store.close()
    assert run is not None
    return run.state


async def _has_final_event(engine: Orchestrator, run_id: str) -> bool:
    events = await engine.store.events(EventQuery(correlation_id=run_id, type="workflow:succ*"))
    return bool(events)
