"""`voltui run` and `voltui replay`: start a run, show its progress, exit by its final state."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from voltui.cli import EXIT_INTERRUPTED
from voltui.commands.common import (
    FINAL_EVENTS,
    event_line,
    exit_for,
    is_remote,
    no_workflows_folder_hint,
    open_engine,
    plain,
    print_json,
)
from voltui.engine.api import EngineAPI, ReplayRequest, StartRequest
from voltui.engine.durations import format_duration
from voltui.engine.errors import UserError
from voltui.engine.inputs import parse_input_pairs
from voltui.engine.models import BudgetSpec, Event, Run, RunDetail, RunState, StepState
from voltui.safetext import clean
from voltui.states import CLI_STYLE as STATE_STYLE

WORKFLOW_SUFFIXES = (".yaml", ".yml", ".json")


def _absolute_if_file(ref: str) -> str:
    """A server resolves relative paths from its own folder, so send a local file absolute."""
    path = Path(ref)
    return str(path.resolve()) if path.is_file() else ref


def _check_id_lookup(engine: EngineAPI, ref: str) -> None:
    """An id needs a workflows folder; without one, say which folder was looked for."""
    if Path(ref).exists() or Path(ref).suffix in WORKFLOW_SUFFIXES:
        return
    config = getattr(engine, "config", None)  # embedded only: a server has its own folder
    folder = getattr(config, "workflows_dir", None)
    if config is not None and (folder is None or not Path(folder).is_dir()):
        raise UserError(
            f"{ref!r} is not a workflow file, and there is {no_workflows_folder_hint()}"
        )


def budget_override(args: argparse.Namespace) -> BudgetSpec | None:
    """Only the limits given on the command line: the others stay the workflow's."""
    given: dict[str, Any] = {}
    if args.budget_tokens is not None:
        given["tokens"] = args.budget_tokens
    if args.budget_usd is not None:
        given["usd"] = args.budget_usd
    if args.over_budget is not None:
        given["on_exceed"] = args.over_budget
    return BudgetSpec(**given) if given else None


async def cmd_run(args: argparse.Namespace, console: Console) -> int:
    inputs = parse_input_pairs(args.input)
    workflow = _absolute_if_file(args.workflow)
    async with open_engine(args) as engine:
        if not is_remote(args):
            _check_id_lookup(engine, workflow)
        request = StartRequest(workflow=workflow, inputs=inputs, budget=budget_override(args))
        return await drive_run(engine, lambda: engine.start_workflow(request), args.json, console)


async def cmd_replay(args: argparse.Namespace, console: Console) -> int:
    request = ReplayRequest(
        run_id=args.run_id,
        mode="failed" if args.failed else "all",
        budget=budget_override(args),
    )
    async with open_engine(args) as engine:
        return await drive_run(engine, lambda: engine.replay_run(request), args.json, console)


def summary(console: Console, detail: RunDetail) -> None:
    run = detail.run
    sym, style = STATE_STYLE.get(run.state.value, ("?", ""))
    head = Text(f"{sym} ", style=style)
    head.append(f"{clean(run.workflow_name)} ", style="bold")
    head.append(f"run {run.id} {run.state.value}", style=style)
    head.append(f" in {format_duration(run.duration)}")
    console.print(head)
    if run.error:
        console.print(plain(run.error, "red"))
    console.print(steps_table(detail))
    if run.run_dir:
        console.print(Text("run folder: ", style="dim") + plain(run.run_dir))
    last = detail.steps[-1] if detail.steps else None
    if last is not None and last.output is not None and run.state is RunState.SUCCEEDED:
        console.print(Text("output: ", style="dim") + plain(json.dumps(last.output, default=str)))


def steps_table(detail: RunDetail, last_lines: dict[str, str] | None = None) -> Table:
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for col in ("", "step", "agent", "try", "time", "note"):
        table.add_column(col, no_wrap=col != "note", overflow="fold")
    by_id = {s.id: s for s in detail.workflow.steps}
    for sr in detail.steps:
        sym, style = STATE_STYLE.get(sr.state.value, ("?", ""))
        note = sr.error if sr.state in (StepState.FAILED, StepState.RETRYING) else None
        if sr.reused_from:
            note = f"reused from {sr.reused_from}"
        elif sr.cached:
            note = "from cache"
        elif note is None and last_lines:
            note = last_lines.get(sr.step_id)
        table.add_row(
            Text(sym, style=style),
            plain(by_id[sr.step_id].title if sr.step_id in by_id else sr.step_id),
            plain(sr.agent_id or "-", "dim"),
            Text(f"{sr.attempt}/{sr.max_attempts}" if sr.attempt else "-"),
            Text(format_duration(sr.duration) if sr.duration is not None else "-"),
            plain(note or "", "red" if sr.state is StepState.FAILED else "dim", max_len=120),
        )
    return table


async def follow_run(
    engine: EngineAPI, run_id: str, since_seq: int, on_event: Callable[[Event], None]
) -> None:
    """Feed the run's events to `on_event` until its final event."""
    async for batch in engine.subscribe("*", since_seq=since_seq):
        for event in batch:
            if event.correlation_id != run_id:
                continue
            on_event(event)
            if event.type in FINAL_EVENTS:
                return


async def drive_run(
    engine: EngineAPI, start: Callable[[], Awaitable[Run]], as_json: bool, console: Console
) -> int:
    """Start a run (new or replay), show its progress, and return the exit code."""
    since = (await engine.snapshot()).seq  # EngineAPI only: the same code drives a remote engine
    run = await start()
    loop = asyncio.get_running_loop()
    interrupted = False
    cancelling: list[asyncio.Task[Any]] = []

    def on_sigint() -> None:
        nonlocal interrupted
        if interrupted:  # second Ctrl-C: stop waiting for a graceful end
            raise KeyboardInterrupt
        interrupted = True
        console.print(Text("cancelling run (Ctrl-C again to force)…", style="yellow"))
        cancelling.append(loop.create_task(engine.cancel_run(run.id)))

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        loop.add_signal_handler(signal.SIGTERM, on_sigint)

    live_mode = console.is_terminal and not as_json
    last_lines: dict[str, str] = {}
    if live_mode:
        detail = await engine.get_run(run.id)
        with Live(steps_table(detail), console=console, refresh_per_second=8) as live:
            pending = {"dirty": False}

            def on_event(event: Event) -> None:
                if event.type == "step:output":
                    last_lines[event.data.get("step", "")] = clean(event.data.get("line", ""))
                pending["dirty"] = True

            async def refresher() -> None:
                while True:
                    await asyncio.sleep(0.125)
                    if pending["dirty"]:
                        pending["dirty"] = False
                        live.update(steps_table(await engine.get_run(run.id), last_lines))

            task = asyncio.create_task(refresher())
            try:
                await follow_run(engine, run.id, since, on_event)
            finally:
                task.cancel()
            live.update(steps_table(await engine.get_run(run.id), last_lines))
    else:

        def on_event(event: Event) -> None:
            if not as_json:
                console.print(event_line(event), soft_wrap=True, highlight=False)

        await follow_run(engine, run.id, since, on_event)
    final = await engine.wait_run(run.id)
    detail = await engine.get_run(final.id)
    if as_json:
        print_json(detail.model_dump(mode="json"))
    else:
        summary(console, detail)
    if interrupted:
        return EXIT_INTERRUPTED
    return exit_for(final.state)
