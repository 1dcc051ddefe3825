"""`voltui cancel RUN`: ask the engine to cancel an active run."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.text import Text

from voltui.cli import EXIT_OK
from voltui.commands.common import open_engine


async def cmd_cancel(args: argparse.Namespace, console: Console) -> int:
    async with open_engine(args) as engine:
        run = await engine.cancel_run(args.run_id)
    console.print(Text(f"run {run.id} {run.state.value}"))
    return EXIT_OK
