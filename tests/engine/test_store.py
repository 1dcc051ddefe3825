"""RunStore against a real SQLite file: durability, batching, queries and crash recovery."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from voltui.engine.models import (
    Event,
    EventQuery,
    LogLine,
    Run,
    RunSpec,
    RunState,
    Step,
    StepRun,
    StepState,
    Workflow,
)
from voltui.engine.store import (
    SCHEMA_VERSION,
    AmbiguousRunIdError,
    RunStore,
    StoreError,
    StoreWriteError,
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[RunStore]:
    s = RunStore(tmp_path / "nested" / "dir" / "voltui.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def second(store: RunStore) -> RunStore:
    """Another store on the same file, as a CLI process would open it."""
    other = RunStore(store.path)
    await other.open()
    return other


def make_run(run_id: str, *, created_at: float = 1000.0, **kw: object) -> Run:
    fields: dict[str, object] = {
        "workflow_id": "wf",
        "workflow_name": "Workflow",
        "created_at": created_at,
    }
    fields.update(kw)
    return Run(id=run_id, **fields)  # type: ignore[arg-type]


def make_workflow() -> Workflow:
    return Workflow(
        id="wf",
        name="Workflow",
        timeout="10m",
        steps=[
            Step(id="build", run=RunSpec(command=["make", "all"]), timeout="30s"),
            Step(id="test", depends_on=["build"], run=RunSpec(python="pkg.mod:fn")),
        ],
    )


def ev(seq: int, type_: str = "step:started", *, ts: float | None = None, cid: str | None = None):
    return Event(
        seq=seq,
        ts=float(seq) if ts is None else ts,
        type=type_,
        source="test",
        correlation_id=cid,
        data={"n": seq},
    )


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=5)


async def wait_until(predicate: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- setup


async def test_open_creates_folders_wal_and_schema_version(store: RunStore) -> None:
    assert store.path.parent.is_dir()
    with raw(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "steps", "events", "logs"} <= tables


async def test_newer_schema_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    with raw(path) as conn:
        conn.execute("PRAGMA user_version = 999")
    s = RunStore(path)
    with pytest.raises(StoreError, match="schema version 999"):
        await s.open()
    await s.close()


async def test_reopen_keeps_data_and_version(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    async with RunStore(path) as s:
        await s.save_run(make_run("r1"))
    async with RunStore(path) as s:
        assert (await s.get_run("r1")) is not None


async def test_writes_refused_when_not_open(tmp_path: Path) -> None:
    s = RunStore(tmp_path / "x.db")
    with pytest.raises(StoreError):
        s.append_event(ev(1))
    await s.open()
    await s.close()
    with pytest.raises(StoreError):
        await s.save_run(make_run("r"))
    s.append_log([])  # empty: nothing to refuse
    with pytest.raises(StoreError):
        s.append_event(ev(1))


# --------------------------------------------------------------------------- runs and steps


async def test_run_steps_workflow_round_trip_and_durable(store: RunStore) -> None:
    wf = make_workflow()
    run = make_run("run-1", state=RunState.RUNNING, inputs={"x": [1, {"y": None}]}, owner_pid=7)
    await store.save_run(run, wf)
    steps = [
        StepRun(run_id="run-1", step_id="test", output={"a": [1, 2.5, "s", None, True]}),
        StepRun(run_id="run-1", step_id="build", output=[{"deep": {"x": 1}}], attempt=2),
        StepRun(run_id="run-1", step_id="third", output="plain string"),
    ]
    for s in steps:
        await store.save_step(s)

    # Durable on return: a second store (another connection) sees it right away.
    other = await second(store)
    try:
        assert await other.get_run("run-1") == run
        assert await other.get_workflow("run-1") == wf
        assert await other.get_steps("run-1") == steps  # insertion order, not alphabetical
    finally:
        await other.close()
    assert await store.get_run("missing") is None
    assert await store.get_workflow("missing") is None
    assert await store.get_steps("missing") == []


async def test_upserts_keep_workflow_and_step_order(store: RunStore) -> None:
    wf = make_workflow()
    run = make_run("r")
    await store.save_run(run, wf)
    run.state = RunState.SUCCEEDED
    run.steps_done = 2
    await store.save_run(run)  # no workflow this time: the stored one stays
    got = await store.get_run("r")
    assert got is not None and got.state is RunState.SUCCEEDED and got.steps_done == 2
    assert await store.get_workflow("r") == wf

    a = StepRun(run_id="r", step_id="a")
    b = StepRun(run_id="r", step_id="b")
    await store.save_step(a)
    await store.save_step(b)
    a.state = StepState.SUCCEEDED
    a.output = {"done": True}
    await store.save_step(a)
    got_steps = await store.get_steps("r")
    assert [s.step_id for s in got_steps] == ["a", "b"]
    assert got_steps[0].state is StepState.SUCCEEDED and got_steps[0].output == {"done": True}
    with raw(store.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
        assert conn.execute("SELECT COUNT(*) FROM steps").fetchone()[0] == 2
        assert conn.execute("SELECT state FROM runs").fetchone()[0] == "succeeded"


async def test_save_is_serialised_at_call_time(store: RunStore) -> None:
    run = make_run("r", state=RunState.RUNNING)
    task = asyncio.ensure_future(store.save_run(run))
    await asyncio.sleep(0)  # save_run has started and is waiting for the writer thread
    run.state = RunState.FAILED  # the caller moves on with the same object
    await task
    got = await store.get_run("r")
    assert got is not None and got.state is RunState.RUNNING


async def test_unserialisable_step_output_is_a_clear_error(store: RunStore) -> None:
    with pytest.raises(StoreError, match="JSON"):
        await store.save_step(StepRun(run_id="r", step_id="s", output=object()))
    await store.save_step(StepRun(run_id="r", step_id="s", output=1))  # store still works


async def test_list_runs_filters_order_and_limit(store: RunStore) -> None:
    await store.save_run(make_run("a", created_at=1.0, state=RunState.SUCCEEDED))
    await store.save_run(make_run("b", created_at=3.0, state=RunState.RUNNING))
    await store.save_run(make_run("c", created_at=2.0, state=RunState.SUCCEEDED, workflow_id="o"))
    await store.save_run(make_run("d", created_at=4.0, state=RunState.FAILED, workflow_id="o"))

    assert [r.id for r in await store.list_runs()] == ["d", "b", "c", "a"]
    assert [r.id for r in await store.list_runs(limit=2)] == ["d", "b"]
    assert [r.id for r in await store.list_runs(state=RunState.SUCCEEDED)] == ["c", "a"]
    assert [r.id for r in await store.list_runs(workflow_id="o")] == ["d", "c"]
    got = await store.list_runs(state=RunState.SUCCEEDED, workflow_id="o")
    assert [r.id for r in got] == ["c"]
    assert await store.list_runs(state=RunState.CANCELLED) == []
    # A state change moves the run between filters (the indexed column follows the JSON).
    b = make_run("b", created_at=3.0, state=RunState.SUCCEEDED)
    await store.save_run(b)
    assert [r.id for r in await store.list_runs(state=RunState.SUCCEEDED)] == ["b", "c", "a"]


async def test_find_run_by_exact_id_or_unique_prefix(store: RunStore) -> None:
    for rid in ("abc", "abcd1234", "abce5678", "x*y", "zzz"):
        await store.save_run(make_run(rid))
    assert (await store.find_run("abc")).id == "abc"  # type: ignore[union-attr]  # exact wins
    assert (await store.find_run("abcd")).id == "abcd1234"  # type: ignore[union-attr]
    assert (await store.find_run("z")).id == "zzz"  # type: ignore[union-attr]
    assert (await store.find_run("x*")).id == "x*y"  # type: ignore[union-attr]  # literal *
    assert await store.find_run("q") is None
    assert await store.find_run("") is None
    assert await store.find_run("x?") is None  # no glob magic leaks through
    with pytest.raises(AmbiguousRunIdError) as info:
        await store.find_run("ab")
    assert info.value.matches == ["abc", "abcd1234", "abce5678"]
    assert "ab" in str(info.value)


# --------------------------------------------------------------------------- events


async def test_appended_events_commit_without_flush(store: RunStore) -> None:
    store.append_event(ev(1))
    store.append_events([ev(2), ev(3)])
    other = await second(store)
    try:

        async def visible() -> bool:
            return await other.max_seq() == 3

        await wait_until(visible)  # the 100 ms batch timer committed them
    finally:
        await other.close()


async def test_events_are_batched_into_few_transactions(store: RunStore) -> None:
    before = store.stats().commits
    for i in range(1, 2501):
        store.append_event(ev(i))
    await store.flush()
    stats = store.stats()
    assert stats.events_written == 2500
    # One commit per event would be 2,500; batching makes it a handful.
    assert stats.commits - before <= 20
    assert await store.max_seq() == 2500


async def test_flush_and_saves_preserve_order(store: RunStore) -> None:
    store.append_events([ev(1), ev(2)])
    store.append_log(
        [LogLine(run_id="r", step_id="s", attempt=1, stream="stdout", ts=1.0, line="hello")]
    )
    await store.save_run(make_run("r"))  # appended before: committed by the time this returns
    other = await second(store)
    try:
        assert await other.max_seq() == 2
        assert [ln.line for ln in await other.step_log("r", "s")] == ["hello"]
        store.append_event(ev(3))
        await store.flush()
        assert await other.max_seq() == 3
    finally:
        await other.close()


async def test_event_query_filters(store: RunStore) -> None:
    store.append_events(
        [
            ev(1, "workflow:started", cid="r1"),
            ev(2, "step:started", cid="r1"),
            ev(3, "step:output", cid="r1"),
            ev(4, "agent:load"),
            ev(5, "step:started", cid="r2"),
            ev(6, "step:succeeded", cid="r2"),
            ev(7, "workflow:succeeded", cid="r2"),
        ]
    )
    await store.flush()

    async def seqs(**kw: object) -> list[int]:
        return [e.seq for e in await store.events(EventQuery(**kw))]  # type: ignore[arg-type]

    assert await seqs() == [1, 2, 3, 4, 5, 6, 7]
    assert await seqs(type="step:*") == [2, 3, 5, 6]
    assert await seqs(type="step:started") == [2, 5]
    assert await seqs(type="*:succeeded") == [6, 7]
    assert await seqs(type="step:?utput") == [3]
    assert await seqs(type="[aw]*") == [1, 4, 7]  # bracket sets: fnmatch semantics
    assert await seqs(type="[!aw]*") == [2, 3, 5, 6]
    assert await seqs(since=5.0) == [5, 6, 7]  # ts inclusive
    assert await seqs(since_seq=5) == [6, 7]  # seq exclusive
    assert await seqs(correlation_id="r1") == [1, 2, 3]
    assert await seqs(limit=2) == [6, 7]  # newest N, oldest first
    assert await seqs(type="step:*", correlation_id="r2", limit=1) == [6]
    assert await seqs(type="step:*", since_seq=2, since=4.0) == [5, 6]
    got = await store.events(EventQuery(type="agent:load"))
    assert got == [ev(4, "agent:load")]  # full round trip of the model


async def test_events_range_and_max_seq(store: RunStore) -> None:
    assert await store.max_seq() == 0
    assert await store.events_range(0, 100) == []
    store.append_events([ev(i) for i in range(1, 11)])
    await store.flush()
    assert await store.max_seq() == 10
    assert [e.seq for e in await store.events_range(3, 6)] == [4, 5, 6]
    assert [e.seq for e in await store.events_range(8, 100)] == [9, 10]
    assert await store.events_range(5, 5) == []


async def test_duplicate_seq_does_not_sink_the_batch(store: RunStore) -> None:
    store.append_events([ev(1), ev(2)])
    await store.flush()
    store.append_events([ev(2, "dup"), ev(3)])
    await store.flush()
    got = await store.events(EventQuery())
    assert [(e.seq, e.type) for e in got] == [
        (1, "step:started"),
        (2, "step:started"),
        (3, "step:started"),
    ]


async def test_event_data_that_is_not_json_is_kept_as_text(store: RunStore) -> None:
    store.append_event(Event(seq=1, ts=1.0, type="x", source="t", data={"obj": object()}))
    await store.flush()
    (got,) = await store.events(EventQuery())
    assert isinstance(got.data["obj"], str)


async def test_twenty_thousand_events_persist_after_close(tmp_path: Path) -> None:
    path = tmp_path / "many.db"
    s = RunStore(path)
    await s.open()
    for start in range(1, 20_001, 100):
        s.append_events([ev(i, cid="run") for i in range(start, start + 100)])
    await s.close()  # no flush: close must commit everything queued

    async with RunStore(path) as s2:
        assert await s2.max_seq() == 20_000
        got = await s2.events_range(0, 20_000)
        assert [e.seq for e in got] == list(range(1, 20_001))
        assert got[-1].data == {"n": 20_000}


async def test_prune_events_keeps_newest(store: RunStore) -> None:
    store.append_events([ev(i) for i in range(1, 101)])
    assert await store.prune_events(30) == 70  # pending appends are committed first
    assert [e.seq for e in await store.events(EventQuery())] == list(range(71, 101))
    assert await store.prune_events(1000) == 0
    assert await store.prune_events(0) == 30
    assert await store.max_seq() == 0
    with pytest.raises(ValueError):
        await store.prune_events(-1)


# --------------------------------------------------------------------------- logs


async def test_step_log_attempts_and_tail(store: RunStore) -> None:
    lines = [
        LogLine(run_id="r", step_id="s", attempt=a, stream="stdout", ts=float(i), line=f"{a}-{i}")
        for a in (1, 2)
        for i in range(5)
    ]
    lines.insert(
        3, LogLine(run_id="r", step_id="other", attempt=1, stream="stderr", ts=0, line="x")
    )
    store.append_log(lines[:4])
    store.append_log(lines[4:])
    await store.flush()

    all_s = await store.step_log("r", "s")
    assert [ln.line for ln in all_s] == [f"{a}-{i}" for a in (1, 2) for i in range(5)]
    assert all_s[0] == lines[0]
    assert [ln.line for ln in await store.step_log("r", "s", attempt=2)] == [
        f"2-{i}" for i in range(5)
    ]
    assert [ln.line for ln in await store.step_log("r", "s", tail=3)] == ["2-2", "2-3", "2-4"]
    assert [ln.line for ln in await store.step_log("r", "s", attempt=1, tail=2)] == ["1-3", "1-4"]
    other = await store.step_log("r", "other")
    assert [(ln.line, ln.stream) for ln in other] == [("x", "stderr")]
    assert await store.step_log("r", "nope") == []


# --------------------------------------------------------------------------- interrupted runs


async def _seed_active_runs(store: RunStore, pids: dict[str, int | None]) -> None:
    for i, (rid, pid) in enumerate(pids.items()):
        await store.save_run(
            make_run(rid, created_at=float(i), state=RunState.RUNNING, owner_pid=pid)
        )
        await store.save_step(StepRun(run_id=rid, step_id="done", state=StepState.SUCCEEDED))
        await store.save_step(
            StepRun(run_id=rid, step_id="busy", state=StepState.RUNNING, started_at=5.0)
        )
        await store.save_step(StepRun(run_id=rid, step_id="later", state=StepState.PENDING))


async def test_mark_interrupted_with_fake_liveness(store: RunStore) -> None:
    await _seed_active_runs(store, {"alive": 111, "dead": 222, "orphan": None})
    await store.save_run(make_run("queued-dead", state=RunState.QUEUED, owner_pid=222))
    await store.save_run(make_run("finished", state=RunState.SUCCEEDED, owner_pid=222))
    seen: list[int | None] = []

    def is_alive(pid: int | None) -> bool:
        seen.append(pid)
        return pid == 111

    changed = await store.mark_interrupted(is_alive)
    assert sorted(changed) == ["dead", "orphan", "queued-dead"]
    assert 222 in seen and 111 in seen and None in seen

    dead = await store.get_run("dead")
    assert dead is not None and dead.state is RunState.INTERRUPTED
    assert dead.finished_at is not None
    assert (
        dead.error == "interrupted: the engine process (pid 222) stopped while the run was active"
    )
    steps = {s.step_id: s for s in await store.get_steps("dead")}
    assert steps["done"].state is StepState.SUCCEEDED and steps["done"].error is None
    assert steps["busy"].state is StepState.CANCELLED and steps["busy"].error == "interrupted"
    assert steps["later"].state is StepState.CANCELLED
    assert [s.state for s in await store.get_steps("alive")] == [
        StepState.SUCCEEDED,
        StepState.RUNNING,
        StepState.PENDING,
    ]
    finished = await store.get_run("finished")
    assert finished is not None and finished.state is RunState.SUCCEEDED
    interrupted = await store.list_runs(state=RunState.INTERRUPTED)
    assert [r.id for r in interrupted] == ["queued-dead", "orphan", "dead"]
    assert await store.mark_interrupted(is_alive) == []  # idempotent


async def test_mark_interrupted_with_a_real_dead_process(store: RunStore) -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await proc.wait()  # reaped: the pid no longer exists
    await _seed_active_runs(store, {"theirs": proc.pid, "mine": os.getpid(), "nobody": None})

    changed = await store.mark_interrupted()
    assert sorted(changed) == ["nobody", "theirs"]
    theirs = await store.get_run("theirs")
    assert theirs is not None and theirs.state is RunState.INTERRUPTED
    assert f"pid {proc.pid}" in (theirs.error or "")
    mine = await store.get_run("mine")
    assert mine is not None and mine.state is RunState.RUNNING

    # Seen from a second store in the same process: this process's runs are still alive.
    other = await second(store)
    try:
        assert await other.mark_interrupted() == []
    finally:
        await other.close()


# --------------------------------------------------------------------------- write failures


async def test_failed_append_batch_is_reported_by_the_next_flush(store: RunStore) -> None:
    # A trigger created by another connection makes the writer's inserts fail, like a full disk.
    with raw(store.path) as conn:
        conn.execute(
            "CREATE TRIGGER fail_events BEFORE INSERT ON events "
            "BEGIN SELECT RAISE(ABORT, 'simulated disk full'); END"
        )
    store.append_events([ev(1), ev(2)])
    with pytest.raises(StoreWriteError, match="simulated disk full"):
        await store.flush()
    assert store.stats().write_errors >= 1

    with raw(store.path) as conn:
        conn.execute("DROP TRIGGER fail_events")
    await store.flush()  # reported once; the writer thread is still alive and working
    store.append_event(ev(3))
    await store.save_run(make_run("r"))
    assert [e.seq for e in await store.events(EventQuery())] == [3]


async def test_lost_appends_fail_the_next_save(store: RunStore) -> None:
    with raw(store.path) as conn:
        conn.execute(
            "CREATE TRIGGER fail_logs BEFORE INSERT ON logs "
            "BEGIN SELECT RAISE(ABORT, 'simulated disk full'); END"
        )
    store.append_log([LogLine(run_id="r", step_id="s", attempt=1, stream="stdout", ts=1, line="l")])

    async def failed() -> bool:
        return store.stats().write_errors > 0

    await wait_until(failed)  # the timer batch failed with nobody awaiting it
    with pytest.raises(StoreWriteError, match="log line"):
        await store.save_run(make_run("r"))
    await store.save_run(make_run("r"))  # reported once, then writes go on
    assert await store.get_run("r") is not None


async def test_failed_save_raises_and_leaves_the_batch_intact(store: RunStore) -> None:
    with raw(store.path) as conn:
        conn.execute(
            "CREATE TRIGGER fail_steps BEFORE INSERT ON steps "
            "BEGIN SELECT RAISE(ABORT, 'simulated failure'); END"
        )
    store.append_event(ev(1))
    with pytest.raises(StoreWriteError, match="simulated failure"):
        await store.save_step(StepRun(run_id="r", step_id="s"))
    await store.flush()  # the event in the same batch was still committed
    assert await store.max_seq() == 1
    assert await store.get_steps("r") == []


CHILD = """
import asyncio, sys
from voltui.engine.models import Run, StepRun
from voltui.engine.store import RunStore

