"""A run waiting for an approval survives a restart of `voltui serve` (SIGTERM, as systemd
sends, and SIGKILL): the next server continues it under the same id, waiting again, and an
attached client's approval finishes it. Real server processes on a real socket."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.engine.test_agent_ops import APPROVAL_FILE
from tests.remote.test_server_process import ServerProcess, attach, procs, wait_exit
from voltui.engine.api import ApprovalRequest, StartRequest
from voltui.engine.models import RunState

__all__ = ["procs"]  # the fixture, used by name


async def _until(predicate, limit: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + limit
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
async def test_a_waiting_approval_survives_a_server_restart(
    tmp_path: Path, short_dir: Path, procs: list[ServerProcess], stop: signal.Signals
) -> None:
    db = tmp_path / "s.db"
    flow = tmp_path / "gated.yaml"
    flow.write_text(APPROVAL_FILE)
    sock = short_dir / "a.sock"
    first = ServerProcess(sock, db, tmp_path / "first.log", speed=4)
    procs.append(first)
    client = await attach(sock, first, reconnect=False)
    try:
        run = await client.start_workflow(StartRequest(workflow=str(flow)))

        async def waiting() -> bool:
            return (await client.get_run(run.id)).run.state is RunState.WAITING

        await _until(waiting)
    finally:
        await client.close()
    first.proc.send_signal(stop)
    assert await wait_exit(first) in (0, -signal.SIGKILL), first.output()

    second = ServerProcess(sock, db, tmp_path / "second.log", speed=4)
    procs.append(second)
    client = await attach(sock, second, reconnect=False)
    try:
        snap = await client.snapshot()
        assert [(a.run_id, a.step_id) for a in snap.approvals] == [(run.id, "gate")]
        assert (await client.get_run(run.id)).run.state is RunState.WAITING
        await client.approve(ApprovalRequest(run_id=run.id, step_id="gate", comment="back"))
        final = await client.wait_run(run.id)
        detail = await client.get_run(run.id)
    finally:
        await client.close()
        second.proc.send_signal(signal.SIGTERM)
        await wait_exit(second)
    assert final.state is RunState.SUCCEEDED, second.output()
    assert detail.steps[1].output["comment"] == "back"
    assert detail.steps[0].attempt == 1  # build was not run again
