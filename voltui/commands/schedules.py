"""`voltui schedules [list | pause ID | resume ID]`: the schedules of the workflows folder.

Schedule state (cursor, paused) lives in the engine's SQLite file, so this command works on the
file directly with a one-shot engine: a pause written here is seen by a running `voltui serve` or
dashboard on the same file at its next tick, like any other row in the shared store.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.text import Text

from voltui.cli import EXIT_OK
from voltui.commands.columns import Column, print_table
from voltui.commands.common import load_cli_config, plain, print_json
from voltui.engine.api import ScheduleInfo
from voltui.engine.schedules import local_time

EMPTY = (
    'no schedules: add `schedules: [{cron: "*/15 * * * *"}]` to a workflow file in the '
    "workflows folder (--workflows)"
)


def _columns(schedules: list[ScheduleInfo], terminal: bool) -> list[Column]:
    ident = Column("id", last_resort=True)
    spec = Column("schedule", give_way=4, flexible=True, min_width=14)
    nxt = Column("next fire")
    last = Column("last fired", give_way=1)
    state = Column("state")
    policy = Column("overlap/catchup", give_way=2)
    for s in schedules:
        ident.cells.append(plain(s.id))
        spec.cells.append(plain(s.spec))
        nxt.cells.append(Text(local_time(s.next_fire_at) if s.next_fire_at else "-"))
        last.cells.append(Text(local_time(s.last_fired_at) if s.last_fired_at else "-", "dim"))
        style = "yellow" if s.paused else ("green" if terminal else "")
        state.cells.append(Text("paused" if s.paused else "active", style))
        policy.cells.append(Text(f"{s.overlap}/{s.catchup}", "dim"))
    return [ident, spec, nxt, last, state, policy]


async def cmd_schedules(args: argparse.Namespace, console: Console) -> int:
    from voltui.engine.orchestrator import Orchestrator

    action = args.action or "list"
    engine = Orchestrator(load_cli_config(args))
    await engine.start(watch=False)
    try:
        if action != "list":
            info = await engine.automation.set_paused(args.schedule_id, action == "pause")
            state = "paused" if info.paused else "active"
            nxt = local_time(info.next_fire_at) if info.next_fire_at else "-"
            console.print(plain(f"schedule {info.id} {state}; next fire {nxt}"))
            return EXIT_OK
        schedules = await engine.automation.schedules()
    finally:
        await engine.stop()
    if args.json:
        print_json([s.model_dump(mode="json") for s in schedules])
        return EXIT_OK
    print_table(console, "Schedules", _columns(schedules, console.is_terminal), EMPTY)
    return EXIT_OK
