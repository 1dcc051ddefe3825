"""`voltui validate FILE...`: check workflow files without running them.

The body of `cmd_validate` is kept as it was in `voltui/cli.py` (another change owns it); the
names it uses are imported here under the names it knew.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.text import Text

from voltui.cli import EXIT_OK, EXIT_USER
from voltui.commands.common import plain as _text
from voltui.engine.errors import UserError
from voltui.engine.loader import load_workflow


def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    bad = 0
    for path in args.files:
        try:
            wf = load_workflow(path)
        except UserError as exc:
            bad += 1
            console.print(_text(str(exc), "red"), soft_wrap=True)
            continue
        console.print(
            Text("ok ", style="green") + _text(f"{path}: {wf.id} ({len(wf.steps)} steps)")
        )
    return EXIT_USER if bad else EXIT_OK
