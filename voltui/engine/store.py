"""RunStore: runs, step states, events and step logs in one SQLite file.

The engine is "durable before reported": a step is shown succeeded only once its result is
committed. SQLite is blocking, so no SQLite call ever runs on the event loop:

* one writer thread owns the write connection and drains a queue. `save_*` and other awaited
  writes wait for their commit; `append_*` only enqueue, and the writer commits those rows in
  batches (at most every 100 ms or every 1,000 rows) so an event flood costs a few transactions,
  not one per event. Everything goes through the one queue, so writes commit in call order.
* reads run in `asyncio.to_thread` on a separate read-only connection guarded by a lock.

Several processes may open the same file (a server and a CLI `voltui list`); WAL mode lets
readers work while a writer commits, and `busy_timeout` makes writers wait for each other
instead of failing.

Pydantic models are stored whole as JSON, next to indexed copies of the columns we filter on,
so a model can gain fields without a migration. `PRAGMA user_version` numbers the schema; add
an entry to `_MIGRATIONS` for each change.
"""

from __future__ import annotations

import asyncio
import errno
import fnmatch
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil

from voltui.engine.errors import UserError, VoltuiError
from voltui.engine.models import (
    Approval,
    Event,
    EventQuery,
    LogLine,
    Run,
    RunState,
    StepRun,
    StepState,
    Workflow,
)
from voltui.engine.private import secure_store

__all__ = [
    "BATCH_INTERVAL",
    "BATCH_ROWS",
    "SCHEMA_VERSION",
    "AmbiguousRunIdError",
    "PruneReport",
    "RunStore",
    "StoreError",
    "StoreStats",
    "StoreWriteError",
    "default_is_alive",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

BATCH_INTERVAL = 0.1
"""Longest time (seconds) an appended event or log line waits before its batch is committed."""
BATCH_ROWS = 1000
"""Appended rows that trigger a commit without waiting for `BATCH_INTERVAL`."""
BUSY_TIMEOUT_MS = 5000
FULL_RETRY = 1.0
"""Seconds between attempts to commit a batch while the disk is full."""

_ACTIVE_RUN_STATES = tuple(s.value for s in RunState if not s.finished)
_UNFINISHED_STEP_STATES = (
    StepState.PENDING.value,
    StepState.WAITING.value,
    StepState.RUNNING.value,
    StepState.RETRYING.value,
)

# One list of statements per schema version; entry i upgrades version i to i + 1. Never edit a
# released entry: append a new one, because files written by older versions must still open.
_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS runs (
            id TEXT PRIMARY KEY,
            workflow_id TEXT NOT NULL,
            state TEXT NOT NULL,
            created_at REAL NOT NULL,
            owner_pid INTEGER,
            data TEXT NOT NULL,
            workflow TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at)",
        "CREATE INDEX IF NOT EXISTS runs_state ON runs (state, created_at)",
        "CREATE INDEX IF NOT EXISTS runs_workflow ON runs (workflow_id, created_at)",
        # `pos` (the rowid) keeps insertion order; an upsert keeps the row, hence the order.
        """CREATE TABLE IF NOT EXISTS steps (
            pos INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            step_id TEXT NOT NULL,
            state TEXT NOT NULL,
            data TEXT NOT NULL,
            UNIQUE (run_id, step_id)
        )""",
        """CREATE TABLE IF NOT EXISTS events (
            seq INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            type TEXT NOT NULL,
            correlation_id TEXT,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS events_ts ON events (ts)",
        "CREATE INDEX IF NOT EXISTS events_type ON events (type)",
        "CREATE INDEX IF NOT EXISTS events_correlation ON events (correlation_id, seq)",
        """CREATE TABLE IF NOT EXISTS logs (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            step_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            stream TEXT NOT NULL,
            ts REAL NOT NULL,
            line TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS logs_step ON logs (run_id, step_id, attempt, id)",
    ],
    [
        # Event numbers are leased in disjoint blocks so engines sharing the file never clash.
        """CREATE TABLE IF NOT EXISTS seq_lease (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            next INTEGER NOT NULL
        )""",
        # Step results kept across processes, so a replay in a new `voltui` is still a hit.
        """CREATE TABLE IF NOT EXISTS step_cache (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            expires_at REAL
        )""",
    ],
    [
        # The definition lives apart from the run row: the row is rewritten on every state
        # change and a 10,000-step definition is megabytes. Old rows keep `runs.workflow`.
        """CREATE TABLE IF NOT EXISTS run_workflows (
            run_id TEXT PRIMARY KEY,
            workflow TEXT NOT NULL
        )""",
        # Requests any process sharing the file can make of a run's owner (cancel), which the
        # owner polls; `handled_at` is set once acted on.
        """CREATE TABLE IF NOT EXISTS run_requests (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            requested_at REAL NOT NULL,
            requested_by TEXT,
            handled_at REAL
        )""",
        "ALTER TABLE events ADD COLUMN ins INTEGER",
        "CREATE INDEX IF NOT EXISTS events_ins ON events (ins)",
    ],
    [
        # Approval steps: the request is written by the run's owner, the decision by any
        # process sharing the file (`voltui approve`, a dashboard, a server); first one wins.
        """CREATE TABLE IF NOT EXISTS approvals (
            run_id TEXT NOT NULL,
            step_id TEXT NOT NULL,
            decision TEXT,
            data TEXT NOT NULL,
            PRIMARY KEY (run_id, step_id)
        )""",
    ],
]
SCHEMA_VERSION = len(_MIGRATIONS)

# What the current schema must have: table -> columns the code reads or writes.
EXPECTED_SCHEMA: dict[str, tuple[str, ...]] = {
    "runs": ("id", "workflow_id", "state", "created_at", "owner_pid", "data", "workflow"),
    "steps": ("pos", "run_id", "step_id", "state", "data"),
    "events": ("seq", "ts", "type", "correlation_id", "data", "ins"),
    "logs": ("id", "run_id", "step_id", "attempt", "stream", "ts", "line"),
    "seq_lease": ("id", "next"),
    "step_cache": ("key", "value", "expires_at"),
    "run_workflows": ("run_id", "workflow"),
    "run_requests": ("id", "run_id", "kind", "requested_at", "requested_by", "handled_at"),
    "approvals": ("run_id", "step_id", "decision", "data"),
}


def schema_problems(conn: sqlite3.Connection) -> list[str]:
    """Missing tables or columns, each said in a few words; empty when the schema is whole."""
    problems = []
    for table, columns in EXPECTED_SCHEMA.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if not have:
            problems.append(f"table {table!r} is missing")
            continue
        lost = [c for c in columns if c not in have]
        if lost:
            problems.append(f"table {table!r} lacks column(s) {', '.join(lost)}")
    return problems


# --------------------------------------------------------------------------- errors


class StoreError(VoltuiError):
    """The run store cannot be used as asked (not open, closed, or a newer schema)."""


class StoreWriteError(StoreError):
    """A write did not reach the database; the message names the cause (e.g. disk full)."""


