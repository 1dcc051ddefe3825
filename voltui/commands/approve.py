"""`voltui approve RUN STEP [--reject] [--comment TEXT]`: decide a waiting approval step."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.text import Text

from voltui.cli import EXIT_OK
from voltui.commands.common import open_engine
from voltui.engine.api import ApprovalRequest
from voltui.engine.models import RunState


async def cmd_approve(args: argparse.Namespace, console: Console) -> int:
    """Decide a waiting approval step of a run owned by any process sharing the store."""
    request = ApprovalRequest(
        run_id=args.run_id,
        step_id=args.step_id,
        approve=not args.reject,
        comment=args.comment,
        via="cli",
    )
    async with open_engine(args) as engine:
        decided = await engine.approve(request)
        run = (await engine.get_run(decided.run_id)).run
    line = f"step {decided.step_id} of run {decided.run_id} {decided.decision} by {decided.by}"
    console.print(Text(line + (f": {decided.comment}" if decided.comment else "")))
    if run.state is RunState.INTERRUPTED:
        console.print(
            Text(
                f"run {run.id} was interrupted (its engine stopped); the decision is kept: "
                "the next `voltui serve` or dashboard started on this state file continues "
                f"the run from it (or `voltui replay {run.id} --failed` goes on in a new run)"
            )
        )
    return EXIT_OK
