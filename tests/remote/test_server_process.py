"""A real server process: SIGTERM ends it cleanly, and attached clients outlive a restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.remote.conftest import ROOT, SAMPLES, sim_agents, until
from voltui.config import OrchestratorConfig
from voltui.engine.api import StartRequest
from voltui.engine.errors import UserError
from voltui.engine.models import Event, EventQuery, RunState
from voltui.engine.orchestrator import Orchestrator
from voltui.remote.client import RemoteEngine


class ServerProcess:
    def __init__(self, sock: Path, db: Path, log: Path, *extra: str, speed: float) -> None:
        env = dict(os.environ)
        env.update(
            VOLTUI_DB=str(db),
            VOLTUI_WORKFLOWS_DIR=str(SAMPLES),
            VOLTUI_AGENTS=json.dumps([a.model_dump() for a in sim_agents(speed)]),
            VOLTUI_HEALTH_CHECK_INTERVAL="1h",
        )
        env.pop("VOLTUI_CONFIG", None)
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "voltui.remote.server", "--socket", str(sock), *extra],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def procs() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for p in started:
        p.stop()


async def attach(sock: Path, proc: ServerProcess, **kwargs: object) -> RemoteEngine:
    """Connect once the server is up (it imports and opens SQLite first)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        client = RemoteEngine(socket_path=sock, **kwargs)  # type: ignore[arg-type]
        try:
            await client.connect()
            return client
        except UserError:
            if proc.proc.poll() is not None or loop.time() > deadline:
                raise AssertionError(f"server did not come up:\n{proc.output()}") from None
            await asyncio.sleep(0.1)


async def wait_exit(proc: ServerProcess, limit: float = 20) -> int:
    return await asyncio.wait_for(asyncio.to_thread(proc.proc.wait), limit)


async def test_sigterm_cancels_runs_records_them_and_removes_the_socket(
    tmp_path: Path, short_dir: Path, procs: list[ServerProcess]
) -> None:
    sock = short_dir / "p.sock"
    db = tmp_path / "p.db"
    first = ServerProcess(sock, db, tmp_path / "server.log", speed=1)
    procs.append(first)
    client = await attach(sock, first, max_backoff=0.2)
    try:
        # A second server process is refused, naming the first one's pid.
        second = ServerProcess(sock, db, tmp_path / "second.log", speed=1)
        procs.append(second)
        assert await wait_exit(second) == 2
        assert f"pid {first.proc.pid}" in second.output() and str(sock) in second.output()

        snap = await client.snapshot()
        run = await client.start_workflow(StartRequest(workflow="simulated_load"))
        stream = client.subscribe("step:*", since_seq=snap.seq)
        async for batch in stream:
            if any(e.type == "step:started" for e in batch):
                break
        await stream.aclose()  # type: ignore[attr-defined]

        first.proc.send_signal(signal.SIGTERM)
        assert await wait_exit(first) == 0, first.output()
        assert not sock.exists()
        await until(lambda: client.state == "reconnecting", what="client notices the stop")
    finally:
        await client.close()

    async with Orchestrator(OrchestratorConfig(db=db, agents=sim_agents())) as engine:
        detail = await engine.get_run(run.id)
        assert detail.run.state == RunState.CANCELLED
        assert detail.run.finished_at is not None
        assert any(s.state == "cancelled" for s in detail.steps)
        recorded = await engine.events(EventQuery(correlation_id=run.id))
        types = [e.type for e in recorded]
        assert "step:started" in types and types[-1] == "workflow:cancelled"


async def test_finish_mode_lets_runs_end_and_a_dashboard_survives_a_restart(
    tmp_path: Path, short_dir: Path, procs: list[ServerProcess]
) -> None:
    sock = short_dir / "r.sock"
    db = tmp_path / "r.db"
    first = ServerProcess(sock, db, tmp_path / "a.log", "--on-stop", "finish", speed=4)
    procs.append(first)
    client = await attach(sock, first, max_backoff=0.2, heartbeat=0)
    seen: list[Event] = []

    async def watch() -> None:
        async for batch in client.subscribe("*", since_seq=start):
            seen.extend(batch)

    try:
        start = (await client.snapshot()).seq
        watcher = asyncio.create_task(watch())
        run1 = await client.start_workflow(StartRequest(workflow="simulated_load"))
        await until(lambda: any(e.type == "step:started" for e in seen), what="run1 started")
        first.proc.send_signal(signal.SIGTERM)
        assert await wait_exit(first) == 0, first.output()
        await until(lambda: client.state == "reconnecting", what="client notices the stop")

        second = ServerProcess(sock, db, tmp_path / "b.log", speed=4)
        procs.append(second)
        await until(lambda: client.state == "connected", limit=20, what="client reattaches")
        assert (await client.get_run(run1.id)).run.state == RunState.SUCCEEDED
        run2 = await client.start_workflow(StartRequest(workflow="simulated_load"))
        assert (await client.wait_run(run2.id)).state == RunState.SUCCEEDED

        stored = await client.events(EventQuery(since_seq=start))
        done = stored[-1].seq
        await until(lambda: bool(seen) and seen[-1].seq >= done, what="stream catches up")
        # One unbroken stream across two server processes: every recorded event, once.
        # (metrics and one-shot noise are not stored, so compare the stored kinds only.)
        got = [e.seq for e in seen if e.seq <= done and e.correlation_id in (run1.id, run2.id)]
        want = [e.seq for e in stored if e.correlation_id in (run1.id, run2.id)]
        assert got == want
        assert len({e.seq for e in seen}) == len(seen)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    finally:
        await client.close()
    second.proc.send_signal(signal.SIGTERM)
    assert await wait_exit(second) == 0
    assert not sock.exists()


async def test_two_clients_of_a_server_process_see_every_event_once_across_a_cut(
    tmp_path: Path, short_dir: Path, procs: list[ServerProcess]
) -> None:
    """Start from one client, watch from both, drop one mid-stream: no gap, no duplicate."""
    sock = short_dir / "t.sock"
    server = ServerProcess(sock, tmp_path / "t.db", tmp_path / "server.log", speed=1)
    procs.append(server)
    starter = await attach(sock, server, max_backoff=0.2)
    watcher = await attach(sock, server, max_backoff=0.2)
    try:
        since = (await starter.snapshot()).seq
        run = await starter.start_workflow(StartRequest(workflow="simulated_load"))
        final = "workflow:succeeded"

        async def collect(client: RemoteEngine, cut_after: int | None) -> list[Event]:
            got: list[Event] = []
            stream = client.subscribe("*", since_seq=since)
            async for batch in stream:
                got.extend(e for e in batch if e.correlation_id == run.id)
                if cut_after is not None and len(got) >= cut_after:
                    cut_after = None
                    assert client._writer is not None
                    client._writer.transport.abort()  # the link drops mid-stream
                if any(e.type == final for e in got):
                    break
            await stream.aclose()  # type: ignore[attr-defined]
            return got

        seen_a, seen_b = await asyncio.wait_for(
            asyncio.gather(collect(starter, None), collect(watcher, 5)), 60
        )
        recorded = await starter.events(EventQuery(correlation_id=run.id))
        want = [e.seq for e in recorded if e.seq <= seen_a[-1].seq]
        assert [e.seq for e in seen_a] == want
        assert [e.seq for e in seen_b] == want, "the cut client missed or repeated events"
        assert len(want) > 20
    finally:
        await starter.close()
        await watcher.close()
        server.proc.send_signal(signal.SIGTERM)
        await wait_exit(server)
    assert not sock.exists()
