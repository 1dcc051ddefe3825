"""`voltui validate FILE...`: check workflow files without running them."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.text import Text

from voltui.cli import EXIT_OK, EXIT_USER
from voltui.commands.common import load_cli_config
from voltui.commands.common import plain as _text
from voltui.engine.errors import UserError, WorkflowFileError
from voltui.engine.loader import load_workflow


def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    """Every problem of every file in one pass: one `FILE: line L, column C (place): what; fix`
    line each (the form editors and `grep` understand), so a file is fixed in one round."""
    limits = load_cli_config(args).limits
    bad = 0
    for path in args.files:
        try:
            wf = load_workflow(path, limits=limits)
        except WorkflowFileError as exc:
            bad += 1
            for problem in exc.problems:
                console.print(_text(f"{exc.path}: {problem}", "red"), soft_wrap=True)
            if exc.more:
                console.print(
                    _text(
                        f"{exc.path}: ... and {exc.more:,} more problems ({exc.total:,} in all); "
                        "fix these first, then validate again",
                        "red",
                    ),
                    soft_wrap=True,
                )
            continue
        except UserError as exc:
            bad += 1
            console.print(_text(str(exc), "red"), soft_wrap=True)
            continue
        console.print(
            Text("ok ", style="green") + _text(f"{path}: {wf.id} ({len(wf.steps)} steps)"),
            soft_wrap=True,
        )
    return EXIT_USER if bad else EXIT_OK