async def main():
    async with RunStore(sys.argv[1]) as s:
        for i in range(40):
            await s.save_run(Run(id=f"child-{i}", workflow_id="w", workflow_name="w", created_at=i))
            await s.save_step(StepRun(run_id=f"child-{i}", step_id="s", output={"i": i}))
        print(len(await s.list_runs(limit=1000)))

asyncio.run(main())
"""


async def test_two_processes_write_the_same_file(store: RunStore) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(store.path), stdout=asyncio.subprocess.PIPE
    )
    for i in range(40):
        await store.save_run(make_run(f"parent-{i}", created_at=float(i)))
        store.append_event(ev(i + 1))
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert int(out) >= 40
    await store.flush()
    runs = await store.list_runs(limit=1000)
    assert len(runs) == 80
    assert [s.output for s in await store.get_steps("child-39")] == [{"i": 39}]


async def test_dead_writer_thread_fails_loudly(
    store: RunStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_commit(conn: sqlite3.Connection, batch: object) -> None:
        raise RuntimeError("bug in the writer")

    monkeypatch.setattr(store, "_commit", broken_commit)
    with pytest.raises(StoreWriteError, match="writer thread stopped"):
        # Failed, not left hanging (wait_for only turns a regression into a clean failure).
        await asyncio.wait_for(store.flush(), 10)
    assert "writer thread stopped" in caplog.text
    with pytest.raises(StoreWriteError, match="bug in the writer"):
        await store.save_run(make_run("r"))
    with pytest.raises(StoreWriteError):
        store.append_event(ev(1))
    await store.close()  # still closes cleanly


async def test_dead_writer_is_reported_by_close_if_nobody_awaited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = RunStore(tmp_path / "dead.db")
    await s.open()

    def broken_commit(conn: sqlite3.Connection, batch: object) -> None:
        raise RuntimeError("bug in the writer")

    monkeypatch.setattr(s, "_commit", broken_commit)
    s.append_event(ev(1))

    async def dead() -> bool:
        return s._fatal is not None

    await wait_until(dead)
    with pytest.raises(StoreWriteError, match="writer thread stopped"):
        await s.close()
    await s.close()  # once reported, closing again is quiet


async def test_seq_leases_are_disjoint_across_stores_on_one_file(tmp_path: Path) -> None:
    """Two engines sharing a file must never hand out the same event number."""
    path = tmp_path / "shared.db"
    a, b = RunStore(path), RunStore(path)
    await a.open()
    await b.open()
    try:
        first = a.lease_seq_block(10)
        second = b.lease_seq_block(10)
        third = a.lease_seq_block(10)
        blocks = [first, second, third]
        assert all(hi - lo == 10 for lo, hi in blocks)
        ends = sorted(blocks)
        for i in range(len(ends) - 1):
            assert ends[i][1] <= ends[i + 1][0], blocks
    finally:
        await a.close()
        await b.close()


async def test_step_cache_survives_reopen_and_expires(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    store = RunStore(path)
    await store.open()
    await store.cache_put("k1", {"answer": 42}, expires_at=None)
    await store.cache_put("k2", [1, 2], expires_at=100.0)
    await store.close()
    store = RunStore(path)
    await store.open()
    try:
        assert await store.cache_get("k1", now=1e12) == (True, {"answer": 42})
        assert await store.cache_get("k2", now=99.0) == (True, [1, 2])
        assert await store.cache_get("k2", now=101.0) == (False, None)
        assert await store.cache_get("missing", now=0.0) == (False, None)
    finally:
        await store.close()
