"""Durable state of schedules and file triggers, in two small tables of the engine's SQLite file.

Why a connection of its own instead of methods on RunStore: these rows are read and written
rarely (once per fire, per pause, per file), every write is a compare-and-swap that must be
atomic across processes sharing the file (a dashboard and `voltui serve` both run schedules; only
one may fire a given instant), and keeping them apart leaves the run store's schema and writer
thread alone. The tables are created with `IF NOT EXISTS`, so older files gain them on first
use and the run store's `user_version` numbering is not involved.

Every call is short and runs in a worker thread (`asyncio.to_thread`), never on the loop.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

__all__ = ["AutomationState", "ScheduleState"]

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS schedule_state (
        key TEXT PRIMARY KEY,
        cursor REAL NOT NULL,
        paused INTEGER NOT NULL DEFAULT 0,
        pending TEXT,
        pending_pid INTEGER,
        pending_since REAL,
        last_fired_at REAL,
        last_run_id TEXT,
        updated_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS trigger_claims (
        trigger TEXT NOT NULL,
        path TEXT NOT NULL,
        mtime_ns INTEGER NOT NULL,
        size INTEGER NOT NULL,
        claimed_at REAL NOT NULL,
        run_id TEXT,
        PRIMARY KEY (trigger, path, mtime_ns, size)
    )""",
    "CREATE INDEX IF NOT EXISTS trigger_claims_age ON trigger_claims (claimed_at)",
)
"""Created on first use by whichever engine runs schedules or triggers; `voltui doctor`
rebuilds these too (`TABLES`)."""

TABLES: dict[str, tuple[str, ...]] = {
    "schedule_state": (
        "key",
        "cursor",
        "paused",
        "pending",
        "pending_pid",
        "pending_since",
        "last_fired_at",
        "last_run_id",
        "updated_at",
    ),
    "trigger_claims": ("trigger", "path", "mtime_ns", "size", "claimed_at", "run_id"),
}


@dataclass
class ScheduleState:
    """One schedule's durable facts.

    `cursor` is the latest scheduled instant already dealt with (fired, skipped or missed on
    purpose); the next fire is the first instant after it. `pending` lists instants claimed for
    firing whose runs may not exist yet: a process that dies between claiming and starting
    leaves them there, and the next engine fires what is still missing.
    """

    key: str
    cursor: float
    paused: bool = False
    pending: list[float] = field(default_factory=list)
    pending_pid: int | None = None
    pending_since: float | None = None
    last_fired_at: float | None = None
    last_run_id: str | None = None


