"""`voltui doctor [--repair] [--json]`: check the run store, back it up and rebuild it."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.text import Text

from voltui.cli import EXIT_OK, EXIT_RUN_FAILED
from voltui.commands.common import load_cli_config, print_json


def cmd_doctor(args: argparse.Namespace, console: Console) -> int:
    """Exit 0 when the store is healthy (or was repaired), 1 when problems remain."""
    from voltui.engine.doctor import check, repair

    path = load_cli_config(args).db_path()
    report = repair(path) if args.repair else check(path)
    after = check(path) if args.repair else report
    if args.json:
        print_json(
            {
                "path": str(path),
                "problems": report.problems,
                "rows": report.rows,
                "bad_rows": report.bad_rows,
                "backup": report.backup,
                "kept": report.kept,
                "dropped": report.dropped,
                "healthy_now": after.healthy,
            }
        )
        return EXIT_OK if after.healthy else EXIT_RUN_FAILED
    if report.healthy:
        counts = ", ".join(f"{n} {t}" for t, n in report.rows.items() if n)
        console.print(Text(f"{path}: healthy ({counts or 'empty'})", style="green"))
        return EXIT_OK
    for problem in report.problems:
        console.print(Text(f"{path}: {problem}", style="red"))
    if not args.repair:
        console.print(
            Text(f"run `voltui doctor --db {path} --repair` to back it up and rebuild it")
        )
        return EXIT_RUN_FAILED
    kept = sum(report.kept.values())
    dropped = sum(report.dropped.values())
    console.print(
        Text(
            f"backed up to {report.backup}; rebuilt with {kept} row(s) kept and {dropped} "
            f"dropped; now {'healthy' if after.healthy else 'still damaged'}",
            style="green" if after.healthy else "red",
        )
    )
    return EXIT_OK if after.healthy else EXIT_RUN_FAILED