class AmbiguousRunIdError(UserError):
    """A run id prefix that matches more than one run; the user must type more of it."""

    def __init__(self, prefix: str, matches: list[str]) -> None:
        self.prefix = prefix
        self.matches = matches
        shown = ", ".join(matches)
        super().__init__(
            f"run id prefix {prefix!r} matches several runs ({shown}); type more characters"
        )


# --------------------------------------------------------------------------- helpers


def default_is_alive(pid: int | None) -> bool:
    """Whether the engine process that owns a run may still be driving it.

    A run owned by this very process counts as alive: a store opened twice in one process must
    not interrupt its own runs. An unknown owner counts as dead, since nobody can finish it.
    """
    if pid is None:
        return False
    if pid == os.getpid():
        return True
    return psutil.pid_exists(pid)


def _is_full(exc: BaseException) -> bool:
    """SQLITE_FULL or ENOSPC: the disk (or the database's page limit) has no room."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()


def _glob_for(pattern: str) -> str | None:
    """The SQLite GLOB equal to an fnmatch pattern, or None when only Python can match it.

    GLOB and fnmatchcase agree on `*`, `?` and literal characters; bracket sets differ (`[!a]`
    versus `[^a]`, unclosed brackets), so those fall back to a Python function. GLOB with a
    literal prefix can use the `type` index.
    """
    if "[" in pattern or "]" in pattern:
        return None
    return pattern


def event_filters(query: EventQuery) -> tuple[list[str], list[Any]]:
    """The WHERE terms (and their arguments) of an events query, without its limit; the one
    definition the store and the server's paged answers share."""
    where: list[str] = []
    args: list[Any] = []
    if query.type is not None:
        glob = _glob_for(query.type)
        if glob is None:
            where.append("voltui_fnmatch(type, ?)")
            args.append(query.type)
        elif not any(c in glob for c in "*?"):
            where.append("type = ?")
            args.append(glob)
        else:
            where.append("type GLOB ?")
            args.append(glob)
    if query.since is not None:
        where.append("ts >= ?")
        args.append(query.since)
    if query.since_seq is not None:
        where.append("seq > ?")
        args.append(query.since_seq)
    if query.correlation_id is not None:
        where.append("correlation_id = ?")
        args.append(query.correlation_id)
    return where, args


