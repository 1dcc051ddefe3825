"""`voltui watch RUN`: a run's recorded events, then its new ones until it ends."""

from __future__ import annotations

import argparse
import asyncio

from rich.console import Console

from voltui.commands.common import exit_for, open_engine, show_event
from voltui.commands.run import summary
from voltui.engine.models import EventQuery

POLL = 0.25


async def cmd_watch(args: argparse.Namespace, console: Console) -> int:
    async with open_engine(args) as engine:
        detail = await engine.get_run(args.run_id)
        run_id = detail.run.id
        # A run's events all come from the one engine that owns it, stored in seq order, so
        # following by seq misses nothing (unlike following every engine's events).
        seen = -1
        if args.tail:
            recorded = await engine.events(EventQuery(correlation_id=run_id, limit=args.tail))
            for event in recorded:
                show_event(event, args.json, console)
                seen = max(seen, event.seq)
        else:  # --tail 0: only what happens from now on
            latest = await engine.events(EventQuery(correlation_id=run_id, limit=1))
            seen = latest[-1].seq if latest else -1
        run = detail.run
        while not run.state.finished:
            await asyncio.sleep(POLL)
            for event in await engine.events(EventQuery(correlation_id=run_id, since_seq=seen)):
                show_event(event, args.json, console)
                seen = max(seen, event.seq)
            run = (await engine.get_run(run_id)).run
        for event in await engine.events(EventQuery(correlation_id=run_id, since_seq=seen)):
            show_event(event, args.json, console)
        if not args.json:
            summary(console, await engine.get_run(run_id))
        return exit_for(run.state)
