"""`voltui prune [--older-than 30d] [--keep N] [--dry-run] [--json]`: apply retention now."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.text import Text

from voltui.cli import EXIT_OK
from voltui.commands.common import load_cli_config, print_json, setup_logging


async def cmd_prune(args: argparse.Namespace, console: Console) -> int:
    """Without limits the configured `[retention]` policy applies (what `voltui serve` does)."""
    from voltui.engine.orchestrator import Orchestrator

    config = load_cli_config(args)
    setup_logging(config.log_level)
    engine = Orchestrator(config)
    await engine.start(watch=False)
    try:
        report = await engine.prune(
            older_than=args.older_than, keep=args.keep, dry_run=args.dry_run
        )
    finally:
        await engine.stop()
    figures = {
        "dry_run": args.dry_run,
        "runs": report.runs,
        "steps": report.steps,
        "log_lines": report.log_lines,
        "events": report.events + report.extra_events,
        "folders": report.folders,
    }
    if args.json:
        print_json(figures)
        return EXIT_OK
    verb = "would remove" if args.dry_run else "removed"
    if not report.runs and not report.extra_events:
        console.print(Text(f"nothing to prune in {config.db_path()}"))
        return EXIT_OK
    console.print(
        Text(
            f"{verb} {len(report.runs)} run(s), {report.steps} step state(s), "
            f"{report.log_lines} log line(s), {figures['events']} event(s) and "
            f"{len(report.folders)} run folder(s) from {config.db_path()}"
        )
    )
    for run_id in report.runs[:20]:
        console.print(Text(f"  {run_id}", style="dim"))
    if len(report.runs) > 20:
        console.print(Text(f"  ... and {len(report.runs) - 20} more", style="dim"))
    return EXIT_OK
