"""Bounded answers for the server: event history and step logs in pages, with a cursor.

`events` without a limit and `step_log` without a tail used to answer with everything: on a
store of 2M events the server went from 48 MB to 5.1 GB for one request, and a read-only
client may send it. Now one answer holds at most `max_items` (the server's limit: 5,000 events
or 10,000 log lines by default) plus a cursor; the client asks again with it until there is
none (`RemoteEngine` does this for callers that want everything).

The pages of one listing follow the order of a single query: oldest first, from the query's
lower bounds (or, for a `limit`/`tail` larger than a page, from the N-th newest match) up to
the newest match *when the first page was asked for*: that upper end is part of the cursor, so
a busy engine cannot keep a listing from ending. A `limit`/`tail` that fits in one page is
answered by the engine itself, unchanged.

The reads go to the store's read connection with the same filters as `RunStore.events` and
`RunStore.step_log` (`tests/remote/test_pages.py` checks that every paged listing equals the
store's own answer, so a schema change there shows up here).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from voltui.engine.models import Event, EventQuery, LogLine
from voltui.engine.store import event_filters as _event_filters
from voltui.remote.protocol import MAX_EVENTS, MAX_LOG_LINES, EventsPage, LogPage, PageCursor

if TYPE_CHECKING:
    from voltui.engine.orchestrator import Orchestrator


async def events_page(
    engine: Orchestrator,
    query: EventQuery,
    cursor: PageCursor | None,
    max_items: int = MAX_EVENTS,
) -> EventsPage:
    """One page of `engine.events(query)`; see the module docstring."""
    if cursor is None and query.limit is not None and query.limit <= max_items:
        return EventsPage(events=await engine.events(query))
    store = engine.store
    where, args = _event_filters(query)
    if cursor is None:
        await store.flush()
        cursor = await store._read(lambda c: _first_event_cursor(c, where, args, query.limit))
        if cursor is None:
            return EventsPage(events=[])
    terms = " AND ".join([*where, "seq > ?", "seq <= ?"])
    sql = f"SELECT data FROM events WHERE {terms} ORDER BY seq LIMIT ?"
    params = [*args, cursor.after, cursor.upto, max_items + 1]
    rows = await store._read(lambda c: c.execute(sql, params).fetchall())
    events = [Event.model_validate_json(r[0]) for r in rows[:max_items]]
    more = len(rows) > max_items
    return EventsPage(
        events=events,
        next=PageCursor(after=events[-1].seq, upto=cursor.upto) if more else None,
    )


def _first_event_cursor(
    conn: sqlite3.Connection, where: list[str], args: list[Any], limit: int | None
) -> PageCursor | None:
    """The whole listing's bounds: from the query's start (or the `limit`-th newest match)
    to the newest match now; None when nothing matches."""
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    top = conn.execute(f"SELECT MAX(seq) FROM events{clause}", args).fetchone()[0]
    if top is None:
        return None
    after = -1
    if limit is not None:
        nth = conn.execute(
            f"SELECT seq FROM events{clause} ORDER BY seq DESC LIMIT 1 OFFSET ?",
            [*args, limit - 1],
        ).fetchone()
        if nth is not None:
            after = int(nth[0]) - 1
    return PageCursor(after=after, upto=int(top))


async def step_log_page(
    engine: Orchestrator,
    run_id: str,
    step_id: str,
    attempt: int | None,
    tail: int | None,
    cursor: PageCursor | None,
    max_items: int = MAX_LOG_LINES,
) -> LogPage:
    """One page of `engine.step_log(...)`; see the module docstring."""
    if cursor is None and tail is not None and tail <= max_items:
        return LogPage(lines=await engine.step_log(run_id, step_id, attempt, tail))
    store = engine.store
    run = await store.find_run(run_id)  # AmbiguousRunIdError for a shared prefix, as the engine
    if run is None:
        # Unknown (the engine raises NotFoundError with its own words) or not stored yet.
        return LogPage(lines=await engine.step_log(run_id, step_id, attempt, tail=0))
    where = ["run_id = ?", "step_id = ?"]
    args: list[Any] = [run.id, step_id]
    if attempt is not None:
        where.append("attempt = ?")
        args.append(attempt)
    if cursor is None:
        await store.flush()
        cursor = await store._read(lambda c: _first_log_cursor(c, where, args, tail))
        if cursor is None:
            return LogPage(lines=[])
    terms = " AND ".join([*where, "id > ?", "id <= ?"])
    sql = (
        f"SELECT id, run_id, step_id, attempt, stream, ts, line FROM logs WHERE {terms} "
        "ORDER BY id LIMIT ?"
    )
    params = [*args, cursor.after, cursor.upto, max_items + 1]
    rows = await store._read(lambda c: c.execute(sql, params).fetchall())
    lines = [
        LogLine(run_id=r[1], step_id=r[2], attempt=r[3], stream=r[4], ts=r[5], line=r[6])
        for r in rows[:max_items]
    ]
    more = len(rows) > max_items
    return LogPage(
        lines=lines,
        next=PageCursor(after=rows[max_items - 1][0], upto=cursor.upto) if more else None,
    )


def _first_log_cursor(
    conn: sqlite3.Connection, where: list[str], args: list[Any], tail: int | None
) -> PageCursor | None:
    clause = " AND ".join(where)
    top = conn.execute(f"SELECT MAX(id) FROM logs WHERE {clause}", args).fetchone()[0]
    if top is None:
        return None
    after = -1
    if tail is not None:
        nth = conn.execute(
            f"SELECT id FROM logs WHERE {clause} ORDER BY id DESC LIMIT 1 OFFSET ?",
            [*args, tail - 1],
        ).fetchone()
        if nth is not None:
            after = int(nth[0]) - 1
    return PageCursor(after=after, upto=int(top))
