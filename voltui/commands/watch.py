"""`voltui watch RUN`: a run's recorded events, then its new ones until it ends."""

from __future__ import annotations

import argparse
import asyncio

from rich.console import Console

from voltui.commands.common import FINAL_EVENTS, exit_for, open_engine, show_event
from voltui.commands.run import summary
from voltui.engine.models import EventQuery

POLL = 0.25
FINAL_EVENT_GRACE = 5.0
"""Seconds to wait, once the run shows finished, for its final event to be stored: the run's
row and its last event are separate writes. A run whose engine died may never get one."""


async def cmd_watch(args: argparse.Namespace, console: Console) -> int:
    async with open_engine(args) as engine:
        detail = await engine.get_run(args.run_id)
        run_id = detail.run.id
        # A run's events all come from the one engine that owns it, stored in seq order, so
        # following by seq misses nothing (unlike following every engine's events).
        seen = -1
        ended = False
        if args.tail:
            recorded = await engine.events(EventQuery(correlation_id=run_id, limit=args.tail))
            for event in recorded:
                show_event(event, args.json, console)
                seen = max(seen, event.seq)
                ended = ended or event.type in FINAL_EVENTS
        else:  # --tail 0: only what happens from now on
            latest = await engine.events(EventQuery(correlation_id=run_id, limit=1))
            seen = latest[-1].seq if latest else -1
        run = detail.run
        loop = asyncio.get_running_loop()
        finished_since = loop.time() - FINAL_EVENT_GRACE if run.state.finished else None
        while not ended:
            for event in await engine.events(EventQuery(correlation_id=run_id, since_seq=seen)):
                show_event(event, args.json, console)
                seen = max(seen, event.seq)
                ended = ended or event.type in FINAL_EVENTS
            if ended:
                break
            run = (await engine.get_run(run_id)).run
            if run.state.finished:
                finished_since = finished_since if finished_since is not None else loop.time()
                if loop.time() - finished_since >= FINAL_EVENT_GRACE:
                    break
            await asyncio.sleep(POLL)
        detail = await engine.get_run(run_id)
        if not args.json:
            summary(console, detail)
        return exit_for(detail.run.state)
