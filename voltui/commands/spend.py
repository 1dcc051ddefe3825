"""`voltui spend [--since AGE] [--json]`: LLM tokens and cost of the kept runs, per model and
per agent, from the store (every process that shared it; survives restarts)."""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.text import Text

from voltui.cli import EXIT_OK
from voltui.commands.columns import Column, print_table
from voltui.commands.common import open_engine, plain, print_json
from voltui.engine.models import Usage
from voltui.engine.usage import format_usage


def _columns(first: str, usages: dict[str, Usage]) -> list[Column]:
    name = Column(first, last_resort=True)
    calls = Column("calls", justify="right")
    prompt = Column("prompt tok", give_way=2, justify="right")
    completion = Column("completion tok", give_way=1, justify="right")
    total = Column("tokens / cost", justify="right")
    # The biggest spender first: what an operator looks for.
    for key, used in sorted(usages.items(), key=lambda kv: (-kv[1].cost_usd, -kv[1].calls)):
        name.cells.append(plain(key))
        calls.cells.append(Text(f"{used.calls:,}"))
        prompt.cells.append(Text(f"{used.prompt_tokens:,}"))
        completion.cells.append(Text(f"{used.completion_tokens:,}"))
        total.cells.append(Text(format_usage(used)))
    return [name, calls, prompt, completion, total]


async def cmd_spend(args: argparse.Namespace, console: Console) -> int:
    since = time.time() - args.since if args.since else None
    async with open_engine(args) as engine:
        report = await engine.usage(since=since)
    if args.json:
        print_json(report.model_dump(mode="json"))
        return EXIT_OK
    window = (
        f"runs since {time.strftime('%Y-%m-%d %H:%M', time.localtime(since))}"
        if since
        else ("the kept runs")
    )
    if not report.total.calls:
        console.print(Text(f"no LLM calls in {window}"))
        return EXIT_OK
    head = f"LLM use of {window}: {report.runs} run(s), {format_usage(report.total)}"
    if not report.total.priced:
        head += " (+: some models have no price in [llm.prices], their cost is not counted)"
    console.print(Text(head))
    console.file.write("\n")
    print_table(console, "By model", _columns("model", report.by_model), "")
    console.file.write("\n")
    print_table(console, "By agent", _columns("agent", report.by_agent), "")
    return EXIT_OK
