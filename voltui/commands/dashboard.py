"""Plain `voltui` (the dashboard on an embedded engine) and `voltui attach` (on a server)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from voltui.cli import EXIT_OK
from voltui.commands.common import load_cli_config, remote_client
from voltui.engine.errors import UserError


def _level(name: str) -> int:
    return {"debug": 10, "info": 20, "warn": 30, "error": 40}[name]


async def cmd_dashboard(args: argparse.Namespace) -> int:
    """The Textual dashboard on an embedded engine (sample workflows and agents by default)."""
    from voltui.engine.orchestrator import Orchestrator
    from voltui.tui.app import VoltApp  # Textual loads only for the dashboards

    config = load_cli_config(args)
    # The screen owns the terminal: no log handler on stderr, only the level the config asks.
    logging.getLogger("voltui").setLevel(_level(config.log_level))
    engine = Orchestrator(config)
    await engine.start()
    try:
        app = VoltApp(
            engine,
            read_only=args.read_only,
            refresh_hz=args.refresh,
            keymap=config.keymap,
            embedded=True,
        )
        apply_theme(app, args.theme)
        await app.run_async(mouse=not args.no_mouse)
    finally:
        await engine.stop()
    return EXIT_OK


async def cmd_attach(args: argparse.Namespace) -> int:
    """The dashboard on a `voltui serve` engine; reconnects with backoff if the link drops."""
    from voltui.tui.app import VoltApp

    client = remote_client(args, reconnect=True, read_only=args.read_only)
    await client.connect()
    try:
        app = VoltApp(client, read_only=args.read_only, refresh_hz=args.refresh, embedded=False)
        apply_theme(app, args.theme)
        await app.run_async(mouse=not args.no_mouse)
    finally:
        await client.close()
    return EXIT_OK


def apply_theme(app: Any, theme: str | None) -> None:
    if theme:
        if theme not in app.available_themes:
            names = ", ".join(sorted(app.available_themes))
            raise UserError(f"unknown theme {theme!r}; choose one of: {names}")
        app.theme = theme
