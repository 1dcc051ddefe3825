"""The `voltui` command: headless runs and queries of the engine's store, and the dashboards.

User mistakes (a bad flag value, a bad workflow file, an unknown run id) print one paragraph
and exit 2; a run that did not succeed exits 1; success exits 0. Tracebacks are for bugs only.

This module only builds the parser and dispatches. It imports nothing heavy (no Rich, no
pydantic-settings, no engine, no server), so `voltui --help` and argument mistakes answer at
once; a command's module (under `voltui.commands`) is imported once the command is known.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from voltui import __version__
from voltui.commands import argtypes as t

EXIT_OK, EXIT_RUN_FAILED, EXIT_USER, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_BROKEN_PIPE = 141
"""What a shell reports for a program ended by SIGPIPE (`voltui events | head -1`)."""
RUN_STATES = (
    "queued",
    "running",
    "waiting",
    "cancelling",
    "succeeded",
    "failed",
    "cancelled",
    "interrupted",
)
"""`RunState` values, spelled out so `--help` need not import the engine (a test keeps them
equal to the enum)."""


# ---------------------------------------------------------------------- parser


class Parser(argparse.ArgumentParser):
    """argparse with a one-paragraph error: what is wrong and where help is, no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER, f"{self.prog}: error: {message}\n(see `{self.prog} --help`)\n")


def completes(action: argparse.Action, kind: str) -> argparse.Action:
    """Tell shell completion what a value is: `runs`, `workflows`, `steps`, `files`, `dirs`."""
    action.complete = kind  # type: ignore[attr-defined]
    return action


def _state_flags(parser: argparse.ArgumentParser, default: Any = argparse.SUPPRESS) -> None:
    """--db, --config, --workflows: which state, config and workflows a command uses."""
    kw: dict[str, Any] = {} if default is argparse.SUPPRESS else {"default": default}
    completes(
        parser.add_argument(
            "--db",
            type=t.state_file,
            metavar="PATH",
            help="SQLite state file (default: $VOLTUI_DB, else the user data folder)",
            **kw,
        ),
        "files",
    )
    completes(
        parser.add_argument(
            "--config",
            type=t.config_file,
            metavar="PATH",
            help="config file (default: $VOLTUI_CONFIG, else ./voltui.toml)",
            **kw,
        ),
        "files",
    )
    completes(
        parser.add_argument(
            "--workflows",
            type=t.workflows_dir,
            metavar="DIR",
            help="folder of workflow files (default: ./sample-workflows)",
            **kw,
        ),
        "dirs",
    )


def _remote_flags(parser: argparse.ArgumentParser) -> None:
    """--socket, --tcp, --token-file: act on a `voltui serve` engine instead of an embedded one."""
    completes(
        parser.add_argument(
            "--socket", type=t.path, metavar="PATH", help="Unix socket of a `voltui serve` engine"
        ),
        "files",
    )
    parser.add_argument(
        "--tcp", type=t.tcp_address, metavar="HOST:PORT", help="TCP address of a `voltui serve`"
    )
    completes(
        parser.add_argument(
            "--token-file",
            type=t.path,
            metavar="PATH",
            help="token for --tcp (default: the server's)",
        ),
        "files",
    )


def _dashboard_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--read-only", action="store_true", help="show actions but refuse them")
    parser.add_argument(
        "--refresh", type=t.refresh_rate, default=10.0, metavar="HZ", help="repaint rate"
    )
    parser.add_argument("--no-mouse", action="store_true", help="leave the mouse to the terminal")
    parser.add_argument(
        "--theme", type=t.text, help="Textual theme name, e.g. textual-dark, ansi-dark"
    )


def _json_flag(parser: argparse.ArgumentParser, what: str = "print JSON") -> None:
    parser.add_argument("--json", action="store_true", help=what)


def _run_args(p: argparse.ArgumentParser) -> None:
    completes(
        p.add_argument(
            "workflow", type=t.text, help="workflow file, or the id of one in --workflows"
        ),
        "workflows",
    )
    p.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        type=t.key_value,
        metavar="KEY=VALUE",
        help="workflow input (repeatable)",
    )
    _budget_flags(p)
    _json_flag(p, "print the final run as JSON")


