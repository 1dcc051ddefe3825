"""Fixtures for the remote tests: a real engine on SQLite, a real server on a Unix socket."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from voltui.config import OrchestratorConfig
from voltui.engine.models import AgentSpec
from voltui.engine.orchestrator import Orchestrator
from voltui.remote.protocol import PROTOCOL_VERSION
from voltui.remote.server import EngineServer

ROOT = Path(__file__).parents[2]
SAMPLES = ROOT / "sample-workflows"
# simulated_load takes about 6 s at speed 1; at this speed about 1.5 s, long enough to cut a
# connection in the middle of it and short enough for the suite.
SIM_SPEED = 4


def sim_agents(speed: float = SIM_SPEED) -> list[AgentSpec]:
    return [
        AgentSpec(
            id="sim",
            kind="simulated",
            capabilities=["simulated"],
            capacity=8,
            config={"speed": speed, "seed": 1},
        )
    ]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short folder for sockets: sun_path allows ~100 bytes and pytest's tmp_path is long."""
    path = Path(tempfile.mkdtemp(prefix="vr-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Orchestrator]:
    orch = Orchestrator(
        OrchestratorConfig(db=tmp_path / "x.db", workflows_dir=SAMPLES, agents=sim_agents())
    )
    await orch.start(watch=False)
    try:
        yield orch
    finally:
        await orch.stop()


@pytest.fixture
def sock(short_dir: Path) -> Path:
    return short_dir / "s.sock"


@pytest.fixture
async def server(engine: Orchestrator, sock: Path) -> AsyncIterator[EngineServer]:
    srv = EngineServer(engine, socket_path=sock)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def until(predicate: Callable[[], bool], limit: float = 10.0, what: str = "") -> None:
    """Wait for a condition without fixed sleeps; fail with `what` after a generous timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.01)


class RawClient:
    """A hand-driven connection for poking the protocol with good and bad frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.hello: dict[str, Any] = {}

    @classmethod
    async def open(
        cls, *, sock: Path | None = None, tcp: tuple[str, int] | None = None
    ) -> RawClient:
        if tcp is not None:
            reader, writer = await asyncio.open_connection(*tcp, limit=1 << 26)
        else:
            reader, writer = await asyncio.open_unix_connection(str(sock), limit=1 << 26)
        client = cls(reader, writer)
        client.hello = await client.recv()
        return client

    async def greet(self, **fields: Any) -> dict[str, Any]:
        hello = {"type": "hello", "protocol": PROTOCOL_VERSION, "read_only": False, **fields}
        await self.send(hello)
        return await self.recv()

    async def send(self, frame: dict[str, Any] | bytes) -> None:
        data = frame if isinstance(frame, bytes) else json.dumps(frame).encode() + b"\n"
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, limit: float = 10.0) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), limit)
        if not line:
            raise EOFError("server closed the connection")
        return json.loads(line)

    async def recv_until(
        self, match: Callable[[dict[str, Any]], bool], limit: float = 10.0
    ) -> dict[str, Any]:
        async def scan() -> dict[str, Any]:
            while True:
                frame = await self.recv(limit)
                if match(frame):
                    return frame

        return await asyncio.wait_for(scan(), limit)

    async def closed_by_server(self, limit: float = 5.0) -> bool:
        async def drain() -> None:
            while await self.reader.read(65536):
                pass

        await asyncio.wait_for(drain(), limit)
        return True

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


OpenRaw = Callable[..., Awaitable[RawClient]]
