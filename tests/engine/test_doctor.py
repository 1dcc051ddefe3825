"""Damaged stores: a clear message at open, bad rows skipped with a warning, and a doctor that
backs the file up and rebuilds it from what is still readable. Migrations from every earlier
schema version open cleanly."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from voltui.engine import store as store_module
from voltui.engine.doctor import check, repair
from voltui.engine.models import Event, EventQuery, Run, RunState, StepRun
from voltui.engine.store import SCHEMA_VERSION, RunStore, StoreError


def _fill(path: Path, runs: int = 3) -> None:
    async def go() -> None:
        async with RunStore(path) as store:
            for i in range(runs):
                run = Run(id=f"run{i}", workflow_id="wf", workflow_name="wf", created_at=float(i))
                run.state = RunState.SUCCEEDED
                await store.save_run(run)
                await store.save_step(StepRun(run_id=run.id, step_id="a"))
                store.append_events(
                    [Event(seq=i + 1, ts=float(i), type="t:x", source="s", correlation_id=run.id)]
                )
            await store.flush()

    asyncio.run(go())


def _sql(path: Path, statement: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(statement)


def test_a_dropped_table_is_named_at_open_and_repaired(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    _fill(db)
    _sql(db, "DROP TABLE steps")

    async def open_it() -> None:
        async with RunStore(db):
            pass

    with pytest.raises(StoreError, match=r"table 'steps' is missing.*voltui doctor"):
        asyncio.run(open_it())
    report = check(db)
    assert "table 'steps' is missing" in report.problems
    fixed = repair(db)
    assert fixed.backup is not None and Path(fixed.backup).exists()
    assert fixed.kept["runs"] == 3
    assert check(db).healthy

    async def runs_after() -> list[Run]:
        async with RunStore(db) as store:
            return await store.list_runs()

    assert {r.id for r in asyncio.run(runs_after())} == {"run0", "run1", "run2"}


def test_a_malformed_row_is_skipped_with_a_warning_and_dropped_by_repair(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "s.db"
    _fill(db)
    _sql(db, "UPDATE runs SET data = '{not json' WHERE id = 'run1'")
    _sql(db, "UPDATE events SET data = '[]' WHERE seq = 2")
    store_module._BAD_ROWS_LOGGED.clear()

    async def read() -> tuple[list[Run], list[Event]]:
        async with RunStore(db) as store:
            return await store.list_runs(), await store.events(EventQuery())

    with caplog.at_level(logging.WARNING):
        runs, events = asyncio.run(read())
    assert {r.id for r in runs} == {"run0", "run2"}
    assert [e.seq for e in events] == [1, 3]
    assert "damaged Run row" in caplog.text and "voltui doctor" in caplog.text

    report = check(db)
    assert report.bad_rows == {"runs": 1, "events": 1}
    fixed = repair(db)
    assert fixed.dropped["runs"] == 1 and fixed.dropped["events"] == 1
    assert check(db).healthy


def test_a_truncated_file_is_a_clear_error_and_rebuilds_empty(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    _fill(db)
    data = db.read_bytes()
    db.write_bytes(data[:100])  # the header survives, the pages do not
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)

    async def open_it() -> None:
        async with RunStore(db):
            pass

    with pytest.raises(StoreError, match="voltui doctor"):
        asyncio.run(open_it())
    assert not check(db).healthy
    fixed = repair(db)
    assert Path(fixed.backup or "").read_bytes() == data[:100]
    assert check(db).healthy


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION))
def test_every_earlier_schema_version_migrates_with_its_rows(tmp_path: Path, version: int) -> None:
    db = tmp_path / f"v{version}.db"
    with sqlite3.connect(db) as conn:
        for statements in store_module._MIGRATIONS[:version]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")
        run = Run(id="old", workflow_id="wf", workflow_name="wf", created_at=1.0)
        conn.execute(
            "INSERT INTO runs (id, workflow_id, state, created_at, data, workflow) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            ("old", "wf", "succeeded", 1.0, run.model_dump_json(), None),
        )
        conn.execute(
            "INSERT INTO events (seq, ts, type, correlation_id, data) "
            "VALUES (1, 1.0, 't', 'old', ?)",
            (Event(seq=1, ts=1.0, type="t", source="s", correlation_id="old").model_dump_json(),),
        )

    async def read() -> tuple[Run | None, list[Event]]:
        async with RunStore(db) as store:
            store.append_event(Event(seq=2, ts=2.0, type="t", source="s"))
            await store.flush()
            return await store.get_run("old"), await store.events(EventQuery())

    run, events = asyncio.run(read())
    assert run is not None and run.id == "old"
    assert [e.seq for e in events] == [1, 2]
    assert check(db).healthy


def test_repair_keeps_schedule_cursors_and_trigger_claims(tmp_path: Path) -> None:
    """Losing a schedule's cursor would fire it again (or miss it) after a repair."""
    from voltui.engine.automation_state import AutomationState

    db = tmp_path / "s.db"
    _fill(db)

    async def remember() -> None:
        state = AutomationState(db)
        try:
            await state.ensure("nightly:0", 1000.0)
            await state.set_paused("nightly:0", True)
            assert await state.claim_file("inbox", "/in/a.csv", 1, 10)
        finally:
            state.close()

    asyncio.run(remember())
    _sql(db, "DROP TABLE steps")
    fixed = repair(db)
    assert fixed.kept["schedule_state"] == 1 and fixed.kept["trigger_claims"] == 1

    async def after() -> tuple[object, bool]:
        state = AutomationState(db)
        try:
            kept = await state.get("nightly:0")
            again = await state.claim_file("inbox", "/in/a.csv", 1, 10)
        finally:
            state.close()
        return kept, again

    kept, claimed_again = asyncio.run(after())
    assert kept is not None and kept.cursor == 1000.0 and kept.paused  # type: ignore[attr-defined]
    assert not claimed_again  # the file already ran: the repair did not forget it