def _budget_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--budget-tokens",
        type=t.positive_int,
        metavar="N",
        help="this run's LLM token budget (replaces the workflow's)",
    )
    p.add_argument(
        "--budget-usd",
        type=t.usd,
        metavar="USD",
        help="this run's LLM cost budget in US dollars (replaces the workflow's)",
    )
    p.add_argument(
        "--over-budget",
        choices=["fail", "approve"],
        help="a call that could exceed the budget fails its step, or waits for approval",
    )


def _run_id(p: argparse.ArgumentParser) -> None:
    completes(p.add_argument("run_id", type=t.text, metavar="RUN", help="run id or prefix"), "runs")


def _approve_args(p: argparse.ArgumentParser) -> None:
    _run_id(p)
    p.add_argument("step_id", type=t.text, metavar="STEP", help="the approval step's id")
    p.add_argument("--reject", action="store_true", help="reject instead of approving")
    p.add_argument("--comment", type=t.text, metavar="TEXT", help="a note kept with the decision")


def _prune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--older-than",
        type=t.age,
        metavar="AGE",
        help="finished runs older than this (e.g. 30d, 12h); default: the config's policy",
    )
    p.add_argument(
        "--keep", type=t.count, metavar="N", help="keep the newest N finished runs, prune the rest"
    )
    p.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    _json_flag(p)


def _doctor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--repair", action="store_true", help="back the store up, then rebuild it from what reads"
    )
    _json_flag(p)


def _validate_args(p: argparse.ArgumentParser) -> None:
    completes(p.add_argument("files", nargs="+", type=t.path, metavar="FILE"), "files")


def _list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", choices=RUN_STATES, help="only runs in this state")
    p.add_argument(
        "--limit", type=t.positive_int, default=20, metavar="N", help="newest N runs (20)"
    )
    _json_flag(p)


def _watch_args(p: argparse.ArgumentParser) -> None:
    _run_id(p)
    p.add_argument(
        "--tail", type=t.count, default=20, metavar="N", help="recorded events to show first (20)"
    )
    _json_flag(p, "events as JSON lines")


def _events_args(p: argparse.ArgumentParser) -> None:
    completes(
        p.add_argument(
            "--run", dest="run_id", type=t.text, metavar="RUN", help="only this run's events"
        ),
        "runs",
    )
    p.add_argument("--type", type=t.text, metavar="PATTERN", help="type pattern, e.g. 'step:*'")
    p.add_argument(
        "--limit", type=t.positive_int, default=100, metavar="N", help="newest N events (100)"
    )
    p.add_argument("--follow", "-f", action="store_true", help="then print new events as they come")
    _json_flag(p, "events as JSON lines")


def _logs_args(p: argparse.ArgumentParser) -> None:
    _run_id(p)
    completes(
        p.add_argument(
            "step", nargs="?", type=t.text, metavar="STEP", help="one step (default: every step)"
        ),
        "steps",
    )
    p.add_argument(
        "--attempt", type=t.positive_int, metavar="N", help="only this attempt (default: all)"
    )
    p.add_argument("--tail", type=t.count, metavar="N", help="only the last N lines")
    p.add_argument(
        "--follow", "-f", action="store_true", help="then print new lines until the run ends"
    )
    _json_flag(p, "lines as JSON objects")


def _replay_args(p: argparse.ArgumentParser) -> None:
    _run_id(p)
    p.add_argument("--failed", action="store_true", help="re-run only steps that did not succeed")
    _budget_flags(p)
    _json_flag(p, "print the final run as JSON")


