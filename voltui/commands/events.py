"""`voltui events`: recorded events (the newest `--limit`), then with `--follow` new ones."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from rich.console import Console

from voltui.cli import EXIT_OK
from voltui.commands.common import open_engine, show_event
from voltui.engine.api import EngineAPI
from voltui.engine.models import Event, EventQuery

POLL = 0.25
FOLLOW_OVERLAP = 10.0
"""Seconds each poll looks back, covering other engines' write batching (see `follow`)."""


async def cmd_events(args: argparse.Namespace, console: Console) -> int:
    async with open_engine(args) as engine:
        run_id = (await engine.get_run(args.run_id)).run.id if args.run_id else None

        def query(**extra: float | int) -> EventQuery:
            return EventQuery(type=args.type, correlation_id=run_id, **extra)

        began = time.time()
        # What is already recorded near the end is history, shown or not: --limit N shows the
        # newest N, and the rest of that window must not come back as "new" on the first poll.
        history = await engine.events(query(since=began - FOLLOW_OVERLAP)) if args.follow else []
        shown: dict[int, float] = {}
        for event in await engine.events(query(limit=args.limit)):
            show_event(event, args.json, console)
            shown[event.seq] = event.ts
        if not args.follow:
            return EXIT_OK
        for event in history:
            shown.setdefault(event.seq, event.ts)
        await follow(engine, query, shown, began, lambda e: show_event(e, args.json, console))
    return EXIT_OK


async def follow(
    engine: EngineAPI,
    query: Callable[..., EventQuery],
    shown: dict[int, float],
    began: float,
    emit: Callable[[Event], None],
) -> None:
    """Print events recorded after the ones in `shown`, as they arrive, until interrupted.

    Several engines may write the file at once, each numbering from its own leased block, so a
    late batch from one can carry lower numbers than events already shown from another:
    following by seq would skip it. So each poll asks for everything since the newest shown
    time minus `FOLLOW_OVERLAP` (never earlier than the start's window, which `shown` holds
    completely) and drops what it has already printed.
    """
    floor = began - FOLLOW_OVERLAP
    while True:
        await asyncio.sleep(POLL)
        since = max(max(shown.values(), default=floor) - FOLLOW_OVERLAP, floor)
        for event in await engine.events(query(since=since)):
            if event.seq not in shown:
                emit(event)
                shown[event.seq] = event.ts
        for seq in [s for s, ts in shown.items() if ts < since]:
            del shown[seq]