def _glob_escape(text: str) -> str:
    """`text` as a literal inside a GLOB pattern."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _dump_event(event: Event) -> str:
    # fallback=str: an odd value in `data` must not sink the whole batch it travels in.
    return event.model_dump_json(fallback=str)


def _now() -> float:
    return time.time()


M = TypeVar("M", Run, StepRun, Event, Workflow)
_BAD_ROWS_LOGGED: set[tuple[str, str]] = set()


def _parse(model: type[M], data: Any, where: str) -> M | None:
    """A stored row as a model, or None (with one warning naming it) when it is damaged.

    A single malformed row, written by a bug, a crash of an old version or a hand edit,
    must not make every listing of the store fail: it is skipped and named once.
    """
    try:
        return model.model_validate_json(data)
    except Exception as exc:
        key = (model.__name__, where)
        if key not in _BAD_ROWS_LOGGED:
            _BAD_ROWS_LOGGED.add(key)
            logger.warning(
                "run store: skipped a damaged %s row (%s): %s; `voltui doctor` checks the file",
                model.__name__,
                where,
                str(exc).splitlines()[0],
            )
        return None


def _run_dir_of(data: str) -> str | None:
    try:
        value = json.loads(data).get("run_dir")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _parse_all(model: type[M], rows: Sequence[Any], where: str, col: int = 0) -> list[M]:
    out = []
    for r in rows:
        parsed = _parse(model, r[col], f"{where}, key {r[-1]}" if len(r) > 1 else where)
        if parsed is not None:
            out.append(parsed)
    return out


def step_row(step: StepRun) -> tuple[str, str, str, str]:
    """The row a step state is stored as; made at call time because the engine keeps mutating
    the same StepRun. Raises StoreError for an output that is not JSON."""
    try:
        data = step.model_dump_json()
    except Exception as exc:
        raise StoreError(
            f"step {step.step_id!r} of run {step.run_id} cannot be saved: its output is not "
            f"JSON-serialisable ({exc})"
        ) from exc
    return (step.run_id, step.step_id, step.state.value, data)


def run_row(run: Run) -> tuple[Any, ...]:
    return (
        run.id,
        run.workflow_id,
        run.state.value,
        run.created_at,
        run.owner_pid,
        run.model_dump_json(),
    )


def _upsert_steps(conn: sqlite3.Connection, rows: Sequence[tuple[str, str, str, str]]) -> None:
    conn.executemany(
        """INSERT INTO steps (run_id, step_id, state, data) VALUES (?, ?, ?, ?)
        ON CONFLICT (run_id, step_id) DO UPDATE SET
            state = excluded.state, data = excluded.data""",
        rows,
    )


def _upsert_runs(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    conn.executemany(
        """INSERT INTO runs (id, workflow_id, state, created_at, owner_pid, data)
        VALUES (?, ?, ?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET
            workflow_id = excluded.workflow_id, state = excluded.state,
            created_at = excluded.created_at, owner_pid = excluded.owner_pid,
            data = excluded.data""",
        rows,
    )


# --------------------------------------------------------------------------- writer queue items


@dataclass(slots=True)
class _Append:
    """Rows that need no acknowledgement; committed with the next batch."""

    events: Sequence[Event] = ()
    logs: Sequence[LogLine] = ()
    steps: Sequence[tuple[str, str, str, str]] = ()
    runs: Sequence[tuple[Any, ...]] = ()
    upto: int = 0
    """Every event seq up to this one is covered once this item commits (see note_seq)."""

    @property
    def rows(self) -> int:
        return len(self.events) + len(self.logs) + len(self.steps) + len(self.runs)


@dataclass(slots=True)
class _Call:
    """A write the caller awaits: `fn(conn)` runs inside the batch transaction."""

    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    is_flush: bool = False
    stop: bool = False


@dataclass(slots=True)
class PruneReport:
    """What a retention pass removed (or would remove)."""

    runs: list[str] = field(default_factory=list)
    steps: int = 0
    log_lines: int = 0
    events: int = 0
    folders: list[str] = field(default_factory=list)
    """Run folders no remaining run uses; the caller deletes them."""
    extra_events: int = 0
    """Events beyond `max_stored_events` (not tied to a pruned run)."""


@dataclass(slots=True)
class StoreStats:
    """Writer figures for health panels and benchmarks."""

    commits: int = 0
    events_written: int = 0
    logs_written: int = 0
    write_errors: int = 0
    queue_depth: int = 0
    last_error: str | None = None


@dataclass(slots=True)
class _Batch:
    """Queue items taken for one transaction, in queue order."""

    items: list[_Append | _Call] = field(default_factory=list)
    rows: int = 0
    calls: int = 0
    first_at: float | None = None


def _resolve(call: _Call, result: Any = None, error: BaseException | None = None) -> None:
    """Hand a result to the awaiting coroutine from the writer thread."""

    def settle() -> None:
        if call.future.done():  # the awaiting task was cancelled; the write stands anyway
            return
        if error is not None:
            call.future.set_exception(error)
        else:
            call.future.set_result(result)

    try:
        call.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed; nobody is waiting any more
        pass


# --------------------------------------------------------------------------- the store


class RunStore:
    """Persistent runs, steps, events and logs; see the module docstring for the threading.

    `find_run` raises `AmbiguousRunIdError` for a prefix shared by several runs (so the CLI
    can say which) and returns None when nothing matches.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.notices = secure_store(self.path)  # 0600 files, 0700 folders; what was tightened
        self._queue: queue.SimpleQueue[_Append | _Call] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._state = "new"  # new -> open -> closing -> closed
        self._error_lock = threading.Lock()
        self._undelivered: StoreWriteError | None = None  # lost appends, not yet reported
        self._fatal: StoreWriteError | None = None  # the writer thread died
        self._fatal_reported = False  # some awaited call has raised `_fatal`
        self._inflight: _Batch | None = None  # taken off the queue, not yet resolved
        self._pending_events: list[Event] = []  # appended this loop tick, not yet queued
        self._pending_upto = 0
        self._pushed_upto = 0
        self._push_scheduled = False
        self._commit_listener: Callable[[int], None] | None = None
        self._stats = StoreStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._full: str | None = None
        self._full_listener: Callable[[str | None], None] | None = None
        self._abandon = False  # close(): stop waiting for space
        self._wake = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Connect, create or upgrade the schema, and start the writer thread."""
        if self._state != "new":
            raise StoreError(f"run store {self.path} was already opened")
        loop = self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._writer = threading.Thread(
            target=self._writer_main,
            args=(loop, ready),
            name=f"voltui-store-writer:{self.path.name}",
            daemon=True,
        )
        self._writer.start()
        try:
            await ready
            try:
                self._read_conn = await asyncio.to_thread(self._connect_reader)
            except sqlite3.DatabaseError as exc:
                raise self._open_error(exc) from exc
        except BaseException:
            self._state = "closed"
            self._queue.put(_Call(lambda conn: None, loop, loop.create_future(), stop=True))
            await asyncio.to_thread(self._writer.join)
            raise
        self._state = "open"

    async def close(self) -> None:
        """Commit everything queued, stop the writer thread and close both connections.

        Raises `StoreWriteError` (after closing) if queued writes could not be committed.
        """
        if self._state in ("closing", "closed"):
            return
        was_open = self._state == "open"
        self._state = "closing"
        if self._full is not None:
            self.abandon_writes()
        try:
            if was_open and self._fatal is None:
                try:
                    await self._submit(lambda conn: None, flush=True, stop=True, check=False)
                except StoreWriteError as exc:
                    if exc is not self._fatal:
                        raise
        finally:
            if self._writer is not None:
                await asyncio.to_thread(self._writer.join)
            if self._read_conn is not None:
                conn, self._read_conn = self._read_conn, None
                await asyncio.to_thread(self._close_reader, conn)
            self._state = "closed"
        # A dead writer thread is raised once; if nobody awaited a write since, that is here.
        if self._fatal is not None and not self._fatal_reported:
            self._fatal_reported = True
            raise self._fatal

    async def __aenter__(self) -> RunStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def stats(self) -> StoreStats:
        """A copy of the writer's counters."""
        s = self._stats
        return StoreStats(
            commits=s.commits,
            events_written=s.events_written,
            logs_written=s.logs_written,
            write_errors=s.write_errors,
            queue_depth=self._queue.qsize(),
            last_error=s.last_error,
        )

    # ------------------------------------------------------------------ writes

    async def save_run(self, run: Run, workflow: Workflow | None = None) -> None:
        """Upsert `run`; `workflow` is stored (once, in its own table) when given.

        Serialised here, at call time, because the caller keeps mutating the same `Run`.
        """
        row = run_row(run)
        definition = (
            (run.id, workflow.model_dump_json(exclude_defaults=False))
            if workflow is not None
            else None
        )

        def write(conn: sqlite3.Connection) -> None:
            _upsert_runs(conn, [row])
            if definition is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO run_workflows (run_id, workflow) VALUES (?, ?)",
                    definition,
                )

        await self._submit(write)

    async def save_step(self, step: StepRun) -> None:
        """Upsert by (run_id, step_id); the first save fixes the step's place in `get_steps`."""
        row = step_row(step)
        await self._submit(lambda conn: _upsert_steps(conn, [row]))

    def append_steps(self, rows: Sequence[tuple[str, str, str, str]]) -> None:
        """Queue step rows (from `step_row`) for the next batch; never blocks.

        The engine appends every step change and then awaits one `flush()` for all the steps
        that changed in the same loop tick, so a thousand steps finishing together cost one
        commit instead of a thousand round trips to the writer thread. Rows commit in queue
        order, so a later state of a step always overwrites an earlier one.
        """
        if rows:
            self._check_writable()
            self._queue.put(_Append(steps=rows))

    def append_runs(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Queue run rows (from `run_row`) for the next batch; never blocks."""
        if rows:
            self._check_writable()
            self._queue.put(_Append(runs=rows))

    async def cache_put(self, key: str, value: Any, expires_at: float | None) -> None:
        """Remember a step result under its cache key until `expires_at` (None: no expiry)."""
        row = (key, json.dumps(value, default=str), expires_at)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO step_cache (key, value, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "expires_at = excluded.expires_at",
                row,
            )

        await self._submit(write)

    async def cache_get(self, key: str, now: float) -> tuple[bool, Any]:
        """`(True, value)` for a stored, unexpired result; `(False, None)` otherwise."""
        row = await self._read(
            lambda c: c.execute(
                "SELECT value FROM step_cache WHERE key = ? AND (expires_at IS NULL "
                "OR expires_at > ?)",
                (key, now),
            ).fetchone()
        )
        return (True, json.loads(row[0])) if row else (False, None)

    async def request_approval(self, approval: Approval) -> Approval:
        """Record that a step waits for a decision, unless it already has a row (a decision
        written before the request was seen, or a request from an earlier attempt); returns
        what is stored."""
        key = (approval.run_id, approval.step_id)
        row = (*key, approval.decision, approval.model_dump_json())

        def write(conn: sqlite3.Connection) -> str:
            conn.execute(
                "INSERT INTO approvals (run_id, step_id, decision, data) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (run_id, step_id) DO NOTHING",
                row,
            )
            found = conn.execute(
                "SELECT data FROM approvals WHERE run_id = ? AND step_id = ?", key
            ).fetchone()
            return str(found[0])

        return Approval.model_validate_json(await self._submit(write))

    async def decide_approval(self, decided: Approval) -> Approval | None:
        """Store a decision if the request is still pending; None when there is no pending
        request (never asked, or someone decided first). Atomic across processes."""
        if decided.decision is None:
            raise ValueError("decide_approval needs a decision")
        row = (decided.decision, decided.model_dump_json(), decided.run_id, decided.step_id)

        def write(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE approvals SET decision = ?, data = ? "
                "WHERE run_id = ? AND step_id = ? AND decision IS NULL",
                row,
            )
            return cur.rowcount == 1

        return decided if await self._submit(write) else None

    async def get_approval(self, run_id: str, step_id: str) -> Approval | None:
        row = await self._read(
            lambda c: c.execute(
                "SELECT data FROM approvals WHERE run_id = ? AND step_id = ?", (run_id, step_id)
            ).fetchone()
        )
        return Approval.model_validate_json(row[0]) if row else None

    async def step_usages(self, since: float | None = None) -> list[tuple[str, str | None, str]]:
        """`(run id, agent id, usage JSON)` of every kept step that made LLM calls, of runs
        created at or after `since` (map children included: they carry their own usage).
        Not a hot path: a report on demand, one pass over the kept steps."""
        sql = (
            "SELECT s.run_id, json_extract(s.data, '$.agent_id'), json_extract(s.data, '$.usage') "
            "FROM steps s JOIN runs r ON r.id = s.run_id "
            "WHERE json_extract(s.data, '$.usage') IS NOT NULL "
            # a step reused by a replay carries the original's usage: counted there once
            "AND json_extract(s.data, '$.reused_from') IS NULL"
        )
        args: tuple[Any, ...] = ()
        if since is not None:
            sql += " AND r.created_at >= ?"
            args = (since,)
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        return [(str(run), agent, str(usage)) for run, agent, usage in rows]

    async def interrupted_with_approvals(self) -> list[str]:
        """Interrupted runs that asked for an approval and were not replayed since: the
        candidates an engine may resume in place (the caller checks the rest)."""
        rows = await self._read(
            lambda c: c.execute(
                "SELECT DISTINCT a.run_id FROM approvals a JOIN runs r ON r.id = a.run_id "
                "WHERE r.state = ? AND NOT EXISTS (SELECT 1 FROM runs p "
                "WHERE json_extract(p.data, '$.replay_of') = a.run_id) ORDER BY r.created_at",
                (RunState.INTERRUPTED.value,),
            ).fetchall()
        )
        return [str(row[0]) for row in rows]

    async def claim_interrupted(self, run: Run) -> bool:
        """Take over an interrupted run for this process (`run` is its new row, queued).
        Atomic across processes: of two engines starting at once, one wins."""
        row = run_row(run)

        def write(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE runs SET state = ?, owner_pid = ?, data = ? WHERE id = ? AND state = ?",
                (run.state.value, run.owner_pid, row[-1], run.id, RunState.INTERRUPTED.value),
            )
            return cur.rowcount == 1

        claimed: bool = await self._submit(write)
        return claimed

    async def approvals(self, run_id: str) -> list[Approval]:
        """Every approval of one run (pending or decided)."""
        rows = await self._read(
            lambda c: c.execute("SELECT data FROM approvals WHERE run_id = ?", (run_id,)).fetchall()
        )
        return [Approval.model_validate_json(r[0]) for r in rows]

    def append_events(self, events: list[Event]) -> None:
        """Queue events for the next batch; never blocks. Do not mutate them afterwards."""
        if events:
            self._check_writable()
            self._queue.put(_Append(events=list(events)))

    def append_event(self, event: Event) -> None:
        """One event; fits `EventDispatcher.add_sink` directly.

        Events emitted in one loop tick travel to the writer as one queue item: at 100,000
        events/s a queue item (and a wake-up of the writer thread) per event costs more than
        the insert. Anything that waits for the writer (`flush`, `save_*`) pushes the pending
        events first, so queue order is kept.
        """
        self._check_writable()
        pending = self._pending_events
        pending.append(event)
        self._pending_upto = event.seq
        if len(pending) >= BATCH_ROWS:
            self._push_pending()
        else:
            self._schedule_push()

    def note_seq(self, seq: int) -> None:
        """An event the caller chose not to store: it must not hold back the commit listener,
        which reports every seq up to the newest one whose fate is settled."""
        self._pending_upto = seq
        self._schedule_push()

    def set_commit_listener(self, listener: Callable[[int], None]) -> None:
        """Call `listener(upto_seq)` on the loop after each commit covering events up to it."""
        self._commit_listener = listener

    def _schedule_push(self) -> None:
        if self._push_scheduled:
            return
        self._push_scheduled = True
        try:
            asyncio.get_running_loop().call_soon(self._push_pending)
        except RuntimeError:  # no loop (a synchronous caller): hand it over now
            self._push_pending()

    def _push_pending(self) -> None:
        self._push_scheduled = False
        if self._pending_events or self._pending_upto > self._pushed_upto:
            events, self._pending_events = self._pending_events, []
            self._pushed_upto = self._pending_upto
            self._queue.put(_Append(events=events, upto=self._pending_upto))

    def append_log(self, lines: list[LogLine]) -> None:
        """Queue step output lines for the next batch; never blocks."""
        if lines:
            self._check_writable()
            self._queue.put(_Append(logs=list(lines)))

    async def flush(self) -> None:
        """Return once everything queued before this call is committed.

        Raises `StoreWriteError` if any of it (including appends from earlier batches not yet
        reported) could not be written.
        """
        await self._submit(lambda conn: None, flush=True)

    async def mark_interrupted(
        self, is_alive: Callable[[int | None], bool] | None = None
    ) -> list[str]:
        """Turn runs left active by a dead engine process into INTERRUPTED ones.

        Their unfinished steps become CANCELLED. Runs in one read-modify-write transaction, so
        two processes starting at once cannot interleave. Returns the ids of changed runs.
        """
        alive = is_alive or default_is_alive

        def write(conn: sqlite3.Connection) -> list[str]:
            now = _now()
            rows = conn.execute(
                f"SELECT id, owner_pid, data FROM runs WHERE state IN "
                f"({','.join('?' * len(_ACTIVE_RUN_STATES))}) ORDER BY created_at",
                _ACTIVE_RUN_STATES,
            ).fetchall()
            changed: list[str] = []
            for run_id, owner_pid, data in rows:
                if alive(owner_pid):
                    continue
                run = _parse(Run, data, f"run {run_id}")
                if run is None:
                    continue
                who = f"pid {owner_pid}" if owner_pid is not None else "pid unknown"
                run.state = RunState.INTERRUPTED
                run.finished_at = now
                run.error = (
                    f"interrupted: the engine process ({who}) stopped while the run was active"
                )
                conn.execute(
                    "UPDATE runs SET state = ?, data = ? WHERE id = ?",
                    (run.state.value, run.model_dump_json(), run_id),
                )
                steps = conn.execute(
                    f"SELECT pos, data FROM steps WHERE run_id = ? AND state IN "
                    f"({','.join('?' * len(_UNFINISHED_STEP_STATES))})",
                    (run_id, *_UNFINISHED_STEP_STATES),
                ).fetchall()
                for pos, step_data in steps:
                    step = _parse(StepRun, step_data, f"a step of run {run_id}")
                    if step is None:
                        continue
                    step.state = StepState.CANCELLED
                    step.error = "interrupted"
                    if step.started_at is not None and step.finished_at is None:
                        step.finished_at = now
                    conn.execute(
                        "UPDATE steps SET state = ?, data = ? WHERE pos = ?",
                        (step.state.value, step.model_dump_json(), pos),
                    )
                changed.append(run_id)
            return changed

        result: list[str] = await self._submit(write)
        return result

    # ------------------------------------------------------------------ requests between processes

    async def request(self, run_id: str, kind: str, by: str) -> int:
        """Ask the process that owns `run_id` to act on it (`cancel`); returns the request id.

        Any process sharing the file can ask; the owner polls `requests_after` and acts within
        a second, so a CLI, a dashboard and a server can each act on runs the others started.
        """

        def write(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO run_requests (run_id, kind, requested_at, requested_by) "
                "VALUES (?, ?, ?, ?)",
                (run_id, kind, _now(), by),
            )
            return int(cur.lastrowid or 0)

        result: int = await self._submit(write)
        return result

    async def requests_after(self, after_id: int) -> list[tuple[int, str, str, str | None]]:
        """Unhandled requests with an id above `after_id`: (id, run_id, kind, requested_by)."""
        return await self._read(
            lambda c: c.execute(
                "SELECT id, run_id, kind, requested_by FROM run_requests "
                "WHERE id > ? AND handled_at IS NULL ORDER BY id LIMIT 1000",
                (after_id,),
            ).fetchall()
        )

    async def last_request_id(self) -> int:
        row = await self._read(lambda c: c.execute("SELECT MAX(id) FROM run_requests").fetchone())
        return int(row[0] or 0) if row else 0

    async def mark_handled(self, request_id: int) -> None:
        await self._submit(
            lambda conn: conn.execute(
                "UPDATE run_requests SET handled_at = ? WHERE id = ?", (_now(), request_id)
            )
        )

    async def last_ins(self) -> int:
        """Where a follower of other processes' events starts: the newest row now."""
        row = await self._read(lambda c: c.execute("SELECT MAX(ins) FROM events").fetchone())
        return int(row[0] or 0) if row else 0

    async def events_after_ins(
        self, cursor: int, limit: int = 2000, *, skip: Sequence[tuple[int, int]] = ()
    ) -> tuple[list[Event], int]:
        """Events committed after `cursor` (by any process) in commit order, and the new cursor.

        `skip` lists seq ranges `(lo, hi]` whose events the caller already has (its own): they
        advance the cursor but are neither returned nor parsed, so a follower's cost is the
        other processes' events, not its own.
        """
        own = " OR ".join("(seq > ? AND seq <= ?)" for _ in skip) or "0"
        args: list[Any] = [x for pair in skip for x in pair]
        rows = await self._read(
            lambda c: c.execute(
                f"SELECT ins, CASE WHEN {own} THEN NULL ELSE data END FROM events "
                "WHERE ins > ? ORDER BY ins LIMIT ?",
                (*args, cursor, limit),
            ).fetchall()
        )
        if not rows:
            return [], cursor
        events = [
            e for r in rows if r[1] is not None and (e := _parse(Event, r[1], "events")) is not None
        ]
        return events, int(rows[-1][0])

    async def prune_runs(
        self,
        *,
        older_than: float | None,
        keep: int | None,
        now: float,
        dry_run: bool = False,
    ) -> PruneReport:
        """Delete finished runs older than `older_than` seconds or beyond the newest `keep`,
        with their steps, logs, events, definition and requests.

        Active runs are never touched. Returns what went (or would go, with `dry_run`),
        including run folders no remaining run uses, for the caller to delete: the store
        never deletes files itself.
        """
        finished = [s.value for s in RunState if s.finished]
        marks = ",".join("?" * len(finished))

        def work(conn: sqlite3.Connection) -> PruneReport:
            doomed: dict[str, str | None] = {}
            if older_than is not None:
                for run_id, data in conn.execute(
                    f"SELECT id, data FROM runs WHERE state IN ({marks}) AND created_at < ?",
                    (*finished, now - older_than),
                ):
                    doomed[run_id] = _run_dir_of(data)
            if keep is not None:
                for run_id, data in conn.execute(
                    f"SELECT id, data FROM runs WHERE state IN ({marks}) "
                    "ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET ?",
                    (*finished, keep),
                ):
                    doomed[run_id] = _run_dir_of(data)
            report = PruneReport(runs=sorted(doomed))
            if not doomed:
                return report
            ids = list(doomed)
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                q = ",".join("?" * len(chunk))
                report.steps += conn.execute(
                    f"SELECT COUNT(*) FROM steps WHERE run_id IN ({q})", chunk
                ).fetchone()[0]
                report.log_lines += conn.execute(
                    f"SELECT COUNT(*) FROM logs WHERE run_id IN ({q})", chunk
                ).fetchone()[0]
                report.events += conn.execute(
                    f"SELECT COUNT(*) FROM events WHERE correlation_id IN ({q})", chunk
                ).fetchone()[0]
                if dry_run:
                    continue
                for table, column in (
                    ("steps", "run_id"),
                    ("logs", "run_id"),
                    ("events", "correlation_id"),
                    ("run_workflows", "run_id"),
                    ("run_requests", "run_id"),
                    ("approvals", "run_id"),
                    ("runs", "id"),
                ):
                    conn.execute(f"DELETE FROM {table} WHERE {column} IN ({q})", chunk)
            # Engine-wide events (agent load, health, cache figures) belong to no run: they go
            # once they are older than the oldest run kept, so the window moves for them too.
            oldest = conn.execute(
                "SELECT MIN(created_at) FROM runs"
                + (" WHERE id NOT IN (SELECT value FROM json_each(?))" if dry_run else ""),
                (json.dumps(ids),) if dry_run else (),
            ).fetchone()[0]
            bounds = [oldest] if oldest is not None else []
            if older_than is not None:
                bounds.append(now - older_than)
            if bounds:  # older than the oldest kept run, or than the age limit: either goes
                cutoff = max(bounds)
                report.events += conn.execute(
                    "SELECT COUNT(*) FROM events WHERE correlation_id IS NULL AND ts < ?",
                    (cutoff,),
                ).fetchone()[0]
                if not dry_run:
                    conn.execute(
                        "DELETE FROM events WHERE correlation_id IS NULL AND ts < ?", (cutoff,)
                    )
            # A replay --failed shares its parent's folder: keep folders a kept run still uses.
            folders = {d for d in doomed.values() if d}
            if folders:
                in_use = {
                    _run_dir_of(data)
                    for (run_id, data) in conn.execute("SELECT id, data FROM runs")
                    if not dry_run or run_id not in doomed
                }
                report.folders = sorted(folders - in_use)
            return report

        if dry_run:
            result: PruneReport = await self._read(work)
        else:
            result = await self._submit(work)
        return result

    async def agent_outcomes(self) -> dict[str, tuple[int, int]]:
        """Per agent id, (succeeded, failed) final step states in the store (reused results
        not counted twice): what an engine starts its agents' figures from."""
        rows = await self._read(
            lambda c: c.execute(
                "SELECT json_extract(data, '$.agent_id') AS agent, state, COUNT(*) FROM steps "
                "WHERE state IN ('succeeded', 'failed') "
                "AND json_extract(data, '$.reused_from') IS NULL "
                "AND json_valid(data) GROUP BY agent, state"
            ).fetchall()
        )
        out: dict[str, tuple[int, int]] = {}
        for agent, state, n in rows:
            if not isinstance(agent, str):
                continue
            done, failed = out.get(agent, (0, 0))
            out[agent] = (done + n, failed) if state == "succeeded" else (done, failed + n)
        return out

    async def count_events(self) -> int:
        row = await self._read(lambda c: c.execute("SELECT COUNT(*) FROM events").fetchone())
        return int(row[0]) if row else 0

    async def prune_events(self, keep: int) -> int:
        """Delete all but the newest `keep` events; returns how many were deleted."""
        if keep < 0:
            raise ValueError(f"keep must be 0 or more, not {keep}")

        def write(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                """DELETE FROM events WHERE seq <=
                   (SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET ?)""",
                (keep,),
            )
            return cur.rowcount

        deleted: int = await self._submit(write)
        return deleted

    # ------------------------------------------------------------------ reads

    async def get_run(self, run_id: str) -> Run | None:
        row = await self._read(
            lambda c: c.execute("SELECT data FROM runs WHERE id = ?", (run_id,)).fetchone()
        )
        return _parse(Run, row[0], f"run {run_id}") if row else None

    async def get_workflow(self, run_id: str) -> Workflow | None:
        """The definition stored with the run, so replays use what actually ran."""

        def query(c: sqlite3.Connection) -> tuple[Any, ...] | None:
            row = c.execute(
                "SELECT workflow FROM run_workflows WHERE run_id = ?", (run_id,)
            ).fetchone()
            return row or c.execute("SELECT workflow FROM runs WHERE id = ?", (run_id,)).fetchone()

        row = await self._read(query)
        if not row or row[0] is None:
            return None
        return _parse(Workflow, row[0], f"definition of run {run_id}")

    async def get_steps(self, run_id: str) -> list[StepRun]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT data, step_id FROM steps WHERE run_id = ? ORDER BY pos", (run_id,)
            ).fetchall()
        )
        return _parse_all(StepRun, rows, f"steps of run {run_id}")

    async def list_runs(
        self,
        *,
        state: RunState | None = None,
        workflow_id: str | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """Newest first (created_at, then insertion order for equal times)."""
        where: list[str] = []
        args: list[Any] = []
        if state is not None:
            where.append("state = ?")
            args.append(RunState(state).value)
        if workflow_id is not None:
            where.append("workflow_id = ?")
            args.append(workflow_id)
        sql = "SELECT data, id FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        args.append(max(0, limit))
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        return _parse_all(Run, rows, "runs")

    async def find_run(self, prefix: str) -> Run | None:
        """The run with this exact id, else the only run whose id starts with `prefix`.

        None when nothing matches (or `prefix` is empty); `AmbiguousRunIdError` (a UserError
        listing a few candidates) when several runs share the prefix.
        """
        if not prefix:
            return None

        def query(c: sqlite3.Connection) -> list[tuple[str, str]]:
            exact = c.execute("SELECT id, data FROM runs WHERE id = ?", (prefix,)).fetchone()
            if exact:
                return [exact]
            return c.execute(
                "SELECT id, data FROM runs WHERE id GLOB ? ORDER BY id LIMIT 6",
                (_glob_escape(prefix) + "*",),
            ).fetchall()

        rows = await self._read(query)
        if not rows:
            return None
        if len(rows) > 1:
            raise AmbiguousRunIdError(prefix, [r[0] for r in rows])
        run = _parse(Run, rows[0][1], f"run {rows[0][0]}")
        if run is None:
            raise UserError(
                f"run {rows[0][0]} is damaged in the store {self.path} and cannot be read; "
                "`voltui doctor` checks the file and can repair it"
            )
        return run

    async def events(self, query: EventQuery) -> list[Event]:
        """Stored events matching `query`, ordered by seq; `limit` keeps the newest N."""
        where, args = event_filters(query)
        sql = "SELECT data, seq FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if query.limit is not None:
            sql += " ORDER BY seq DESC LIMIT ?"
            args.append(query.limit)
        else:
            sql += " ORDER BY seq"
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        if query.limit is not None:
            rows.reverse()
        return _parse_all(Event, rows, "events")

    async def events_range(self, after_seq: int, upto_seq: int) -> list[Event]:
        """Events with after_seq < seq <= upto_seq, in order (subscriber backfill)."""
        rows = await self._read(
            lambda c: c.execute(
                "SELECT data, seq FROM events WHERE seq > ? AND seq <= ? ORDER BY seq",
                (after_seq, upto_seq),
            ).fetchall()
        )
        return _parse_all(Event, rows, "events")

    def lease_seq_block(self, size: int = 100_000) -> tuple[int, int]:
        """Reserve event numbers `(start, start + size]` for this process; returns both ends.

        Blocking but short (one immediate transaction on its own connection), and called once
        per `size` events, so the dispatcher may call it from `emit`.
        """
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT next FROM seq_lease WHERE id = 1").fetchone()
            top = conn.execute("SELECT MAX(seq) FROM events").fetchone()[0] or 0
            start = max(int(row[0]) if row else 0, int(top))
            conn.execute(
                "INSERT INTO seq_lease (id, next) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET next = excluded.next",
                (start + size,),
            )
            conn.execute("COMMIT")
            return start, start + size
        finally:
            conn.close()

    async def max_seq(self) -> int:
        """The highest stored seq, 0 when empty: where a new dispatcher should continue."""
        row = await self._read(lambda c: c.execute("SELECT MAX(seq) FROM events").fetchone())
        return int(row[0]) if row and row[0] is not None else 0

    async def step_log(
        self,
        run_id: str,
        step_id: str,
        *,
        attempt: int | None = None,
        tail: int | None = None,
    ) -> list[LogLine]:
        """A step's output lines in order; every attempt unless `attempt` is given.

        `tail` keeps the last N lines (still oldest first).
        """
        sql = "SELECT run_id, step_id, attempt, stream, ts, line FROM logs WHERE run_id = ? "
        sql += "AND step_id = ?"
        args: list[Any] = [run_id, step_id]
        if attempt is not None:
            sql += " AND attempt = ?"
            args.append(attempt)
        if tail is not None:
            sql += " ORDER BY id DESC LIMIT ?"
            args.append(max(0, tail))
        else:
            sql += " ORDER BY id"
        rows = await self._read(lambda c: c.execute(sql, args).fetchall())
        if tail is not None:
            rows.reverse()
        return [
            LogLine(run_id=r[0], step_id=r[1], attempt=r[2], stream=r[3], ts=r[4], line=r[5])
            for r in rows
        ]

    # ------------------------------------------------------------------ plumbing (loop side)

    def _check_writable(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._state != "open":
            raise StoreError(f"run store {self.path} is {self._state}; open() it before writing")

    def _take_undelivered(self) -> StoreWriteError | None:
        with self._error_lock:
            err, self._undelivered = self._undelivered, None
        return err

    async def _submit(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        flush: bool = False,
        stop: bool = False,
        check: bool = True,
    ) -> T:
        """Queue `fn` for the writer and wait for its commit."""
        try:
            if check:
                self._check_writable()
                # A write lost earlier (with nobody awaiting it) is reported here, before this
                # write is attempted, so an exception always means "this was not done".
                err = self._take_undelivered()
                if err is not None:
                    raise err
            self._push_pending()
            loop = asyncio.get_running_loop()
            future: asyncio.Future[T] = loop.create_future()
            # Under the lock the writer takes when it dies, so no call is queued after its
            # final drain and left waiting forever.
            with self._error_lock:
                if self._fatal is not None:
                    raise self._fatal
                self._queue.put(_Call(fn, loop, future, is_flush=flush, stop=stop))
            return await future
        except StoreWriteError as exc:
            if exc is self._fatal and not stop:
                self._fatal_reported = True
            raise

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._read_conn is None:
            raise StoreError(f"run store {self.path} is not open")
        return await asyncio.to_thread(self._read_sync, fn)

    def _read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._read_lock:
            conn = self._read_conn
            if conn is None:
                raise StoreError(f"run store {self.path} was closed")
            return fn(conn)

    # ------------------------------------------------------------------ connections

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so batches are explicit.
        conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.execute("PRAGMA query_only = ON")
        conn.create_function("voltui_fnmatch", 2, fnmatch.fnmatchcase, deterministic=True)
        return conn

    def _close_reader(self, conn: sqlite3.Connection) -> None:
        with self._read_lock:
            conn.close()

    def _wal_with_retry(self, conn: sqlite3.Connection) -> str:
        """Switch to WAL, waiting out another process that holds the lock on a new file.

        SQLite answers `database is locked` at once here instead of honouring busy_timeout,
        so two voltui processes opening a fresh file together would otherwise fail.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _setup(self, conn: sqlite3.Connection) -> None:
        """WAL mode and schema migrations, safe when several processes open the file at once."""
        mode = self._wal_with_retry(conn)
        if str(mode).lower() != "wal":
            logger.warning("run store %s: journal mode is %s, not WAL", self.path, mode)
        # BEGIN IMMEDIATE takes the write lock, so a second process waits and then sees the
        # version the first one wrote instead of migrating twice.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"run store {self.path} has schema version {version}, but this voltui only "
                    f"knows up to {SCHEMA_VERSION}; upgrade voltui or use another store path"
                )
            for target in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[target]:
                    conn.execute(statement)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            missing = schema_problems(conn)
            if missing:
                raise StoreError(
                    f"run store {self.path} is damaged: {'; '.join(missing)}. Run "
                    f"`voltui doctor --db {self.path} --repair` to back it up and rebuild it "
                    "(the rows still readable are kept), or use another store path"
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ writer thread

    def _writer_main(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        ready_call = _Call(lambda conn: None, loop, ready)
        try:
            conn = self._connect()
        except BaseException as exc:
            _resolve(ready_call, error=self._open_error(exc))
            return
        try:
            try:
                self._setup(conn)
            except StoreError as exc:
                _resolve(ready_call, error=exc)
                return
            except BaseException as exc:
                _resolve(ready_call, error=self._open_error(exc))
                return
            _resolve(ready_call)
            self._writer_loop(conn)
        except BaseException as exc:
            # A bug or a broken connection: never die silently. Fail everyone waiting, and make
            # every later call raise.
            logger.exception("run store %s: writer thread stopped", self.path)
            fatal = StoreWriteError(f"run store {self.path}: writer thread stopped: {exc!r}")
            with self._error_lock:
                self._fatal = fatal
            inflight = self._inflight
            if inflight is not None:
                for item in inflight.items:
                    if isinstance(item, _Call):
                        _resolve(item, error=fatal)
            self._fail_queued(fatal)
        finally:
            conn.close()

    def _open_error(self, exc: BaseException) -> StoreError:
        hint = (
            f"; `voltui doctor --db {self.path} --repair` backs it up and rebuilds it"
            if isinstance(exc, sqlite3.DatabaseError)
            else ""
        )
        return StoreError(f"cannot open run store {self.path}: {exc}{hint}")

    def _fail_queued(self, error: StoreWriteError) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Call):
                _resolve(item, error=error)

    def _writer_loop(self, conn: sqlite3.Connection) -> None:
        batch = self._inflight = _Batch()
        while True:
            if batch.first_at is None:
                item = self._queue.get()
            else:
                wait = batch.first_at + BATCH_INTERVAL - time.monotonic()
                try:
                    item = self._queue.get(timeout=max(0.0, wait))
                except queue.Empty:
                    self._commit(conn, batch)
                    batch = self._inflight = _Batch()
                    continue
            # Take whatever else is already waiting, so a flood becomes one transaction.
            stop = False
            while True:
                batch.items.append(item)
                if isinstance(item, _Call):
                    batch.calls += 1
                    stop = item.stop
                    if stop:
                        break
                else:
                    batch.rows += item.rows
                    if batch.first_at is None:
                        batch.first_at = time.monotonic()
                if batch.rows >= BATCH_ROWS:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            due = batch.first_at is not None and (
                time.monotonic() - batch.first_at >= BATCH_INTERVAL
            )
            if batch.calls or batch.rows >= BATCH_ROWS or due:
                self._commit(conn, batch)
                batch = self._inflight = _Batch()
                if stop:
                    return

    def _commit(self, conn: sqlite3.Connection, batch: _Batch) -> None:
        """Commit a batch; while the disk is full, keep it and try again every FULL_RETRY s.

        A full disk is the one failure that fixes itself: losing the batch (and failing every
        step waiting on it) would turn minutes without space into lost runs. The engine is told
        (`on_full`), refuses new work meanwhile, and carries on when space returns. `close()`
        ends the waiting: what was not committed by then is reported lost.
        """
        while True:
            error = self._commit_once(conn, batch)
            if error is None:
                if self._full is not None:
                    logger.warning("run store %s: writes succeed again", self.path)
                    self._set_full(None)
                return
            self._set_full(str(error))
            self._wake.wait(FULL_RETRY)
            self._wake.clear()

    def _set_full(self, reason: str | None) -> None:
        if reason is not None and self._full is None:
            logger.error("run store %s: %s; holding writes until there is space", self.path, reason)
        changed = (reason is None) != (self._full is None)
        self._full = reason
        listener, loop = self._full_listener, self._loop
        if changed and listener is not None and loop is not None:
            try:
                loop.call_soon_threadsafe(listener, reason)
            except RuntimeError:
                pass

    def abandon_writes(self) -> None:
        """Stop waiting for space: one last try, then what is uncommitted is reported lost.

        Waiting would keep a stopping engine alive forever on a disk that stays full.
        """
        self._abandon = True
        self._wake.set()

    @property
    def full(self) -> str | None:
        """Why writes are on hold (disk or database full), or None when they go through."""
        return self._full

    def set_full_listener(self, listener: Callable[[str | None], None]) -> None:
        """Call `listener(reason)` on the loop when writes stop (reason) or resume (None)."""
        self._full_listener = listener

    def _commit_once(self, conn: sqlite3.Connection, batch: _Batch) -> BaseException | None:
        """Write one batch in one transaction, in queue order; the error when the disk is full.

        Each awaited call runs in its own savepoint, so bad data fails that call alone; appended
        rows failing are recorded for the next awaited call. A failed COMMIT (disk full, lock
        timeout) fails every call in the batch and loses its appends.
        """
        if not batch.items:
            return None
        outcomes: list[tuple[_Call, Any, BaseException | None]] = []
        events: list[Event] = []
        logs: list[LogLine] = []
        steps: list[tuple[str, str, str, str]] = []
        runs: list[tuple[Any, ...]] = []
        n_events = n_logs = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for item in batch.items:
                    if isinstance(item, _Append):
                        events.extend(item.events)
                        logs.extend(item.logs)
                        steps.extend(item.steps)
                        runs.extend(item.runs)
                        continue
                    # Rows queued before this call are written before it runs, so a flush or a
                    # save returns only once every earlier append is in the same commit.
                    n_events += len(events)
                    n_logs += len(logs)
                    self._write_rows(conn, events, logs, steps, runs)
                    events, logs, steps, runs = [], [], [], []
                    conn.execute("SAVEPOINT call")
                    try:
                        outcomes.append((item, item.fn(conn), None))
                    except Exception as exc:
                        if _is_full(exc):
                            raise
                        conn.execute("ROLLBACK TO call")
                        outcomes.append((item, None, exc))
                    conn.execute("RELEASE call")
                n_events += len(events)
                n_logs += len(logs)
                self._write_rows(conn, events, logs, steps, runs)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        logger.exception("run store %s: rollback failed", self.path)
                raise
        except Exception as exc:
            if _is_full(exc) and not self._abandon:
                return exc
            n_events = sum(len(i.events) for i in batch.items if isinstance(i, _Append))
            n_logs = sum(len(i.logs) for i in batch.items if isinstance(i, _Append))
            logger.error(
                "run store %s: a batch of %d event(s), %d log line(s) and %d write(s) "
                "was not committed: %s",
                self.path,
                n_events,
                n_logs,
                batch.calls,
                exc,
            )
            self._stats.write_errors += 1
            self._stats.last_error = str(exc)
            err = StoreWriteError(f"run store {self.path}: write failed: {exc}")
            err.__cause__ = exc
            # Lost, not pending: holding them back from subscribers forever helps nobody.
            self._notify_commit(batch)
            calls = [i for i in batch.items if isinstance(i, _Call)]
            if not calls or not isinstance(batch.items[-1], _Call):
                # Some lost rows had nobody awaiting them: report to the next awaited call.
                self._set_undelivered(err)
            for call in calls:
                _resolve(call, error=err)
            return None
        self._notify_commit(batch)
        self._stats.commits += 1
        self._stats.events_written += n_events
        self._stats.logs_written += n_logs
        for call, result, error in outcomes:
            if error is not None:
                if not isinstance(error, VoltuiError):
                    wrapped = StoreWriteError(f"run store {self.path}: write failed: {error}")
                    wrapped.__cause__ = error
                    error = wrapped
                _resolve(call, error=error)
            elif call.is_flush and (pending := self._take_undelivered()) is not None:
                _resolve(call, error=pending)
            else:
                _resolve(call, result)
        return None

    def _notify_commit(self, batch: _Batch) -> None:
        listener = self._commit_listener
        if listener is None:
            return
        upto = max((i.upto for i in batch.items if isinstance(i, _Append)), default=0)
        loop = self._loop
        if upto and loop is not None:
            try:
                loop.call_soon_threadsafe(listener, upto)
            except RuntimeError:  # the loop is closed
                pass

    def _write_rows(
        self,
        conn: sqlite3.Connection,
        events: list[Event],
        logs: list[LogLine],
        steps: list[tuple[str, str, str, str]] | None = None,
        runs: list[tuple[Any, ...]] | None = None,
    ) -> None:
        """Insert appended rows; a failed group is recorded, not raised, so calls still commit."""
        for rows, upsert, what in (
            (steps, _upsert_steps, "step state(s)"),
            (runs, _upsert_runs, "run state(s)"),
        ):
            if not rows:
                continue
            conn.execute("SAVEPOINT appends")
            try:
                upsert(conn, rows)
            except Exception as exc:
                if _is_full(exc):
                    raise
                conn.execute("ROLLBACK TO appends")
                self._note_append_failure(exc, len(rows), what)
            conn.execute("RELEASE appends")
        if events:
            conn.execute("SAVEPOINT appends")
            try:
                # `ins` numbers rows in commit order across every process sharing the file:
                # computed under the write lock, so a follower reading `ins > cursor` never
                # misses a row that commits later with a smaller number.
                base = conn.execute("SELECT COALESCE(MAX(ins), 0) FROM events").fetchone()[0]
                cur = conn.executemany(
                    "INSERT OR IGNORE INTO events (seq, ts, type, correlation_id, data, ins) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (e.seq, e.ts, e.type, e.correlation_id, _dump_event(e), base + i)
                        for i, e in enumerate(events, start=1)
                    ],
                )
                if 0 <= cur.rowcount < len(events):
                    logger.warning(
                        "run store %s: %d event(s) skipped because their seq was already stored",
                        self.path,
                        len(events) - cur.rowcount,
                    )
            except Exception as exc:
                if _is_full(exc):
                    raise
                conn.execute("ROLLBACK TO appends")
                self._note_append_failure(exc, len(events), "event(s)")
            conn.execute("RELEASE appends")
        if logs:
            conn.execute("SAVEPOINT appends")
            try:
                conn.executemany(
                    "INSERT INTO logs (run_id, step_id, attempt, stream, ts, line) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(ln.run_id, ln.step_id, ln.attempt, ln.stream, ln.ts, ln.line) for ln in logs],
                )
            except Exception as exc:
                if _is_full(exc):
                    raise
                conn.execute("ROLLBACK TO appends")
                self._note_append_failure(exc, len(logs), "log line(s)")
            conn.execute("RELEASE appends")

    def _note_append_failure(self, exc: BaseException, count: int, what: str) -> None:
        logger.error("run store %s: %d %s were not written: %s", self.path, count, what, exc)
        self._stats.write_errors += 1
        self._stats.last_error = str(exc)
        err = StoreWriteError(f"run store {self.path}: {count} {what} were not written: {exc}")
        err.__cause__ = exc
        self._set_undelivered(err)

    def _set_undelivered(self, err: StoreWriteError) -> None:
        """Keep the first unreported failure; it is the one that explains the rest."""
        with self._error_lock:
            if self._undelivered is None:
                self._undelivered = err
