"""The engine served over a real Unix socket (and TCP) to real clients, all in this process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.remote.conftest import RawClient, until
from voltui.engine.api import EngineAPI, ReplayRequest, StartRequest
from voltui.engine.errors import InvalidInputError, NotFoundError, UserError
from voltui.engine.models import Event, EventQuery, RunState
from voltui.engine.orchestrator import Orchestrator
from voltui.remote import protocol as proto
from voltui.remote.client import RemoteEngine
from voltui.remote.paths import (
    default_socket_path,
    default_token_path,
    load_or_create_token,
    parse_tcp,
    read_token,
)
from voltui.remote.server import EngineServer


class BlockingClient:
    """A client that reads only when asked: its socket buffer fills like a stalled terminal's."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.buffer = b""

    def send(self, frame: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(frame).encode() + b"\n")

    def _line(self) -> bytes:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("server closed the connection")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    async def recv(self) -> dict[str, Any]:
        return json.loads(await asyncio.to_thread(self._line))

    def close(self) -> None:
        self.sock.close()


async def collect(client: RemoteEngine, since: int, into: list[Event]) -> None:
    async for batch in client.subscribe("*", since_seq=since):
        into.extend(batch)


def seqs_of(events: list[Event], run_id: str) -> list[int]:
    return [e.seq for e in events if e.correlation_id == run_id]


# --------------------------------------------------------------------------- the main story


