"""`voltui logs RUN [STEP]`: a step's output (or every step's, interleaved), and with `--follow`
its new lines until the run ends. Works on the embedded engine and over `--socket`/`--tcp`.

Recorded lines come from the run log (`EngineAPI.step_log`). Following reads the run's
`step:output` events instead, by sequence number: every event of one run is written by the one
engine that owns it, in order, so "after seq N" misses nothing and repeats nothing, whichever
process owns the run (a `voltui serve`, a `voltui run` elsewhere) and whichever engine answers.
The join between what was recorded and what follows is exact for the same reason: the backlog
is every output event up to the run's newest event at the start, and the follow starts there.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from rich.console import Console
from rich.text import Text

from voltui.cli import EXIT_OK
from voltui.commands.common import FINAL_EVENTS, open_engine, print_json
from voltui.engine.api import EngineAPI
from voltui.engine.errors import NotFoundError
from voltui.engine.models import Event, EventQuery, LogLine
from voltui.safetext import clean

POLL = 0.25
STATE_CHECK_EVERY = 8
"""Idle polls between checks of the run's state, for a run that ended without a final event
(its engine was killed; another engine marked it interrupted)."""

STREAM_STYLE = {"stdout": "", "stderr": "red", "engine": "dim"}


class LinePrinter:
    """Prints log lines: JSON objects, or text with a `step#attempt | ` prefix where needed."""

    def __init__(self, console: Console, *, as_json: bool, show_step: bool, show_attempt: bool):
        self.console = console
        self.as_json = as_json
        self.show_step = show_step
        self.show_attempt = show_attempt
        self.count = 0

    def __call__(self, line: LogLine) -> None:
        self.count += 1
        if self.as_json:
            print_json(line.model_dump(mode="json"))
            return
        prefix = clean(line.step_id) if self.show_step else ""
        if self.show_attempt and line.attempt != 1:
            prefix += f"#{line.attempt}"
        prefix = f"{prefix} | " if prefix else ""
        body = clean(line.line)
        if not self.console.is_terminal:  # piped: the text as is (sanitised), tabs kept
            sys.stdout.write(prefix + body + "\n")
            return
        text = Text(prefix, style="dim")
        text.append(body, style=STREAM_STYLE.get(line.stream, ""))
        self.console.print(text, soft_wrap=True, highlight=False)


def _as_line(run_id: str, event: Event) -> LogLine:
    d = event.data
    stream = d.get("stream") if d.get("stream") in STREAM_STYLE else "stdout"
    return LogLine(
        run_id=run_id,
        step_id=str(d.get("step", "")),
        attempt=int(d.get("attempt") or 1),
        stream=stream,
        ts=event.ts,
        line=str(d.get("line", "")),
    )


async def _recorded(
    engine: EngineAPI, run_id: str, steps: list[str], attempt: int | None, tail: int | None
) -> list[LogLine]:
    """The run log of `steps`, interleaved by time; `tail` keeps the last N lines in all."""
    lines: list[LogLine] = []
    for step in steps:
        lines += await engine.step_log(run_id, step, attempt=attempt, tail=tail)
    if len(steps) > 1:
        lines.sort(key=lambda line: line.ts)  # stable: each step's own order is kept
    return lines[-tail:] if tail else ([] if tail == 0 else lines)


async def _follow(
    engine: EngineAPI, run_id: str, steps: list[str], args: argparse.Namespace, out: LinePrinter
) -> None:
    wanted = set(steps)

    def mine(event: Event) -> bool:
        d = event.data
        return (
            event.type == "step:output"
            and d.get("step") in wanted
            and (args.attempt is None or d.get("attempt") == args.attempt)
        )

    newest = await engine.events(EventQuery(correlation_id=run_id, limit=1))
    last = newest[-1].seq if newest else -1
    if args.tail != 0:
        backlog = await engine.events(EventQuery(type="step:output", correlation_id=run_id))
        lines = [_as_line(run_id, e) for e in backlog if e.seq <= last and mine(e)]
        for line in lines[-args.tail :] if args.tail else lines:
            out(line)
    idle = 0
    while True:
        await asyncio.sleep(POLL)
        batch = await engine.events(EventQuery(correlation_id=run_id, since_seq=last))
        for event in batch:
            last = max(last, event.seq)
            if mine(event):
                out(_as_line(run_id, event))
            if event.type in FINAL_EVENTS:
                return
        idle = 0 if batch else idle + 1
        if idle and idle % STATE_CHECK_EVERY == 0:
            if (await engine.get_run(run_id)).run.state.finished:
                for event in await engine.events(EventQuery(correlation_id=run_id, since_seq=last)):
                    if mine(event):
                        out(_as_line(run_id, event))
                return


async def cmd_logs(args: argparse.Namespace, console: Console) -> int:
    async with open_engine(args) as engine:
        detail = await engine.get_run(args.run_id)
        run = detail.run
        step_ids = [s.id for s in detail.workflow.steps]
        if args.step is not None and args.step not in step_ids:
            shown = ", ".join(step_ids[:20]) + (", ..." if len(step_ids) > 20 else "")
            raise NotFoundError(f"run {run.id} has no step {args.step!r}; its steps: {shown}")
        steps = [args.step] if args.step is not None else step_ids
        out = LinePrinter(
            console,
            as_json=args.json,
            show_step=args.step is None,
            show_attempt=args.attempt is None,
        )
        if args.follow and not run.state.finished:
            await _follow(engine, run.id, steps, args, out)
        else:
            for line in await _recorded(engine, run.id, steps, args.attempt, args.tail):
                out(line)
        if out.count == 0 and console.is_terminal and not args.json:
            which = f"step {args.step}" if args.step else "any step"
            sys.stderr.write(f"(no output recorded for {which} of run {run.id})\n")
    return EXIT_OK
