"""Approving a waiting step over the socket: the server records where the decision came from;
a read-only client is refused; the CLI does the same with --socket."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.remote.conftest import until
from voltui.engine.api import ApprovalRequest, StartRequest
from voltui.engine.errors import UserError
from voltui.engine.models import BudgetSpec, RunState, Workflow
from voltui.engine.orchestrator import Orchestrator
from voltui.remote import protocol as proto
from voltui.remote.client import RemoteEngine
from voltui.remote.server import EngineServer

ROOT = Path(__file__).parents[2]

GATED = Workflow.model_validate(
    {
        "id": "gated",
        "steps": [
            {"id": "gate", "run": {"approval": {"prompt": "Go?"}}},
            {"id": "after", "depends_on": ["gate"], "run": {"simulated": {"duration": "1ms"}}},
        ],
    }
)


async def test_attached_client_approves_and_the_server_says_from_where(
    engine: Orchestrator, server: EngineServer, sock: Path
) -> None:
    run = await engine.run_workflow(GATED)
    await until(lambda: bool(engine.workflows.approvals.pending()), what="the approval request")
    async with (
        RemoteEngine(socket_path=sock, read_only=True) as viewer,
        RemoteEngine(socket_path=sock) as operator,
    ):
        snap = await viewer.snapshot()
        assert [(a.run_id, a.step_id, a.prompt) for a in snap.approvals] == [
            (run.id, "gate", "Go?")
        ]
        with pytest.raises(proto.ReadOnlyError, match="read-only"):
            await viewer.approve(ApprovalRequest(run_id=run.id, step_id="gate"))
        decided = await operator.approve(
            ApprovalRequest(
                run_id=run.id, step_id="gate", comment="ok", by="claimed-name", via="dashboard"
            )
        )
        assert decided.decision == "approved"
        assert decided.via == f"dashboard over socket (unix:{sock})"
        with pytest.raises(UserError, match="already approved"):
            await operator.approve(ApprovalRequest(run_id=run.id, step_id="gate"))
        final = await operator.wait_run(run.id)
    assert final.state is RunState.SUCCEEDED
    out = (await engine.get_run(run.id)).steps[0].output
    assert out["via"] == decided.via and out["comment"] == "ok"


async def test_cli_approve_over_the_socket(
    engine: Orchestrator, server: EngineServer, sock: Path, tmp_path: Path
) -> None:
    run = await engine.run_workflow(GATED)
    await until(lambda: bool(engine.workflows.approvals.pending()), what="the approval request")
    cmd = [sys.executable, "-m", "voltui", "approve", run.id, "gate", "--reject"]
    cmd += ["--comment", "no", "--socket", str(sock)]
    done = await asyncio.to_thread(
        subprocess.run,
        cmd,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "VOLTUI_DB": str(tmp_path / "unused.db")},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"step gate of run {run.id} rejected by" in done.stdout
    final = await asyncio.wait_for(engine.wait_run(run.id), 10)
    assert final.state is RunState.FAILED
    error = (await engine.get_run(run.id)).steps[0].error or ""
    assert error.endswith(f"via cli over socket (unix:{sock}): no")


async def test_a_run_s_own_budget_over_the_socket_replaces_only_what_it_names(
    engine: Orchestrator, server: EngineServer, sock: Path, tmp_path: Path
) -> None:
    flow = tmp_path / "budgeted.yaml"
    flow.write_text(
        "id: budgeted\nbudget: {tokens: 5000, usd: 0.5}\n"
        "steps:\n  - id: a\n    run: {simulated: {duration: 1ms}}\n"
    )
    async with RemoteEngine(socket_path=sock) as operator:
        run = await operator.start_workflow(
            StartRequest(workflow=str(flow), budget=BudgetSpec(usd=2))
        )
        await operator.wait_run(run.id)
    stored = await engine.store.get_workflow(run.id)
    assert stored is not None and stored.budget is not None
    assert (stored.budget.tokens, stored.budget.usd) == (5000, 2)


async def test_usage_report_over_the_socket(
    engine: Orchestrator, server: EngineServer, sock: Path
) -> None:
    from voltui.engine.models import Run, StepRun, Usage

    used = Usage(prompt_tokens=3, completion_tokens=4, calls=1, model="m", cost_usd=0.5)
    await engine.store.save_run(Run(id="r1", workflow_id="w", workflow_name="w", created_at=5.0))
    await engine.store.save_step(StepRun(run_id="r1", step_id="a", agent_id="llm", usage=used))
    async with RemoteEngine(socket_path=sock, read_only=True) as viewer:  # a read, not an act
        report = await viewer.usage()
        later = await viewer.usage(since=10.0)
    assert report.runs == 1 and report.by_model["m"].total_tokens == 7
    assert report.by_agent["llm"].cost_usd == 0.5
    assert later.runs == 0 and later.since == 10.0
