"""`voltui list`: the workflows on offer and the latest runs.

On a terminal the tables fit its width (see `columns`); piped they are tab-separated and whole;
`--json` gives the models themselves.
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.text import Text

from voltui.cli import EXIT_OK
from voltui.commands.columns import Column, print_table
from voltui.commands.common import no_workflows_folder_hint, open_engine, plain, print_json
from voltui.engine.api import WorkflowInfo
from voltui.engine.durations import format_duration
from voltui.engine.models import Run, RunState
from voltui.states import CLI_STYLE as STATE_STYLE


def _workflow_columns(workflows: list[WorkflowInfo]) -> list[Column]:
    ident = Column("id")
    name = Column("name", give_way=2, flexible=True, min_width=12)
    steps = Column("steps", give_way=3, justify="right")
    file = Column("file", give_way=1, flexible=True, min_width=16, cut="start")
    for w in workflows:
        ident.cells.append(plain(w.id))
        name.cells.append(plain(w.name))
        steps.cells.append(Text(str(w.steps)))
        file.cells.append(plain(w.path or "", "dim"))
    return [ident, name, steps, file]


def _run_columns(runs: list[Run], terminal: bool) -> list[Column]:
    # Identity columns never go; then, as the terminal narrows: the error shrinks to its minimum,
    # the start time goes, then the duration, the step counts, and last the error itself.
    run = Column("run")
    workflow = Column("workflow", last_resort=True)
    state = Column("state")
    steps = Column("steps", give_way=3, justify="right")
    started = Column("started", give_way=1)
    duration = Column("duration", give_way=2, justify="right")
    error = Column("error", give_way=4, flexible=True, min_width=16)
    for r in runs:
        sym, style = STATE_STYLE.get(r.state.value, ("?", ""))
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started_at or r.created_at))
        run.cells.append(Text(r.id))
        workflow.cells.append(plain(r.workflow_id))
        state.cells.append(Text(f"{sym} {r.state.value}" if terminal else r.state.value, style))
        steps.cells.append(Text(f"{r.steps_done}/{r.steps_total}"))
        started.cells.append(Text(when, style="dim"))
        duration.cells.append(Text(format_duration(r.duration)))
        error.cells.append(plain(r.error or "", "red"))
    return [run, workflow, state, steps, started, duration, error]


def _no_runs(args: argparse.Namespace, workflows: list[WorkflowInfo]) -> str:
    if args.state:
        return f"no {args.state} runs"
    if workflows:
        # The sample a newcomer should try first when it is there: it runs to the end alone.
        ids = [w.id for w in workflows]
        first = "code_review" if "code_review" in ids else ids[0]
        return f"no runs yet: try `voltui run {first}`"
    return f"no runs yet, and {no_workflows_folder_hint()}"


async def cmd_list(args: argparse.Namespace, console: Console) -> int:
    state = RunState(args.state) if args.state else None
    async with open_engine(args) as engine:
        workflows = await engine.list_workflows()
        runs = await engine.list_runs(state=state, limit=args.limit)
    if args.json:
        print_json(
            {
                "workflows": [w.model_dump(mode="json") for w in workflows],
                "runs": [r.model_dump(mode="json") for r in runs],
            }
        )
        return EXIT_OK
    if workflows:
        print_table(console, "Workflows", _workflow_columns(workflows), "")
        console.file.write("\n")
    print_table(console, "Runs", _run_columns(runs, console.is_terminal), _no_runs(args, workflows))
    return EXIT_OK
