"""`voltui logs RUN [STEP]`: a step's output (or every step's, interleaved), and with `--follow`
its new lines until the run ends. Works on the embedded engine and over `--socket`/`--tcp`.

Lines come from the run log (`EngineAPI.step_log`), the one complete record: live `step:output`
events are rate-limited per attempt (a chatty step's surplus is in the log only), so following
the events would skip lines. Events only say *which* attempt has new output and when the run
ends: the follower reads the run's events by sequence number (every event of one run comes
from the one engine that owns it, in order, so nothing is missed whoever owns the run), and for
each attempt with news re-reads that attempt's log and prints the lines past the ones it has
printed. The log is append-only and capped per attempt (`max_log_lines`), so counting lines is
exact and a re-read costs at most the cap; big logs are re-read at most once a second.
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
from voltui.engine.models import EventQuery, LogLine
from voltui.safetext import clean

POLL = 0.25
STATE_CHECK_EVERY = 8
"""Idle polls between checks of the run's state, for a run that ended without a final event
(its engine was killed; another engine marked it interrupted)."""

BIG_LOG = 1000
BIG_LOG_EVERY = 1.0
"""An attempt's log longer than BIG_LOG lines is re-read at most once per BIG_LOG_EVERY s."""

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


Attempt = tuple[str, int]


class _Follower:
    """What has been printed of each attempt's log, and the re-reads that bring it up to date."""

    def __init__(self, engine: EngineAPI, run_id: str, attempt: int | None, out: LinePrinter):
        self.engine = engine
        self.run_id = run_id
        self.attempt = attempt
        self.out = out
        self.printed: dict[Attempt, int] = {}
        self.next_read: dict[Attempt, float] = {}

    def count(self, lines: list[LogLine]) -> None:
        for line in lines:
            key = (line.step_id, line.attempt)
            self.printed[key] = self.printed.get(key, 0) + 1

    async def catch_up(self, key: Attempt, now: float) -> bool:
        """Print the attempt's lines past those printed; False if it must wait its turn."""
        if now < self.next_read.get(key, 0.0):
            return False
        step, attempt = key
        lines = await self.engine.step_log(self.run_id, step, attempt=attempt)
        for line in lines[self.printed.get(key, 0) :]:
            self.out(line)
        self.printed[key] = len(lines)
        if len(lines) > BIG_LOG:
            self.next_read[key] = now + BIG_LOG_EVERY
        return True

    async def final(self, steps: list[str]) -> None:
        """Everything left in the log of every attempt of `steps`, once the run has ended."""
        rest: list[LogLine] = []
        for step in steps:
            lines = await self.engine.step_log(self.run_id, step, attempt=self.attempt)
            seen: dict[Attempt, int] = {}
            for line in lines:
                key = (line.step_id, line.attempt)
                seen[key] = seen.get(key, 0) + 1
                if seen[key] > self.printed.get(key, 0):
                    rest.append(line)
        rest.sort(key=lambda line: line.ts)
        for line in rest:
            self.out(line)


async def _follow(
    engine: EngineAPI, run_id: str, steps: list[str], args: argparse.Namespace, out: LinePrinter
) -> None:
    wanted = set(steps)
    follower = _Follower(engine, run_id, args.attempt, out)
    # The event cursor is taken before the backlog is read: output logged after the read has
    # an event after the cursor, so the attempt is re-read and nothing falls in between.
    newest = await engine.events(EventQuery(correlation_id=run_id, limit=1))
    last = newest[-1].seq if newest else -1
    recorded = await _recorded(engine, run_id, steps, args.attempt, None)
    follower.count(recorded)
    for line in recorded[-args.tail :] if args.tail else ([] if args.tail == 0 else recorded):
        out(line)
    loop = asyncio.get_running_loop()
    dirty: set[Attempt] = set()
    idle = 0
    while True:
        await asyncio.sleep(POLL)
        batch = await engine.events(EventQuery(correlation_id=run_id, since_seq=last))
        for event in batch:
            last = max(last, event.seq)
            if event.type in FINAL_EVENTS:
                await follower.final(steps)
                return
            d = event.data
            if event.type == "step:output" and d.get("step") in wanted:
                if args.attempt is None or d.get("attempt") == args.attempt:
                    dirty.add((str(d["step"]), int(d.get("attempt") or 1)))
        now = loop.time()
        for key in sorted(dirty):
            if await follower.catch_up(key, now):
                dirty.discard(key)
        idle = 0 if batch else idle + 1
        if idle and idle % STATE_CHECK_EVERY == 0:
            if (await engine.get_run(run_id)).run.state.finished:
                await follower.final(steps)
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
