"""`voltui schedules [list | pause ID | resume ID]`: the schedules of the workflows folder.

Schedule state (cursor, paused) lives in the engine's SQLite file, so this command works on the
file directly with a one-shot engine: a pause written here is seen by a running `voltui serve` or
dashboard on the same file at its next tick, like any other row in the shared store.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_parser", "cmd_schedules"]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register the subcommand on the main parser's subparsers."""
    p = sub.add_parser(
        "schedules",
        parents=parents,
        help="list schedules with their next fire time; pause or resume one",
        description="Schedules come from `schedules:` in the workflow files of --workflows. "
        "ID is workflow:name (name is the schedule's id, or its number), or just the "
        "workflow id when it has one schedule.",
    )
    p.add_argument(
        "action", nargs="?", choices=["list", "pause", "resume"], default="list", help="(list)"
    )
    p.add_argument("schedule_id", nargs="?", metavar="ID", help="schedule to pause or resume")
    p.add_argument("--json", action="store_true", help="print the schedules as JSON")


async def cmd_schedules(args: argparse.Namespace, console: Any) -> int:
    from rich.table import Table
    from rich.text import Text

    from voltui.cli import EXIT_OK, _config
    from voltui.engine.errors import UserError
    from voltui.engine.orchestrator import Orchestrator
    from voltui.engine.schedules import local_time
    from voltui.safetext import clean

    if args.action in ("pause", "resume") and not args.schedule_id:
        raise UserError(
            f"`voltui schedules {args.action}` needs a schedule ID; "
            "`voltui schedules list` shows them"
        )
    if args.action == "list" and args.schedule_id:
        raise UserError(
            f"`voltui schedules list` takes no ID (got {args.schedule_id!r}); "
            "did you mean pause or resume?"
        )
    engine = Orchestrator(_config(args))
    await engine.start(watch=False)
    try:
        if args.action != "list":
            info = await engine.automation.set_paused(args.schedule_id, args.action == "pause")
            state = "paused" if info.paused else "active"
            nxt = local_time(info.next_fire_at) if info.next_fire_at else "-"
            console.print(Text(f"schedule {clean(info.id)} {state}; next fire {nxt}"))
            return EXIT_OK
        schedules = await engine.automation.schedules()
    finally:
        await engine.stop()
    if args.json:
        sys.stdout.write(json.dumps([s.model_dump(mode="json") for s in schedules]) + "\n")
        return EXIT_OK
    if not schedules:
        console.print(
            Text(
                'no schedules: add `schedules: [{cron: "*/15 * * * *"}]` to a workflow file '
                "in the workflows folder (--workflows)"
            )
        )
        return EXIT_OK
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("schedule", overflow="fold")
    table.add_column("next fire", overflow="fold")
    table.add_column("last fired", overflow="fold")
    table.add_column("state", no_wrap=True)
    for s in schedules:
        spec = Text(clean(s.spec))
        spec.append(f"\noverlap {s.overlap}, catchup {s.catchup}", style="dim")
        table.add_row(
            Text(clean(s.id)),
            spec,
            Text(local_time(s.next_fire_at) if s.next_fire_at else "-"),
            Text(local_time(s.last_fired_at) if s.last_fired_at else "-", style="dim"),
            Text("paused", style="yellow") if s.paused else Text("active", style="green"),
        )
    console.print(table)
    return EXIT_OK