def _serve_args(p: argparse.ArgumentParser) -> None:
    completes(
        p.add_argument(
            "--socket",
            type=t.path,
            metavar="PATH",
            help="Unix socket (default: under $XDG_RUNTIME_DIR)",
        ),
        "files",
    )
    p.add_argument(
        "--tcp", type=t.tcp_address, metavar="HOST:PORT", help="also listen on TCP (token required)"
    )
    completes(
        p.add_argument(
            "--token-file",
            type=t.path,
            metavar="PATH",
            help="token file for --tcp (created if missing)",
        ),
        "files",
    )
    completes(
        p.add_argument(
            "--read-only-token-file",
            type=t.path,
            metavar="PATH",
            help="a second token for --tcp whose clients can only watch (created if missing)",
        ),
        "files",
    )
    p.add_argument(
        "--dask",
        type=t.text,
        metavar="ADDRESS",
        help="run steps on a Dask cluster (tcp://HOST:8786), or `local` for a LocalCluster",
    )
    p.add_argument(
        "--on-stop",
        choices=["cancel", "finish"],
        default="cancel",
        help="on SIGTERM/SIGINT: cancel active runs, or let them finish first",
    )
    p.add_argument(
        "--metrics", type=t.text, metavar="HOST:PORT", help="serve Prometheus /metrics there"
    )


def _schedules_args(p: argparse.ArgumentParser) -> None:
    _json_flag(p, "print the schedules as JSON")
    actions = p.add_subparsers(dest="action", metavar="ACTION")  # none given: list
    listing = actions.add_parser("list", help="every schedule, its next and last fire, its state")
    _json_flag(listing, "print the schedules as JSON")
    for name, verb in (("pause", "stop firing"), ("resume", "fire again")):
        act = actions.add_parser(name, help=f"{verb}: durable, seen by a running server")
        act.add_argument(
            "schedule_id", type=t.text, metavar="ID", help="workflow:name, or a workflow id"
        )
    for sub in actions.choices.values():
        _state_flags(sub)  # `voltui schedules pause ID --workflows DIR` reads naturally


def _spend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--since", type=t.age, metavar="AGE", help="only runs started within AGE, e.g. 7d or 12h"
    )
    _json_flag(p, "print the report as JSON")


def _completion_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("shell", choices=["bash", "zsh", "fish"], help="the shell to complete for")


@dataclass(frozen=True)
class Command:
    """One subcommand: its flags, and the handler to import once it is chosen.

    `handler` is `module:function` under `voltui.commands`; `console=True` passes it a Rich
    console for stdout. `flags` picks the shared groups: `state` (--db, --config, --workflows)
    and `remote` (--socket, --tcp, --token-file).
    """

    name: str
    help: str
    handler: str
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    flags: tuple[str, ...] = ("state", "remote")
    console: bool = True


