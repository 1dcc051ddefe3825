"""`voltui doctor`: check a run store, back it up, and rebuild it from what is still readable.

A damaged store (a dropped table, a malformed row written by a bug or a hand edit, a file cut
short by a full disk) must never cost the operator everything in it. `check` says what is wrong
without changing anything; `repair` first copies the file (and its -wal) aside, then builds a
fresh store with the current schema and copies every row that still reads and validates,
skipping and counting the rest, and finally swaps the new file in.

Blocking by design: it runs from the CLI, never inside a running engine.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from voltui.engine import automation_state
from voltui.engine.models import Approval, Event, Run, StepRun, Workflow
from voltui.engine.store import EXPECTED_SCHEMA, SCHEMA_VERSION, RunStore, schema_problems

__all__ = ["DoctorReport", "check", "repair"]

# Tables whose `data` column holds a model's JSON, and that model.
_MODELS: dict[
    str, tuple[str, type[Run] | type[StepRun] | type[Event] | type[Workflow] | type[Approval]]
] = {
    "runs": ("data", Run),
    "steps": ("data", StepRun),
    "events": ("data", Event),
    "run_workflows": ("workflow", Workflow),
    "approvals": ("data", Approval),
}


@dataclass
class DoctorReport:
    """What `check` found (and, after `repair`, what was kept and dropped)."""

    path: str
    problems: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    bad_rows: dict[str, int] = field(default_factory=dict)
    backup: str | None = None
    kept: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not self.problems


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def check(path: Path) -> DoctorReport:
    """Read-only examination: can it be opened, is the schema whole, which rows are bad."""
    report = DoctorReport(str(path))
    if not path.exists():
        report.problems.append("the file does not exist")
        return report
    if not path.is_file():
        report.problems.append("not a regular file")
        return report
    try:
        conn = _connect(path)
        try:
            verdict = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
            if verdict != ["ok"]:
                shown = "; ".join(verdict[:5])
                report.problems.append(f"SQLite integrity check failed: {shown}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                report.problems.append(
                    f"schema version {version}, this voltui writes {SCHEMA_VERSION} "
                    "(opening it with voltui migrates an older one)"
                )
            report.problems.extend(schema_problems(conn))
            for table in EXPECTED_SCHEMA:
                try:
                    report.rows[table] = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                except sqlite3.DatabaseError:
                    continue
            for table, (column, model) in _MODELS.items():
                bad = _count_bad(conn, table, column, model)
                if bad:
                    report.bad_rows[table] = bad
                    report.problems.append(f"{bad} damaged row(s) in {table}")
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        report.problems.append(f"SQLite cannot read it: {exc}")
    return report


def _count_bad(conn: sqlite3.Connection, table: str, column: str, model: type) -> int:
    bad = 0
    try:
        cursor = conn.execute(f"SELECT {column} FROM {table}")
        for (data,) in cursor:
            if data is None and table == "runs":
                continue
            try:
                model.model_validate_json(data)
            except Exception:
                bad += 1
    except sqlite3.DatabaseError:
        return 0
    return bad


def repair(path: Path) -> DoctorReport:
    """Back the store up, rebuild it with every readable row, and swap it in."""
    report = check(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.name}.bak-{stamp}")
    shutil.copy2(path, backup)
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            shutil.copy2(side, Path(f"{backup}{suffix}"))
    os.chmod(backup, 0o600)
    report.backup = str(backup)

    fresh = path.with_name(f"{path.name}.rebuild-{stamp}")
    asyncio.run(_create(fresh))
    try:
        source = sqlite3.connect(path, timeout=5)
    except sqlite3.DatabaseError:
        source = None
    target = sqlite3.connect(fresh, isolation_level=None)
    try:
        target.execute("BEGIN")
        for table, columns in EXPECTED_SCHEMA.items():
            kept, dropped = _copy_table(source, target, table, columns)
            report.kept[table], report.dropped[table] = kept, dropped
        # Schedule cursors and trigger claims: losing them would re-fire or drop a schedule.
        for statement in automation_state.SCHEMA:
            target.execute(statement)
        for table, columns in automation_state.TABLES.items():
            kept, dropped = _copy_table(source, target, table, columns)
            if kept or dropped:
                report.kept[table], report.dropped[table] = kept, dropped
        target.execute("COMMIT")
    finally:
        target.close()
        if source is not None:
            source.close()
    os.replace(fresh, path)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
        Path(f"{fresh}{suffix}").unlink(missing_ok=True)
    os.chmod(path, 0o600)
    return report


async def _create(path: Path) -> None:
    async with RunStore(path):
        pass


def _copy_table(
    source: sqlite3.Connection | None,
    target: sqlite3.Connection,
    table: str,
    columns: tuple[str, ...],
) -> tuple[int, int]:
    """Copy the rows that read and validate; returns (kept, dropped)."""
    if source is None:
        return 0, 0
    try:
        have = [r[1] for r in source.execute(f"PRAGMA table_info({table})")]
    except sqlite3.DatabaseError:
        return 0, 0
    shared = [c for c in columns if c in have]
    if not shared:
        return 0, 0
    model_column, model = _MODELS.get(table, (None, None))
    marks = ",".join("?" * len(shared))
    insert = f"INSERT OR IGNORE INTO {table} ({','.join(shared)}) VALUES ({marks})"
    kept = dropped = 0
    try:
        cursor = source.execute(f"SELECT {','.join(shared)} FROM {table}")
        for row in cursor:
            if model is not None and model_column in shared:
                data = row[shared.index(model_column)]
                if data is not None or table != "runs":
                    try:
                        model.model_validate_json(data)
                    except Exception:
                        dropped += 1
                        continue
            try:
                target.execute(insert, row)
                kept += 1
            except sqlite3.DatabaseError:
                dropped += 1
    except sqlite3.DatabaseError:
        pass  # the rest of this table is unreadable: keep what was copied
    return kept, dropped
