"""Run a development-pipeline step as a command step: `python -m devpipe.cli STEP`.

This follows voltui's command-step contract: the step's JSON document arrives on stdin (with
VOLTUI_* environment variables as a fallback, so the step also runs by hand), log lines go to
stdout, the output is the last stdout line as JSON, and a failure is a message on stderr plus a
non-zero exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devpipe import steps
from devpipe.core import PipelineError

STEPS: dict[str, Callable[[Any], Any]] = {
    "requirement_analysis": steps.requirement_analysis,
    "task_generation": steps.task_generation,
    "agent_assignment": steps.agent_assignment,
    "task_execution": steps.task_execution,
    "validation": steps.validation,
    "deployment": steps.deployment,
}


@dataclass
class CliContext:
    """Stand-in for voltui's StepContext, built from stdin and the environment."""

    run_id: str
    attempt: int
    inputs: dict[str, Any]
    upstream: dict[str, Any]
    base_dir: Path
    run_dir: Path
    params: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def log(self, line: str) -> None:
        print(line, flush=True)


def _prefixed(prefix: str) -> dict[str, str]:
    return {k[len(prefix) :].lower(): v for k, v in os.environ.items() if k.startswith(prefix)}


def read_payload() -> dict[str, Any]:
    """The stdin JSON document, or {} when stdin is a terminal or empty."""
    if sys.stdin is None or sys.stdin.isatty():
        return {}
    text = sys.stdin.read().strip()
    if not text:
        return {}
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipelineError(f"stdin is not the step's JSON document: {exc}") from exc
    return payload if isinstance(payload, dict) else {}


def build_context(payload: dict[str, Any], run_dir: str | None) -> CliContext:
    env = os.environ
    folder = run_dir or payload.get("run_dir") or env.get("VOLTUI_RUN_DIR")
    if not folder:
        raise PipelineError("no run folder: give --run-dir or run under voltui (VOLTUI_RUN_DIR)")
    base = env.get("VOLTUI_WORKFLOW_DIR") or str(Path(__file__).resolve().parent.parent)
    return CliContext(
        run_id=str(payload.get("run_id") or env.get("VOLTUI_RUN_ID", "manual")),
        attempt=int(payload.get("attempt") or env.get("VOLTUI_ATTEMPT", "1")),
        inputs=payload.get("inputs") or _prefixed("VOLTUI_INPUT_"),
        upstream=payload.get("upstream") or {},
        base_dir=Path(base),
        run_dir=Path(folder),
        params=payload.get("params") or _prefixed("VOLTUI_PARAM_"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devpipe.cli", description=__doc__)
    parser.add_argument("step", choices=sorted(STEPS))
    parser.add_argument("--run-dir", help="run folder (default: stdin run_dir or VOLTUI_RUN_DIR)")
    args = parser.parse_args(argv)
    try:
        ctx = build_context(read_payload(), args.run_dir)
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        result = STEPS[args.step](ctx)
        if inspect.isawaitable(result):
            result = asyncio.run(result)
    except PipelineError as exc:
        print(f"error: {args.step}: {exc}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
