"""A read-only token on TCP: the server, not the client, decides who may act (issue 13 item 6)."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.remote.conftest import ROOT, SAMPLES, RawClient
from voltui.cli import build_parser
from voltui.engine.api import ReplayRequest, StartRequest
from voltui.engine.errors import UserError
from voltui.engine.models import RunState
from voltui.engine.orchestrator import Orchestrator
from voltui.remote import protocol as proto
from voltui.remote.client import RemoteEngine
from voltui.remote.paths import read_token
from voltui.remote.server import EngineServer

FULL = "full-token-0123456789"
VIEWER = "viewer-token-0123456789"


def exists(path: Path) -> bool:
    return path.exists()


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
async def tcp_server(engine: Orchestrator, sock: Path) -> EngineServer:
    srv = EngineServer(
        engine, socket_path=sock, tcp=("127.0.0.1", 0), token=FULL, read_only_token=VIEWER
    )
    await srv.start()
    try:
        yield srv  # type: ignore[misc]
    finally:
        await srv.stop()


async def test_viewer_token_cannot_act_whatever_it_claims(
    engine: Orchestrator, tcp_server: EngineServer
) -> None:
    addr = tcp_server.tcp_address
    assert addr is not None
    async with (
        RemoteEngine(tcp=addr, token=VIEWER, read_only=False, heartbeat=0) as viewer,
        RemoteEngine(tcp=addr, token=FULL, heartbeat=0) as operator,
    ):
        assert viewer.read_only is True  # told by the server, so a dashboard greys its actions
        assert operator.read_only is False
        with pytest.raises(proto.ReadOnlyError, match="read-only token"):
            await viewer.start_workflow(StartRequest(workflow="simulated_load"))
        run = await operator.start_workflow(StartRequest(workflow="simulated_load"))
        with pytest.raises(proto.ReadOnlyError):
            await viewer.cancel_run(run.id)
        with pytest.raises(proto.ReadOnlyError):
            await viewer.replay_run(ReplayRequest(run_id=run.id))
        # Watching works.
        assert (await viewer.get_run(run.id)).run.id == run.id
        assert (await viewer.wait_run(run.id)).state == RunState.SUCCEEDED
    assert len(await engine.list_runs()) == 1


async def test_a_raw_client_claiming_write_access_is_still_read_only(
    tcp_server: EngineServer,
) -> None:
    assert tcp_server.tcp_address is not None
    raw = await RawClient.open(tcp=tcp_server.tcp_address)
    welcome = await raw.greet(token=VIEWER, read_only=False)
    assert welcome["type"] == "welcome" and welcome["read_only"] is True
    for method in sorted(name for name, m in proto.METHODS.items() if m.mutating):
        await raw.send({"id": method, "method": method, "params": {"run_id": "x"}})
        reply = await raw.recv()
        assert reply["id"] == method and reply["error"]["kind"] == "read_only", reply
    await raw.close()


async def test_token_rules(engine: Orchestrator, sock: Path) -> None:
    with pytest.raises(UserError, match="needs --tcp"):
        await EngineServer(engine, socket_path=sock, read_only_token=VIEWER).start()
    same = EngineServer(
        engine, socket_path=sock, tcp=("127.0.0.1", 0), token=FULL, read_only_token=FULL
    )
    with pytest.raises(UserError, match="must differ"):
        await same.start()
    assert not exists(sock)  # nothing left listening


def test_serve_has_the_flag() -> None:
    args = build_parser().parse_args(
        ["serve", "--tcp", ":0", "--read-only-token-file", "/x/viewer.token"]
    )
    assert args.read_only_token_file == Path("/x/viewer.token")


async def test_voltui_serve_with_a_viewer_token(short_dir: Path, tmp_path: Path) -> None:
    """`voltui serve --read-only-token-file`: the file is created 0600, and a client that
    presents it over TCP is read-only."""
    sock = short_dir / "s.sock"
    viewer_file, full_file, log = (
        tmp_path / "viewer.token",
        tmp_path / "full.token",
        tmp_path / "log",
    )
    env = {**os.environ, "VOLTUI_DB": str(tmp_path / "x.db"), "VOLTUI_WORKFLOWS_DIR": str(SAMPLES)}
    argv = [sys.executable, "-m", "voltui", "serve", "--socket", str(sock), "--tcp", "127.0.0.1:0"]
    argv += ["--token-file", str(full_file), "--read-only-token-file", str(viewer_file)]
    proc = start(argv, env, log)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        port = None
        while port is None:
            assert proc.poll() is None, log.read_text()
            assert loop.time() < deadline, log.read_text()
            found = re.search(r"tcp 127\.0\.0\.1:(\d+)", log.read_text())
            port = int(found.group(1)) if found else None
            await asyncio.sleep(0.1)
        assert stat.S_IMODE(os.stat(viewer_file).st_mode) == 0o600
        viewer_token = read_token(viewer_file)
        assert viewer_token != read_token(full_file)
        async with RemoteEngine(tcp=("127.0.0.1", port), token=viewer_token, heartbeat=0) as c:
            assert c.read_only is True
            with pytest.raises(proto.ReadOnlyError):
                await c.start_workflow(StartRequest(workflow="simulated_load"))
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)
