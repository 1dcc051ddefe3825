"""What several commands share: the engine a command acts on, its config, and how events print.

Imported only once a command that needs it runs (see `voltui.commands`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from voltui.cli import EXIT_OK, EXIT_RUN_FAILED
from voltui.config import OrchestratorConfig, load_config
from voltui.engine.api import EngineAPI
from voltui.engine.models import Event, RunState
from voltui.safetext import clean
from voltui.states import CLI_STYLE as STATE_STYLE
from voltui.summaries import summarize

__all__ = ["STATE_STYLE"]

FINAL_EVENTS = frozenset(f"workflow:{s.value}" for s in RunState if s.finished)
SAMPLE_FOLDER = Path("sample-workflows")

log = logging.getLogger("voltui.cli")


# ---------------------------------------------------------------------- config and engine


def default_workflows_dir() -> Path | None:
    """`./sample-workflows` when voltui runs from the repository, else none."""
    return SAMPLE_FOLDER if SAMPLE_FOLDER.is_dir() else None


def load_cli_config(args: argparse.Namespace, **extra: Any) -> OrchestratorConfig:
    """The config for this command: flags over `VOLTUI_*` over the file over defaults."""
    workflows = getattr(args, "workflows", None) or default_workflows_dir()
    config = load_config(
        getattr(args, "config", None),
        db=getattr(args, "db", None),
        workflows_dir=workflows,
        **extra,
    )
    return config


def setup_logging(level: str) -> None:
    """Honour the config's `log_level`: voltui's own loggers at that level, to stderr.

    Other libraries stay at WARNING so `log_level = "debug"` shows voltui's story, not every
    dependency's. Called once per process by commands that print to a plain stream (not by the
    dashboards, whose screen owns the terminal).
    """
    numeric = {
        "debug": logging.DEBUG,
        "info": logging.INFO,
        "warn": logging.WARNING,
        "error": logging.ERROR,
    }[level]
    root = logging.getLogger()
    if not any(getattr(h, "_voltui", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        handler._voltui = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("voltui").setLevel(numeric)


def remote_client(
    args: argparse.Namespace, *, reconnect: bool, read_only: bool = False
) -> Any:  # RemoteEngine; imported lazily like the rest of the remote package
    """A client for the server named by --socket/--tcp (the default socket when neither)."""
    from voltui.remote.client import RemoteEngine
    from voltui.remote.paths import default_socket_path, default_token_path, read_token

    tcp = getattr(args, "tcp", None)
    token = None
    if tcp is not None:
        token = read_token(getattr(args, "token_file", None) or default_token_path())
    socket_path = getattr(args, "socket", None)
    if tcp is None and socket_path is None:
        socket_path = default_socket_path()
    return RemoteEngine(
        socket_path=socket_path if tcp is None else None,
        tcp=tcp,
        token=token,
        read_only=read_only,
        reconnect=reconnect,
        heartbeat=10.0 if reconnect else 0,
    )


def is_remote(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "socket", None) or getattr(args, "tcp", None))


@contextlib.asynccontextmanager
async def open_engine(args: argparse.Namespace) -> AsyncIterator[EngineAPI]:
    """The engine a one-shot command acts on: a server when named, else an embedded one."""
    if is_remote(args):
        client = remote_client(args, reconnect=False)
        await client.connect()
        try:
            yield client
        finally:
            await client.close()
        return
    from voltui.engine.orchestrator import Orchestrator

    config = load_cli_config(args)
    setup_logging(config.log_level)
    log.debug(
        "state file %s, workflows folder %s, config log level %s",
        config.db_path(),
        config.workflows_dir or "(none)",
        config.log_level,
    )
    engine = Orchestrator(config)
    await engine.start(watch=False)
    try:
        yield engine
    finally:
        await engine.stop()


def no_workflows_folder_hint() -> str:
    """Why no workflow ids are known here, and the fix (the folder looked for, flag, config)."""
    return (
        f"no workflows folder: {SAMPLE_FOLDER}/ is not in {Path.cwd()}; pass --workflows DIR, "
        "set workflows_dir in voltui.toml, or give a workflow file's path"
    )


# ---------------------------------------------------------------------- printing


PIPE_WIDTH = 100_000
"""Width a piped console renders at: lines a script reads are never wrapped or cut."""


def stdout_console() -> Console:
    """Rich output for stdout: fitted to a terminal; piped, as wide as each line needs."""
    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
        console.soft_wrap = True
    return console


def plain(value: object, style: str = "", max_len: int | None = None) -> Text:
    """Untrusted text as a Rich Text: sanitised, never parsed as markup."""
    return Text(clean(value, max_len=max_len), style=style)


def stamp(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def event_line(event: Event) -> Text:
    line = Text(stamp(event.ts) + " ", style="dim")
    if event.correlation_id:
        line.append(clean(event.correlation_id) + " ", style="dim")
    style = "red" if event.type.endswith(("failed", "error")) else ""
    line.append(f"{clean(event.type, max_len=40):<18} ", style=style or "bold")
    line.append(summarize(event))
    return line


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")
    sys.stdout.flush()


def show_event(event: Event, as_json: bool, console: Console) -> None:
    if as_json:
        print_json(event.model_dump(mode="json"))
    else:
        console.print(event_line(event), soft_wrap=True, highlight=False)


def exit_for(state: RunState) -> int:
    return EXIT_OK if state is RunState.SUCCEEDED else EXIT_RUN_FAILED
