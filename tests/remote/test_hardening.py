"""Hostile peers on the wire: refusal floods, deeply nested frames, arbitrary frames.

Issue 13 items 10 and 13, and the property test "protocol frames -> the server answers or
closes, and a good client beside it keeps working".
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.remote.conftest import RawClient, until
from voltui.engine.models import EventQuery
from voltui.engine.orchestrator import Orchestrator
from voltui.remote import protocol as proto
from voltui.remote.client import RemoteEngine
from voltui.remote.server import EngineServer

TOKEN = "s3cret-token-for-tests"


async def refuse_once(addr: tuple[str, int]) -> None:
    """One connection that presents a wrong token and is refused."""
    raw = await RawClient.open(tcp=addr)
    try:
        reply = await raw.greet(token="wrong")
        assert reply["error"]["kind"] == "auth"
    finally:
        await raw.close()


async def test_refused_connections_are_aggregated(engine: Orchestrator, sock: Path) -> None:
    """Each refusal was an event; a flood of them grew the database by megabytes."""
    srv = EngineServer(
        engine, socket_path=sock, tcp=("127.0.0.1", 0), token=TOKEN, auth_fail_window=60.0
    )
    await srv.start()
    assert srv.tcp_address is not None
    try:
        for _ in range(6):
            await asyncio.gather(*(refuse_once(srv.tcp_address) for _ in range(50)))
        events = engine.dispatcher.history(EventQuery(type="remote:auth_failed"))
        # The first is recorded at once, so an attack is visible as it starts...
        assert len(events) == 1 and events[0].data["count"] == 1
        # ...and the server still serves a good client meanwhile.
        async with RemoteEngine(tcp=srv.tcp_address, token=TOKEN, heartbeat=0) as good:
            assert await good.ping() > 0
    finally:
        await srv.stop()
    events = engine.dispatcher.history(EventQuery(type="remote:auth_failed"))
    assert len(events) == 2  # the rest of the window, recorded once when it ended
    assert sum(e.data["count"] for e in events) == 300
    last = events[-1].data
    assert last["hosts"] == {"tcp:127.0.0.1": 299}
    assert last["reasons"] == {"wrong token": 299}
    assert TOKEN not in json.dumps([e.data for e in events])
    await engine.store.flush()
    stored = await engine.store.events(EventQuery(type="remote:auth_failed"))
    assert len(stored) == 2


async def test_refusal_windows_end_when_quiet(engine: Orchestrator, sock: Path) -> None:
    srv = EngineServer(
        engine, socket_path=sock, tcp=("127.0.0.1", 0), token=TOKEN, auth_fail_window=0.2
    )
    await srv.start()
    assert srv.tcp_address is not None
    try:
        await refuse_once(srv.tcp_address)
        await refuse_once(srv.tcp_address)
        history = lambda: engine.dispatcher.history(EventQuery(type="remote:auth_failed"))  # noqa: E731
        await until(lambda: len(history()) == 2)
        await asyncio.sleep(0.5)  # a quiet window ends the series
        assert len(history()) == 2
        await refuse_once(srv.tcp_address)  # a new series starts at once
        await until(lambda: len(history()) == 3)
        assert [e.data["count"] for e in history()] == [1, 1, 1]
    finally:
        await srv.stop()


# --------------------------------------------------------------------------- nesting


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_decode_limits_depth() -> None:
    ok = b'{"a": ' + nested(proto.MAX_DEPTH - 1) + b"}"
    assert proto.decode(ok)["a"] == json.loads(nested(proto.MAX_DEPTH - 1))
    with pytest.raises(ValueError, match="nested deeper"):
        proto.decode(b'{"a": ' + nested(proto.MAX_DEPTH) + b"}")
    with pytest.raises(ValueError, match="nested deeper"):
        proto.decode(b'{"a": ' + nested(200_000) + b"}")  # RecursionError in json.loads
    # Brackets inside strings are text, not nesting.
    assert proto.decode(json.dumps({"s": "[" * 500}).encode())["s"] == "[" * 500


async def test_deep_frame_before_auth_gets_bad_frame(
    engine: Orchestrator, sock: Path, caplog: pytest.LogCaptureFixture
) -> None:
    srv = EngineServer(engine, socket_path=sock, tcp=("127.0.0.1", 0), token=TOKEN)
    await srv.start()
    assert srv.tcp_address is not None
    try:
        with caplog.at_level(logging.WARNING):
            raw = await RawClient.open(tcp=srv.tcp_address)
            await raw.send(b'{"type": "hello", "token": ' + nested(100_000) + b"}\n")
            reply = await raw.recv()
            assert reply["error"]["kind"] == "bad_frame"
            assert "nested deeper" in reply["error"]["message"]
            assert await raw.closed_by_server()
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        async with RemoteEngine(tcp=srv.tcp_address, token=TOKEN, heartbeat=0) as good:
            assert await good.ping() > 0
    finally:
        await srv.stop()


async def test_deep_frame_after_hello_keeps_the_connection(
    server: EngineServer, sock: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = await RawClient.open(sock=sock)
    assert (await raw.greet())["type"] == "welcome"
    with caplog.at_level(logging.WARNING):
        params = b'{"run_id": ' + nested(5_000) + b"}"
        await raw.send(b'{"id": 1, "method": "get_run", "params": ' + params + b"}\n")
        reply = await raw.recv()
    assert reply == {"id": None, "error": reply["error"]}
    assert reply["error"]["kind"] == "bad_frame"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await raw.send({"id": 2, "method": "ping"})
    assert "ts" in (await raw.recv())["result"]
    await raw.close()


# --------------------------------------------------------------------------- arbitrary frames

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
frames = st.one_of(
    st.binary(max_size=200).filter(lambda b: b"\n" not in b),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"id": st.one_of(st.integers(), st.text(max_size=5), st.none(), json_values)},
        optional={
            "method": st.one_of(st.sampled_from(sorted(proto.METHODS)), st.text(max_size=10)),
            "params": json_values,
            "type": st.sampled_from(["hello", "events", "bye", "x"]),
        },
    ).map(lambda d: json.dumps(d).encode()),
    st.integers(1, 3000).map(lambda n: b'{"id": 1, "params": ' + nested(n) + b"}"),
)


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(frames, min_size=1, max_size=8))
async def test_arbitrary_frames_are_answered_and_others_unharmed(
    server: EngineServer, sock: Path, batch: list[bytes]
) -> None:
    """Whatever a client sends, each frame is answered (or the connection closed) and a good
    client on the same server keeps working."""
    async with RemoteEngine(socket_path=sock, heartbeat=0, reconnect=False) as good:
        raw = await RawClient.open(sock=sock)
        try:
            assert (await raw.greet())["type"] == "welcome"
            for frame in batch:
                await raw.send(frame + b"\n")
            # A ping after the batch: its answer proves every frame before it was read.
            await raw.send({"id": "last", "method": "ping"})
            replies: list[dict[str, Any]] = []
            try:
                while True:
                    reply = await raw.recv(limit=10)
                    replies.append(reply)
                    if reply.get("id") == "last":
                        break
            except EOFError:
                pass  # closed: allowed, as long as the good client is unaffected
            for reply in replies:
                assert "error" in reply or "result" in reply or reply.get("type")
        finally:
            await raw.close()
        assert await good.ping() > 0
        assert (await good.snapshot()).seq >= 0