class AutomationState:
    """Schedule cursors and pauses, and trigger claims; see the module docstring."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        for statement in SCHEMA:
            conn.execute(statement)
        return conn

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if self._conn is None:
                self._conn = self._connect()
            return fn(self._conn)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._call, fn)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ------------------------------------------------------------------ schedules

    async def schedules(self) -> dict[str, ScheduleState]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT key, cursor, paused, pending, pending_pid, pending_since, "
                "last_fired_at, last_run_id FROM schedule_state"
            ).fetchall()
        )
        return {row[0]: _state(row) for row in rows}

    async def get(self, key: str) -> ScheduleState | None:
        row = await self._run(
            lambda c: c.execute(
                "SELECT key, cursor, paused, pending, pending_pid, pending_since, "
                "last_fired_at, last_run_id FROM schedule_state WHERE key = ?",
                (key,),
            ).fetchone()
        )
        return _state(row) if row else None

    async def ensure(self, key: str, cursor: float) -> ScheduleState:
        """The schedule's state, created with `cursor` if this is its first sighting."""
        now = self._clock()

        def write(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT OR IGNORE INTO schedule_state (key, cursor, updated_at) VALUES (?, ?, ?)",
                (key, cursor, now),
            )

        await self._run(write)
        state = await self.get(key)
        assert state is not None
        return state

    async def claim(
        self, key: str, expected_cursor: float, new_cursor: float, pending: list[float], pid: int
    ) -> bool:
        """Move the cursor from `expected_cursor` to `new_cursor` and record `pending` fires,
        only if no other process moved it first (compare-and-swap). True when ours."""
        now = self._clock()

        def write(c: sqlite3.Connection) -> int:
            cur = c.execute(
                "UPDATE schedule_state SET cursor = ?, pending = ?, pending_pid = ?, "
                "pending_since = ?, updated_at = ? WHERE key = ? AND cursor = ? AND paused = 0",
                (
                    new_cursor,
                    json.dumps(pending) if pending else None,
                    pid,
                    now,
                    now,
                    key,
                    expected_cursor,
                ),
            )
            return cur.rowcount

        return await self._run(write) == 1

    async def take_over(self, key: str, dead_pid: int | None, pid: int) -> bool:
        """Adopt the pending fires a dead process left behind (compare-and-swap on its pid)."""
        now = self._clock()

        def write(c: sqlite3.Connection) -> int:
            return c.execute(
                "UPDATE schedule_state SET pending_pid = ?, updated_at = ? "
                "WHERE key = ? AND pending IS NOT NULL AND pending_pid IS ?",
                (pid, now, key, dead_pid),
            ).rowcount

        return await self._run(write) == 1

    async def fired(self, key: str, remaining: list[float], run_id: str | None, at: float) -> None:
        """One claimed instant is done (fired, or skipped by the overlap policy)."""
        now = self._clock()

        def write(c: sqlite3.Connection) -> None:
            if run_id is not None:
                c.execute(
                    "UPDATE schedule_state SET pending = ?, pending_since = ?, "
                    "last_fired_at = ?, last_run_id = ?, updated_at = ? WHERE key = ?",
                    (json.dumps(remaining) if remaining else None, now, at, run_id, now, key),
                )
            else:
                c.execute(
                    "UPDATE schedule_state SET pending = ?, pending_since = ?, updated_at = ? "
                    "WHERE key = ?",
                    (json.dumps(remaining) if remaining else None, now, now, key),
                )

        await self._run(write)

    async def set_paused(self, key: str, paused: bool) -> None:
        """Pause or resume. Resuming restarts the cursor at now: a pause means "do not run
        these", not "run them all later"."""
        now = self._clock()

        def write(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO schedule_state (key, cursor, paused, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET paused = excluded.paused, "
                "cursor = CASE WHEN excluded.paused = 0 AND schedule_state.paused = 1 "
                "THEN excluded.cursor ELSE schedule_state.cursor END, "
                "updated_at = excluded.updated_at",
                (key, now, int(paused), now),
            )

        await self._run(write)

    # ------------------------------------------------------------------ triggers

    async def claim_file(self, trigger: str, path: str, mtime_ns: int, size: int) -> bool:
        """Claim one version of a file for one trigger; False if some engine already did."""
        now = self._clock()

        def write(c: sqlite3.Connection) -> int:
            return c.execute(
                "INSERT OR IGNORE INTO trigger_claims (trigger, path, mtime_ns, size, claimed_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (trigger, path, mtime_ns, size, now),
            ).rowcount

        return await self._run(write) == 1

    async def file_run(
        self, trigger: str, path: str, mtime_ns: int, size: int, run_id: str
    ) -> None:
        def write(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE trigger_claims SET run_id = ? WHERE trigger = ? AND path = ? "
                "AND mtime_ns = ? AND size = ?",
                (run_id, trigger, path, mtime_ns, size),
            )

        await self._run(write)

    async def prune_claims(self, older_than: float) -> int:
        """Forget claims older than a timestamp; their files will not change to the same
        (mtime, size) again in practice, so this only bounds the table."""

        def write(c: sqlite3.Connection) -> int:
            return c.execute(
                "DELETE FROM trigger_claims WHERE claimed_at < ?", (older_than,)
            ).rowcount

        return await self._run(write)


def _state(row: tuple[object, ...]) -> ScheduleState:
    key, cursor, paused, pending, pending_pid, pending_since, last_fired_at, last_run_id = row
    return ScheduleState(
        key=str(key),
        cursor=float(cursor),  # type: ignore[arg-type]
        paused=bool(paused),
        pending=[float(x) for x in json.loads(str(pending))] if pending else [],
        pending_pid=int(pending_pid) if pending_pid is not None else None,  # type: ignore[call-overload]
        pending_since=float(pending_since) if pending_since is not None else None,  # type: ignore[arg-type]
        last_fired_at=float(last_fired_at) if last_fired_at is not None else None,  # type: ignore[arg-type]
        last_run_id=str(last_run_id) if last_run_id is not None else None,
    )