COMMANDS: list[Command] = [
    Command("run", "run a workflow headless until it ends", "run:cmd_run", _run_args),
    Command(
        "validate", "check workflow files", "validate:cmd_validate", _validate_args, ("state",)
    ),
    Command("list", "list workflows and recent runs", "listing:cmd_list", _list_args),
    Command("watch", "follow a run until it ends", "watch:cmd_watch", _watch_args),
    Command("events", "show recorded events", "events:cmd_events", _events_args),
    Command("logs", "show a run's step output, or follow it", "logs:cmd_logs", _logs_args),
    Command("replay", "run a finished run again", "run:cmd_replay", _replay_args),
    Command("cancel", "cancel an active run", "cancel:cmd_cancel", _run_id),
    Command(
        "spend",
        "LLM tokens and cost of the kept runs, per model and per agent",
        "spend:cmd_spend",
        _spend_args,
    ),
    Command(
        "approve",
        "approve (or reject) a waiting approval step",
        "approve:cmd_approve",
        _approve_args,
    ),
    Command(
        "prune",
        "remove old runs now (the retention policy, or the limits given)",
        "prune:cmd_prune",
        _prune_args,
        ("state",),
    ),
    Command(
        "doctor",
        "check the run store; --repair backs it up and rebuilds it",
        "doctor:cmd_doctor",
        _doctor_args,
        ("state",),
    ),
    Command(
        "serve",
        "run the engine headless for dashboards",
        "serve:cmd_serve",
        _serve_args,
        ("state",),
        console=False,
    ),
    Command(
        "schedules",
        "list schedules with their next fire; pause or resume one",
        "schedules:cmd_schedules",
        _schedules_args,
        ("state",),
    ),
    Command(
        "attach",
        "open the dashboard on a `voltui serve`",
        "dashboard:cmd_attach",
        _dashboard_flags,
        ("remote",),
        console=False,
    ),
    Command(
        "schema",
        "print the JSON Schema of workflow files",
        "schema:cmd_schema",
        None,
        (),
        console=False,
    ),
    Command(
        "completion",
        "print a shell completion script (bash, zsh, fish)",
        "completion:cmd_completion",
        _completion_args,
        (),
        console=False,
    ),
]
DASHBOARD = Command("", "the dashboard", "dashboard:cmd_dashboard", None, (), console=False)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="voltui",
        description="Orchestrate AI-agent workflows: DAGs of steps run by agents, "
        "recorded in SQLite. Plain `voltui` opens the dashboard.",
    )
    parser.add_argument("--version", action="version", version=f"voltui {__version__}")
    dash = parser.add_argument_group("dashboard (plain `voltui`)")
    _dashboard_flags(dash)  # type: ignore[arg-type]
    _state_flags(dash, default=None)  # type: ignore[arg-type]
    # SUPPRESS: a subcommand must not reset `voltui --db X run ...` to its own default.
    shared = {
        "state": Parser(add_help=False, argument_default=argparse.SUPPRESS),
        "remote": Parser(add_help=False, argument_default=argparse.SUPPRESS),
    }
    _state_flags(shared["state"])
    _remote_flags(shared["remote"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        p = sub.add_parser(
            command.name,
            parents=[shared[f] for f in command.flags],
            help=command.help,
            description=command.help[0].upper() + command.help[1:] + ".",
        )
        if command.arguments is not None:
            command.arguments(p)
    return parser


# ---------------------------------------------------------------------- running


def _handler(command: Command) -> Callable[..., Any]:
    module, _, function = command.handler.partition(":")
    return getattr(importlib.import_module(f"voltui.commands.{module}"), function)


def _run(command: Command, args: argparse.Namespace) -> int:
    handler = _handler(command)
    if command.console:
        from voltui.commands.common import stdout_console

        result = handler(args, stdout_console())
    else:
        result = handler(args)
    if isinstance(result, types.CoroutineType):
        import asyncio

        result = asyncio.run(result)
    return int(result)


def _user_error(exc: BaseException) -> str | None:
    """The message for an exception that is the user's to fix, else None (a bug: traceback)."""
    from voltui.engine.errors import UserError
    from voltui.engine.store import StoreError

    if isinstance(exc, UserError | StoreError):  # StoreError: --db unusable (not SQLite, locked)
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:  # a path we were given or derive
        return f"{exc.filename}: {exc.strerror or exc}"
    return None


def clean_multiline(text: str) -> str:
    """Error paragraphs may list problems on lines of their own; keep the newlines."""
    from voltui.safetext import clean

    return "\n".join(clean(line) for line in text.splitlines())


def _say_error(message: str) -> None:
    """One paragraph on stderr; newlines the message itself has (a list of problems) are kept."""
    colour = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    head = "\x1b[1;31merror:\x1b[0m " if colour else "error: "
    sys.stderr.write(head + clean_multiline(message) + "\n")
    sys.stderr.flush()


def _quiet_stdout() -> None:
    """After a closed pipe, point stdout at /dev/null so the exit-time flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["__complete"]:  # hidden: what shell completion asks for (see completion.py)
        from voltui.commands.completion import complete

        return complete(words[1:])
    args = build_parser().parse_args(words)
    command = next((c for c in COMMANDS if c.name == args.command), DASHBOARD)
    try:
        return _run(command, args)
    except BrokenPipeError:  # `voltui events | head -1`: the reader has all it wanted
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:
        message = _user_error(exc)
        if message is None:
            raise
        _say_error(message)
        return EXIT_USER


if __name__ == "__main__":
    raise SystemExit(main())
