"""Retention: finished runs beyond the policy go with everything they own; active runs stay."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from voltui.config import OrchestratorConfig, RetentionConfig
from voltui.engine.api import ReplayRequest
from voltui.engine.models import AgentSpec, RunState, Workflow
from voltui.engine.orchestrator import Orchestrator


def _wf(fail: bool = False) -> Workflow:
    call: dict[str, Any] = {"duration": 0, "output_lines": 2}
    if fail:
        call["fail_attempts"] = 9
    return Workflow.model_validate(
        {"id": "tiny", "steps": [{"id": "a", "run": {"simulated": call}}]}
    )


def _config(tmp_path: Path, **extra: Any) -> OrchestratorConfig:
    return OrchestratorConfig(
        db=tmp_path / "r.db",
        agents=[AgentSpec(id="sim", kind="simulated", capacity=4)],
        **extra,
    )


def _is_dir(folder: str | Path | None) -> bool:
    return Path(folder or "").is_dir()


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


async def _runs(engine: Orchestrator, n: int, *, fail: bool = False) -> list[str]:
    ids = []
    for _ in range(n):
        run = await engine.run_workflow(_wf(fail))
        await engine.wait_run(run.id)
        ids.append(run.id)
    return ids


async def test_prune_keeps_the_newest_runs_and_removes_all_they_own(tmp_path: Path) -> None:
    async with Orchestrator(_config(tmp_path)) as engine:
        old = await _runs(engine, 5)
        new = await _runs(engine, 3)
        for run_id in old:
            assert _is_dir((await engine.get_run(run_id)).run.run_dir)
        await engine.store.flush()

        preview = await engine.prune(keep=3, dry_run=True)
        assert sorted(preview.runs) == sorted(old)
        assert preview.steps == 5 and preview.log_lines == 10 and preview.events > 5 * 3
        assert _count(engine.store.path, "runs") == 8  # a dry run removes nothing

        report = await engine.prune(keep=3)
        assert sorted(report.runs) == sorted(old)
        kept = {r.id for r in await engine.list_runs(limit=100)}
        assert kept == set(new)
        db = engine.store.path
        assert _count(db, "steps") == 3 and _count(db, "logs") == 6
        with sqlite3.connect(db) as conn:
            left = {r[0] for r in conn.execute("SELECT DISTINCT correlation_id FROM events")}
        assert not left & set(old)
        for folder in report.folders:
            assert not _is_dir(folder)
        assert len(report.folders) == 5


async def test_prune_by_age_spares_active_runs_and_shared_replay_folders(
    tmp_path: Path,
) -> None:
    now = [1_000_000.0]
    config = _config(tmp_path)
    async with Orchestrator(config, clock=lambda: now[0]) as engine:
        failed = (await _runs(engine, 1, fail=True))[0]
        now[0] += 10 * 86400
        replay = await engine.replay_run(ReplayRequest(run_id=failed, mode="failed"))
        await engine.wait_run(replay.id)
        now[0] += 40 * 86400
        # The failed run is 50 days old, its replay 40: both beyond 30 days, so both go, and
        # their shared folder with them; a younger run's folder stays.
        young = (await _runs(engine, 1))[0]
        report = await engine.prune(older_than=30 * 86400)
        assert sorted(report.runs) == sorted([failed, replay.id])
        assert young not in report.runs
        detail = await engine.get_run(young)
        assert _is_dir(detail.run.run_dir)


async def test_replay_folder_is_kept_while_the_replay_is_kept(tmp_path: Path) -> None:
    now = [1_000_000.0]
    async with Orchestrator(_config(tmp_path), clock=lambda: now[0]) as engine:
        failed = (await _runs(engine, 1, fail=True))[0]
        folder = (await engine.get_run(failed)).run.run_dir
        now[0] += 40 * 86400
        replay = await engine.replay_run(ReplayRequest(run_id=failed, mode="failed"))
        await engine.wait_run(replay.id)
        report = await engine.prune(older_than=30 * 86400)
        assert report.runs == [failed]
        assert report.folders == []  # the replay (kept) writes into the same folder
        assert _is_dir(folder)


async def test_max_stored_events_is_enforced(tmp_path: Path) -> None:
    engine = Orchestrator(_config(tmp_path, max_stored_events=1000))
    await engine.start(watch=False)  # no periodic pass racing this explicit one
    try:
        for i in range(1500):
            engine.dispatcher.emit("test:filler", "test", {"i": i})
        await engine.store.flush()
        report = await engine.prune(keep=1000)
        assert report.extra_events >= 500
        # The newest 1,000 stayed (an event or two of the engine's may have arrived since).
        assert 1000 <= _count(engine.store.path, "events") < 1010
        with sqlite3.connect(engine.store.path) as conn:
            fillers = conn.execute("SELECT data FROM events WHERE type = 'test:filler'").fetchall()
        assert '"i":1499' in fillers[-1][0] and len(fillers) <= 1000
    finally:
        await engine.stop()


async def test_a_watching_engine_applies_the_policy_and_stays_bounded(tmp_path: Path) -> None:
    retention = RetentionConfig(keep_runs=10, max_age=None, interval=0.2)
    config = _config(tmp_path, retention=retention)
    async with Orchestrator(config) as engine:  # watching, like `voltui serve`
        sizes = []
        for _ in range(4):
            await _runs(engine, 15)
            await engine.store.flush()
            await _wait_for(lambda: _count(engine.store.path, "runs") <= 10)
            sizes.append(_count(engine.store.path, "steps"))
        assert sizes == [10, 10, 10, 10]
        assert any(e.type == "store:pruned" for e in engine.dispatcher.history())


async def _wait_for(cond: Any) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.05)


def test_active_states_are_never_pruned() -> None:
    assert not RunState.RUNNING.finished and not RunState.CANCELLING.finished


async def test_engine_wide_events_older_than_the_kept_runs_go_with_them(tmp_path: Path) -> None:
    now = [1_000_000.0]
    engine = Orchestrator(_config(tmp_path), clock=lambda: now[0])
    await engine.start(watch=False)
    try:
        engine.dispatcher.emit("agent:load", "test", {"id": "old"})
        await _runs(engine, 2)
        now[0] += 100
        engine.dispatcher.emit("agent:load", "test", {"id": "new"})
        kept = await _runs(engine, 2)
        await engine.store.flush()
        report = await engine.prune(keep=2, older_than=365 * 86400)  # both limits, as configured
        assert len(report.runs) == 2
        with sqlite3.connect(engine.store.path) as conn:
            loads = [
                r[0]
                for r in conn.execute(
                    "SELECT data FROM events WHERE type = 'agent:load' AND correlation_id IS NULL"
                )
            ]
        assert not any('"old"' in d for d in loads)
        assert any('"new"' in d for d in loads)
        assert {r.id for r in await engine.list_runs()} == set(kept)
    finally:
        await engine.stop()
