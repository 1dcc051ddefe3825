"""Bounded answers (issue 13 item 8): `events` and `step_log` answer in pages, on a big store.

One request without a limit on a store of 2M events took the server from 48 MB to 5.1 GB. Here
a store of 200,000 events and a step with 25,000 log lines: every answer holds at most one page
(asserted on the frame itself, not on RSS), and the client, paging transparently, gets exactly
what the store answers to the same query.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.remote.conftest import RawClient, sim_agents
from voltui.config import OrchestratorConfig
from voltui.engine.errors import NotFoundError
from voltui.engine.models import Event, EventQuery, LogLine, Run
from voltui.engine.orchestrator import Orchestrator
from voltui.engine.store import RunStore
from voltui.remote import protocol as proto
from voltui.remote.client import RemoteEngine
from voltui.remote.server import EngineServer

N_EVENTS = 200_000
N_LINES = 25_000
RUN_ID = "bigrun000001"
TYPES = ("test:output", "test:started", "test:load", "test:succeeded")  # never emitted live


async def build(db: Path) -> None:
    store = RunStore(db)
    await store.open()
    try:
        batch: list[Event] = []
        for seq in range(1, N_EVENTS + 1):
            batch.append(
                Event(
                    seq=seq,
                    ts=1_000_000.0 + seq,
                    type=TYPES[seq % len(TYPES)],
                    source="test",
                    correlation_id=f"run-{seq % 7}",
                    data={"line": f"line {seq} " + "x" * 40},
                )
            )
            if len(batch) == 10_000:
                store.append_events(batch)
                batch = []
        await store.save_run(
            Run(id=RUN_ID, workflow_id="w", workflow_name="W", created_at=1.0, state="succeeded")
        )
        for start in range(0, N_LINES, 5_000):
            store.append_log(
                [
                    LogLine(
                        run_id=RUN_ID,
                        step_id="chatty",
                        attempt=1 + (i % 2),
                        stream="stdout",
                        ts=2.0 + i,
                        line=f"output line {i}",
                    )
                    for i in range(start, start + 5_000)
                ]
            )
        await store.flush()
    finally:
        await store.close()


@pytest.fixture(scope="module")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("big") / "big.db"
    asyncio.run(build(db))
    return db


@pytest.fixture
async def big_engine(big_db: Path, tmp_path: Path) -> AsyncIterator[Orchestrator]:
    db = tmp_path / "big.db"
    shutil.copy(big_db, db)
    engine = Orchestrator(OrchestratorConfig(db=db, agents=sim_agents()))
    await engine.start(watch=False)
    try:
        yield engine
    finally:
        await engine.stop()


@pytest.fixture
async def big_server(big_engine: Orchestrator, sock: Path) -> AsyncIterator[EngineServer]:
    srv = EngineServer(big_engine, socket_path=sock)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def raw_answer(sock: Path, method: str, params: dict[str, object]) -> tuple[int, dict]:
    """The size in bytes of the server's answer line, and the answer."""
    raw = await RawClient.open(sock=sock)
    try:
        assert (await raw.greet())["type"] == "welcome"
        await raw.send({"id": 1, "method": method, "params": params})
        while True:
            line = await asyncio.wait_for(raw.reader.readline(), 60)
            frame = json.loads(line)
            if frame.get("id") == 1:
                return len(line), frame
    finally:
        await raw.close()


async def test_one_answer_holds_one_page(big_server: EngineServer, sock: Path) -> None:
    size, frame = await raw_answer(sock, "events", {"query": {}})
    page = frame["result"]
    assert len(page["events"]) == proto.MAX_EVENTS
    assert page["events"][0]["seq"] == 1  # oldest first, as one query would list them
    assert page["next"] == {"after": proto.MAX_EVENTS, "upto": page["next"]["upto"]}
    assert page["next"]["upto"] >= N_EVENTS
    assert size < 2_000_000  # ~1 MB: one page, not the 200,000 events (over 35 MB)

    size, frame = await raw_answer(
        sock, "step_log", {"run_id": RUN_ID, "step_id": "chatty", "tail": None}
    )
    page = frame["result"]
    assert len(page["lines"]) == proto.MAX_LOG_LINES and page["next"] is not None
    assert size < 2_000_000

    # The cursor continues where the page ended.
    cursor = {"after": 10, "upto": 20}
    _, frame = await raw_answer(sock, "events", {"query": {}, "cursor": cursor})
    assert [e["seq"] for e in frame["result"]["events"]] == list(range(11, 21))
    assert frame["result"]["next"] is None


async def test_bad_cursors_and_limits_are_refused(big_server: EngineServer, sock: Path) -> None:
    _, frame = await raw_answer(sock, "events", {"query": {}, "cursor": {"after": 9, "upto": 1}})
    assert frame["error"]["kind"] == "invalid_params"
    _, frame = await raw_answer(sock, "list_runs", {"limit": proto.MAX_RUNS + 1})
    assert frame["error"]["kind"] == "invalid_params"


@pytest.mark.parametrize(
    "query",
    [
        EventQuery(correlation_id="run-3"),  # about 28,600: six pages
        EventQuery(type="test:out*"),  # GLOB
        EventQuery(type="test:[o]utput", since_seq=120_000),  # fnmatch in Python
        EventQuery(type="test:*", since=1_000_000.0 + 190_001),
        EventQuery(type="test:*", limit=12_345),  # the newest N, more than a page
        EventQuery(type="test:l*", limit=100),  # within a page: the engine answers
        EventQuery(correlation_id="nobody"),
    ],
    ids=lambda q: q.model_dump_json(exclude_none=True),
)
async def test_client_pages_transparently(
    big_engine: Orchestrator, big_server: EngineServer, sock: Path, query: EventQuery
) -> None:
    async with RemoteEngine(socket_path=sock, heartbeat=0) as client:
        got = await client.events(query)
    expected = await big_engine.store.events(query)
    assert [e.seq for e in got] == [e.seq for e in expected]
    assert got == expected


async def test_all_events_arrive_in_order(big_server: EngineServer, sock: Path) -> None:
    async with RemoteEngine(socket_path=sock, heartbeat=0) as client:
        pages = [len(page) async for page in client.events_pages(EventQuery())]
    assert max(pages) == proto.MAX_EVENTS
    assert sum(pages) >= N_EVENTS and len(pages) >= N_EVENTS // proto.MAX_EVENTS


async def test_step_log_pages_transparently(
    big_engine: Orchestrator, big_server: EngineServer, sock: Path
) -> None:
    async with RemoteEngine(socket_path=sock, heartbeat=0) as client:
        for attempt, tail in [(None, None), (None, 15_000), (2, None), (1, 40), (None, 0)]:
            got = await client.step_log(RUN_ID[:6], "chatty", attempt=attempt, tail=tail)
            expected = await big_engine.store.step_log(RUN_ID, "chatty", attempt=attempt, tail=tail)
            assert got == expected, (attempt, tail)
        assert len(await client.step_log(RUN_ID, "chatty")) == N_LINES
        assert await client.step_log(RUN_ID, "quiet") == []
        with pytest.raises(NotFoundError):
            await client.step_log("no-such-run", "chatty")
