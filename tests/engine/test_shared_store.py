"""Many processes, one store: a run driven by another process is seen here and can be cancelled
from here (DESIGN rule 9). A real `voltui run` subprocess shares the SQLite file with an
in-process Orchestrator, as a dashboard and a terminal would."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from voltui.config import OrchestratorConfig
from voltui.engine.models import RunState
from voltui.engine.orchestrator import Orchestrator

REPO = Path(__file__).resolve().parents[2]


def _running_run(db: Path, deadline: float) -> str:
    while time.monotonic() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    rows = conn.execute("SELECT run_id, data FROM steps").fetchall()
            except sqlite3.OperationalError:
                rows = []
            for run_id, data in rows:
                if json.loads(data)["state"] == "running":
                    return str(run_id)
        time.sleep(0.05)
    raise AssertionError("the other process never started its step")


async def test_a_run_of_another_process_is_relayed_and_cancelled_from_here(
    tmp_path: Path,
) -> None:
    db = tmp_path / "shared.db"
    wf = tmp_path / "nap.yaml"
    wf.write_text("id: nap\nsteps:\n  - id: nap\n    run: {command: [sleep, '60']}\n")
    config = OrchestratorConfig(db=db, cancel_grace=2.0)
    async with Orchestrator(config) as here:  # watching: relays other processes' events
        seen: list[tuple[str, bool]] = []

        async def collect() -> None:
            async for batch in here.subscribe("*"):
                seen.extend((e.type, e.foreign) for e in batch)

        collector = asyncio.create_task(collect())
        other = subprocess.Popen(  # noqa: ASYNC220 - a plain child we wait for in a thread
            [sys.executable, "-m", "voltui", "--db", str(db), "run", str(wf)],
            cwd=REPO,
            env={**os.environ, "VOLTUI_DB": str(db)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            run_id = await asyncio.to_thread(_running_run, db, time.monotonic() + 30)
            # Relayed within a second or so of being stored, marked as another process's.
            deadline = time.monotonic() + 5
            while ("step:started", True) not in seen:
                assert time.monotonic() < deadline, seen
                await asyncio.sleep(0.05)
            assert ("workflow:queued", True) in seen  # with its DAG, so a view can draw it
            assert run_id in {r.id for r in await here.list_runs()}

            # Cancelled from here: the owner sees the request in the store and stops the run.
            final = await here.cancel_run(run_id)
            assert final.state is RunState.CANCELLED
            assert await asyncio.to_thread(other.wait, 10) == 1
        finally:
            collector.cancel()
            if other.poll() is None:
                other.kill()
    stored = [e.type for e in await _events(db, run_id)]
    assert stored.count("workflow:cancelled") == 1  # relayed events are not stored twice
    assert stored.count("step:started") == 1


async def _events(db: Path, run_id: str) -> list:
    from voltui.engine.models import EventQuery
    from voltui.engine.store import RunStore

    async with RunStore(db) as store:
        return await store.events(EventQuery(correlation_id=run_id))


async def test_subscribers_only_ever_see_committed_events(tmp_path: Path) -> None:
    # A crash right after a subscriber got an event must not lose that event: what the stream
    # hands out is already in the database (read here through a separate connection).
    db = tmp_path / "durable.db"
    async with Orchestrator(OrchestratorConfig(db=db)) as engine:
        checked = 0

        async def consume() -> None:
            nonlocal checked
            async for batch in engine.subscribe("probe:*"):
                with sqlite3.connect(db) as conn:
                    stored = {
                        r[0]
                        for r in conn.execute("SELECT seq FROM events WHERE type = 'probe:tick'")
                    }
                for event in batch:
                    assert event.seq in stored, f"event {event.seq} was sent before it was stored"
                checked += len(batch)
                if checked >= 300:
                    return

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0)
        for i in range(300):
            engine.dispatcher.emit("probe:tick", "test", {"i": i})
            if i % 50 == 0:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(consumer, 10)
        assert checked == 300