async def test_two_dashboards_share_a_run_and_a_dropped_one_catches_up_exactly_once(
    engine: Orchestrator, server: EngineServer, sock: Path
) -> None:
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    a = RemoteEngine(socket_path=sock)
    b = RemoteEngine(socket_path=sock, heartbeat=0)
    await a.connect()
    await b.connect()
    states: list[str] = []
    b.on_state_change(states.append)
    try:
        assert isinstance(a, EngineAPI)
        assert server.clients == 2
        snap = await b.snapshot()
        seen_a: list[Event] = []
        seen_b: list[Event] = []
        tasks = [
            asyncio.create_task(collect(a, snap.seq, seen_a)),
            asyncio.create_task(collect(b, snap.seq, seen_b)),
        ]
        run = await a.start_workflow(StartRequest(workflow="simulated_load"))
        # A closes its dashboard at once: the run must not care.
        await until(lambda: any(e.correlation_id == run.id for e in seen_a), what="A sees run")
        tasks[0].cancel()
        await a.close()

        # Cut B's connection in the middle of the run, as a dropped SSH session would.
        await until(lambda: sum(e.type == "step:output" for e in seen_b) >= 10, what="B mid-stream")
        cut_at = seen_b[-1].seq
        assert b._writer is not None
        b._writer.transport.abort()
        await until(lambda: "reconnecting" in states and b.state == "connected", what="rejoin")

        final = await b.wait_run(run.id)
        assert final.state == RunState.SUCCEEDED
        stored = await b.events(EventQuery(correlation_id=run.id))
        want = [e.seq for e in stored]
        assert want[-1] > cut_at, "the cut must happen before the run's last event"
        await until(lambda: seqs_of(seen_b, run.id)[-1:] == want[-1:], what="B catches up")
        # Exactly once, in order: no gap from the cut and no replayed duplicate.
        assert seqs_of(seen_b, run.id) == want
        all_seqs = [e.seq for e in seen_b]
        assert all_seqs == sorted(set(all_seqs))
        assert states == ["reconnecting", "connected"]
        tasks[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await a.close()
        await b.close()
    await until(lambda: server.clients == 0, what="clients gone")


async def test_results_and_errors_match_the_embedded_engine(
    engine: Orchestrator, server: EngineServer, sock: Path
) -> None:
    async with RemoteEngine(socket_path=sock) as remote:
        names = {w.id for w in await remote.list_workflows()}
        assert names == {w.id for w in await engine.list_workflows()}
        run = await remote.start_workflow(StartRequest(workflow="simulated_load"))
        assert (await remote.wait_run(run.id)).state == RunState.SUCCEEDED
        detail = await remote.get_run(run.id)
        embedded = await engine.get_run(run.id)
        assert detail.model_dump() == embedded.model_dump()
        assert detail.workflow.source == str(Path(embedded.run.workflow_path or ""))
        assert [r.id for r in await remote.list_runs(RunState.SUCCEEDED)] == [run.id]
        log_lines = await remote.step_log(run.id, "ingest")
        assert log_lines == await engine.step_log(run.id, "ingest")
        assert any("working" in line.line for line in log_lines)

        with pytest.raises(NotFoundError, match="unknown run id"):
            await remote.get_run("no-such-run")
        with pytest.raises(NotFoundError, match="unknown workflow"):
            await remote.start_workflow(StartRequest(workflow="no_such_workflow"))
        with pytest.raises(InvalidInputError):
            await remote.start_workflow(
                StartRequest(workflow="long_running", inputs={"seconds": "many"})
            )
        with pytest.raises(UserError, match="nothing to replay"):
            await remote.replay_run(ReplayRequest(run_id=run.id, mode="failed"))
        with pytest.raises(UserError, match="already ended"):
            await remote.cancel_run(run.id)


async def test_read_only_client_cannot_start_or_cancel(
    engine: Orchestrator, server: EngineServer, sock: Path
) -> None:
    async with (
        RemoteEngine(socket_path=sock, read_only=True) as viewer,
        RemoteEngine(socket_path=sock) as operator,
    ):
        with pytest.raises(proto.ReadOnlyError, match="read-only"):
            await viewer.start_workflow(StartRequest(workflow="simulated_load"))
        assert await engine.list_runs() == []
        run = await operator.start_workflow(StartRequest(workflow="simulated_load"))
        with pytest.raises(proto.ReadOnlyError):
            await viewer.cancel_run(run.id)
        with pytest.raises(proto.ReadOnlyError):
            await viewer.replay_run(ReplayRequest(run_id=run.id))
        # Reading is fine, and the run went on untouched.
        assert (await viewer.get_run(run.id)).run.id == run.id
        assert (await viewer.wait_run(run.id)).state == RunState.SUCCEEDED


# --------------------------------------------------------------------------- socket ownership


async def test_second_server_is_refused_while_the_first_lives(
    engine: Orchestrator, server: EngineServer, sock: Path
) -> None:
    second = EngineServer(engine, socket_path=sock)
    with pytest.raises(UserError) as err:
        await second.start()
    message = str(err.value)
    assert str(sock) in message and f"pid {os.getpid()}" in message
    assert "voltui attach" in message
    # The refused server did not disturb the live one.
    async with RemoteEngine(socket_path=sock) as client:
        assert (await client.snapshot()).seq >= 0


async def test_stale_socket_is_replaced_and_non_socket_refused(
    engine: Orchestrator, short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stale = short_dir / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(stale))
    leftover.close()  # a crashed server: the file stays, nobody listens
    caplog.set_level(logging.INFO, logger="voltui.remote.server")
    srv = EngineServer(engine, socket_path=stale)
    await srv.start()
    try:
        assert "removing stale socket" in caplog.text
        async with RemoteEngine(socket_path=stale) as client:
            await client.ping()
    finally:
        await srv.stop()
    assert not stale.exists()

    plain = short_dir / "plain.sock"
    plain.write_text("not a socket")
    with pytest.raises(UserError, match="not a socket"):
        await EngineServer(engine, socket_path=plain).start()
    assert plain.read_text() == "not a socket"


async def test_no_server_gives_a_clear_message(short_dir: Path) -> None:
    missing = short_dir / "none.sock"
    client = RemoteEngine(socket_path=missing)
    with pytest.raises(UserError) as err:
        await client.connect()
    assert str(missing) in str(err.value) and "voltui serve" in str(err.value)
    assert client.state == "closed"


# --------------------------------------------------------------------------- TCP and tokens


async def test_tcp_requires_the_token_and_records_refusals(
    engine: Orchestrator, sock: Path
) -> None:
    srv = EngineServer(
        engine, socket_path=sock, tcp=("127.0.0.1", 0), token="s3cret-token", auth_fail_window=0.3
    )
    await srv.start()
    try:
        assert srv.tcp_address is not None
        addr = srv.tcp_address
        raw = await RawClient.open(tcp=addr)
        assert raw.hello["auth"] == "token"
        reply = await raw.greet()  # no token at all
        assert reply["error"]["kind"] == "auth"
        assert await raw.closed_by_server()

        with pytest.raises(proto.AuthError, match="wrong token"):
            await RemoteEngine(tcp=addr, token="guess").connect()
        with pytest.raises(proto.AuthError, match="requires a token"):
            await RemoteEngine(tcp=addr).connect()  # refused locally, nothing sent

        async with RemoteEngine(tcp=addr, token="s3cret-token") as good:
            await engine.store.flush()  # a snapshot is as of the newest committed event
            await asyncio.sleep(0.05)
            assert (await good.snapshot()).seq > 0

        # The first refusal is recorded at once, the second with the end of its window.
        await until(
            lambda: len(engine.dispatcher.history(EventQuery(type="remote:auth_failed"))) == 2
        )
        refused = engine.dispatcher.history(EventQuery(type="remote:auth_failed"))
        assert [e.data["reason"] for e in refused] == ["missing token", "wrong token"]
        assert [e.data["count"] for e in refused] == [1, 1]
        assert all(e.data["peer"].startswith("tcp:127.0.0.1:") for e in refused)
        assert all(e.priority == "high" for e in refused)
        assert "s3cret" not in repr([e.data for e in refused]) + repr(refused)
        # The Unix socket needs no token: its 0600 mode is the access control.
        async with RemoteEngine(socket_path=sock) as local:
            await local.ping()
    finally:
        await srv.stop()


def test_token_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "server.token"
    token = load_or_create_token(path)
    assert len(token) >= 40
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_token(path) == token == read_token(path)
    with pytest.raises(UserError, match="not found"):
        read_token(tmp_path / "missing.token")


def test_default_paths_follow_the_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_socket_path() == tmp_path / "voltui" / "voltui.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_socket_path() == tmp_path / "data" / "voltui" / "voltui.sock"
    assert default_token_path() == tmp_path / "data" / "voltui" / "server.token"


def test_parse_tcp_defaults_to_loopback() -> None:
    assert parse_tcp(":8765") == ("127.0.0.1", 8765)
    assert parse_tcp("8765") == ("127.0.0.1", 8765)
    assert parse_tcp("0.0.0.0:1") == ("0.0.0.0", 1)
    assert parse_tcp("[::1]:9") == ("::1", 9)
    with pytest.raises(UserError, match="HOST:PORT"):
        parse_tcp("host:port")


# --------------------------------------------------------------------------- bad input


async def test_bad_frames_get_error_replies_and_nobody_else_notices(
    engine: Orchestrator, short_dir: Path
) -> None:
    sock = short_dir / "b.sock"
    srv = EngineServer(engine, socket_path=sock, max_frame=4096)
    await srv.start()
    good = RemoteEngine(socket_path=sock)
    await good.connect()
    try:
        raw = await RawClient.open(sock=sock)
        welcome = await raw.greet()
        assert welcome["type"] == "welcome"

        await raw.send(b"this is not json\n")
        reply = await raw.recv()
        assert reply["id"] is None and reply["error"]["kind"] == "bad_frame"

        await raw.send(b"[1, 2, 3]\n")
        assert (await raw.recv())["error"]["kind"] == "bad_frame"

        await raw.send(b'{"id": 3, "method": "get_r\n')  # truncated JSON
        assert (await raw.recv())["error"]["kind"] == "bad_frame"

        # Oversized, sent in pieces so the server sees it grow past the limit.
        for _ in range(5):
            await raw.send(b'{"id": 4, "pad": "' + b"x" * 3000)
        await raw.send(b'"}\n')
        reply = await raw.recv()
        assert reply["error"]["kind"] == "frame_too_large" and "4096" in reply["error"]["message"]

        await raw.send({"id": 5, "method": "no_such_method"})
        reply = await raw.recv()
        assert reply == {"id": 5, "error": reply["error"]}
        assert reply["error"]["kind"] == "unknown_method"

        await raw.send({"id": 6, "method": "get_run", "params": {"run": 1}})
        reply = await raw.recv()
        assert reply["id"] == 6 and reply["error"]["kind"] == "invalid_params"

        await raw.send({"type": "gossip"})
        assert (await raw.recv())["error"]["kind"] == "unknown_message"

        # The same connection still works after all of that, and so does everyone else.
        await raw.send({"id": 7, "method": "ping"})
        reply = await raw.recv()
        assert reply["id"] == 7 and reply["result"]["ts"] > 0
        assert (await good.snapshot()).seq >= welcome["seq"]

        # A frame cut off by the end of the connection is answered before the close.
        await raw.send(b'{"id": 8, "method": "pi')
        raw.writer.write_eof()
        reply = await raw.recv()
        assert reply["error"]["kind"] == "bad_frame" and "truncated" in reply["error"]["message"]
        await raw.close()

        # A first frame that is not a hello ends that connection, with a reason.
        raw2 = await RawClient.open(sock=sock)
        await raw2.send(b"GET / HTTP/1.1\n")
        assert (await raw2.recv())["error"]["kind"] == "bad_frame"
        assert await raw2.closed_by_server()
        assert good.state == "connected" and await good.ping() > 0
    finally:
        await good.close()
        await srv.stop()


async def test_incompatible_protocol_gets_a_clear_message(
    server: EngineServer, sock: Path, short_dir: Path
) -> None:
    raw = await RawClient.open(sock=sock)
    assert raw.hello["protocol"] == proto.PROTOCOL_VERSION
    reply = await raw.greet(protocol=99, version="9.9.9")
    assert reply["error"]["kind"] == "protocol"
    assert "protocol 99" in reply["error"]["message"]
    message = reply["error"]["message"]
    assert "9.9.9" in message and "same voltui version" in message
    assert await raw.closed_by_server()

    # And the client refuses a server from the future, in words.
    async def future_server(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        future = {"type": "hello", "protocol": 99, "version": "99.0.0", "pid": 1}
        w.write(proto.encode(future))
        await w.drain()
        await r.read()
        w.close()

    other = short_dir / "future.sock"
    fake = await asyncio.start_unix_server(future_server, path=str(other))
    try:
        client = RemoteEngine(socket_path=other)
        with pytest.raises(proto.ProtocolMismatchError) as err:
            await client.connect()
        assert "protocol 99 (voltui 99.0.0)" in str(err.value)
        assert f"protocol {proto.PROTOCOL_VERSION}" in str(err.value)
    finally:
        fake.close()


# --------------------------------------------------------------------------- back-pressure


async def test_slow_client_is_told_to_resync_and_the_engine_keeps_going(
    engine: Orchestrator, short_dir: Path
) -> None:
    sock = short_dir / "q.sock"
    srv = EngineServer(engine, socket_path=sock, client_queue=1000, stall_timeout=0.5)
    await srv.start()
    good = RemoteEngine(socket_path=sock)
    await good.connect()
    got: list[Event] = []
    try:
        start = engine.dispatcher.last_seq
        reader = asyncio.create_task(collect(good, start, got))
        # A plain blocking socket, so nothing reads it behind our back (asyncio streams would).
        slow = BlockingClient(sock)
        await slow.recv()  # server hello
        slow.send({"type": "hello", "protocol": proto.PROTOCOL_VERSION})
        assert (await slow.recv())["type"] == "welcome"
        slow.send({"id": 1, "method": "subscribe", "params": {"since_seq": start}})
        # ...and never reads again. Meanwhile the engine floods events and runs a workflow.
        run = await good.start_workflow(StartRequest(workflow="simulated_load"))
        pad = "x" * 400
        total = 6000
        for i in range(total):
            engine.dispatcher.emit("test:flood", "test", {"i": i, "pad": pad})
            if i % 25 == 24:
                await asyncio.sleep(0.001)
        assert (await good.wait_run(run.id)).state == RunState.SUCCEEDED
        last = engine.dispatcher.last_seq
        await until(lambda: bool(got) and got[-1].seq >= last, limit=20, what="good client")
        assert sum(e.type == "test:flood" for e in got) == total

        lagged = EventQuery(type="remote:client_lagged")
        await until(lambda: bool(engine.dispatcher.history(lagged)), what="lag noticed")
        (note,) = engine.dispatcher.history(lagged)
        assert "stalled" in note.data["reason"] and note.data["peer"].startswith("unix:")

        # Now read what the slow client was sent: some events, then a resync for its sub.
        frames = []
        while True:
            frame = await slow.recv()
            frames.append(frame)
            if frame.get("type") == "resync":
                break
        assert frames[-1]["sub"] == 1 and "resync" not in [f.get("type") for f in frames[:-1]]
        delivered = sum(len(f.get("events", [])) for f in frames)
        assert delivered < total
        assert srv.clients == 2  # told to resync, not thrown out
        slow.send({"id": 2, "method": "ping"})
        while (reply := await slow.recv()).get("id") != 2:
            pass
        assert reply["result"]["ts"] > 0
        slow.close()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    finally:
        await good.close()
        await srv.stop()


async def test_a_backfill_bigger_than_the_queue_is_paced_not_dropped(
    engine: Orchestrator, short_dir: Path
) -> None:
    sock = short_dir / "p.sock"
    srv = EngineServer(engine, socket_path=sock, client_queue=500)
    await srv.start()
    try:
        start = engine.dispatcher.last_seq
        for i in range(3000):  # what a dashboard missed while its connection was down
            engine.dispatcher.emit("test:old", "test", {"i": i})
        async with RemoteEngine(socket_path=sock) as client:
            got: list[Event] = []
            async for batch in client.subscribe("test:*", since_seq=start):
                got.extend(batch)
                if len(got) >= 3000:
                    break
        assert [e.data["i"] for e in got] == list(range(3000))
        assert not engine.dispatcher.history(EventQuery(type="remote:client_lagged"))
    finally:
        await srv.stop()


async def test_client_side_lag_raises_subscription_lagged(
    engine: Orchestrator, server: EngineServer, sock: Path
) -> None:
    from voltui.engine.api import SubscriptionLagged

    async with RemoteEngine(socket_path=sock, subscriber_queue=50) as client:
        stream = client.subscribe("test:*", since_seq=engine.dispatcher.last_seq)
        first = asyncio.create_task(anext(stream))  # type: ignore[arg-type]
        engine.dispatcher.emit("test:one", "test")
        assert [e.type for e in await first] == ["test:one"]
        for i in range(200):
            engine.dispatcher.emit("test:flood", "test", {"i": i})
            await asyncio.sleep(0)
        await asyncio.sleep(0.2)
        with pytest.raises(SubscriptionLagged):
            async for _ in stream:
                pass
        assert await client.ping() > 0  # the connection itself is fine


async def test_reconnect_false_fails_fast_and_requests_in_flight_are_reported(
    engine: Orchestrator, server: EngineServer, sock: Path
) -> None:
    client = RemoteEngine(socket_path=sock, reconnect=False)
    await client.connect()
    run = await client.start_workflow(StartRequest(workflow="simulated_load"))
    waiting = asyncio.create_task(client.wait_run(run.id))
    await asyncio.sleep(0.05)
    assert client._writer is not None
    client._writer.transport.abort()
    with pytest.raises(proto.ConnectionLostError):
        await waiting
    await until(lambda: client.state == "closed", what="closed")
    with pytest.raises(proto.ConnectionLostError):
        await client.snapshot()
    # The run never noticed.
    assert (await engine.wait_run(run.id)).state == RunState.SUCCEEDED


async def test_serve_forever_stops_on_request_and_cancels_runs(
    engine: Orchestrator, short_dir: Path
) -> None:
    sock = short_dir / "f.sock"
    srv = EngineServer(engine, socket_path=sock)
    serving = asyncio.create_task(srv.serve_forever(on_stop="cancel"))
    await until(sock.exists, what="socket")
    client = RemoteEngine(socket_path=sock, max_backoff=0.2)
    await client.connect()
    run = await client.start_workflow(StartRequest(workflow="simulated_load"))
    srv.request_stop()
    await asyncio.wait_for(serving, 15)
    assert not sock.exists()
    assert (await engine.get_run(run.id)).run.state == RunState.CANCELLED
    await until(lambda: client.state == "reconnecting", what="client notices")
    await client.close()
    assert client.state == "closed"
