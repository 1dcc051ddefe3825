"""`voltui serve`: the engine headless behind a socket, logging what an operator needs to know.

Logged at INFO to stderr (the config's `log_level` decides what shows): where it listens, the
state file, the agents; every client that attaches or leaves; every run that starts or ends;
what retention removed. The log follows the engine's own events (`remote:*`, `workflow:*`,
`store:pruned`) through `EngineAPI.subscribe`, so it says exactly what the dashboards see.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from voltui.cli import EXIT_OK
from voltui.commands.common import load_cli_config, setup_logging
from voltui.engine.api import EngineAPI, SubscriptionLagged
from voltui.engine.durations import format_duration
from voltui.engine.models import Event
from voltui.safetext import clean

log = logging.getLogger("voltui.serve")

LOG_DRAIN = 0.2
RUN_END_LEVEL = {"failed": logging.WARNING, "interrupted": logging.WARNING}


def describe(event: Event) -> tuple[int, str] | None:
    """The log level and line for an event worth a line in the server log, else None."""
    d = event.data
    t = event.type
    if t == "remote:connected":
        mode = "read-only" if d.get("read_only") else "read-write"
        return logging.INFO, (
            f"client {d.get('client')} connected from {clean(d.get('peer', '?'))} ({mode}); "
            f"{d.get('clients')} attached"
        )
    if t == "remote:disconnected":
        return logging.INFO, (
            f"client {d.get('client')} disconnected ({clean(d.get('peer', '?'))}); "
            f"{d.get('clients')} attached"
        )
    if t == "store:pruned":
        return logging.INFO, (
            f"retention removed {d.get('runs', 0)} run(s), {d.get('events', 0)} event(s), "
            f"{d.get('log_lines', 0)} log line(s), {d.get('folders', 0)} run folder(s)"
        )
    run = clean(event.correlation_id or "?")
    name = clean(d.get("name") or d.get("workflow_id") or "")
    if t == "workflow:started":
        return logging.INFO, f"run {run} started: {name}"
    if t.startswith("workflow:") and t not in ("workflow:queued", "workflow:progress"):
        state = t.split(":", 1)[1]
        took = f" after {format_duration(d['duration'])}" if d.get("duration") else ""
        why = f": {clean(d['error'], max_len=300)}" if d.get("error") else ""
        return RUN_END_LEVEL.get(state, logging.INFO), f"run {run} {state}{took}: {name}{why}"
    return None


async def log_events(engine: EngineAPI, pattern: str) -> None:
    """Log every described event matching `pattern` until cancelled."""
    while True:
        try:
            async for batch in engine.subscribe(pattern):
                for event in batch:
                    described = describe(event)
                    if described is not None:
                        log.log(*described)
        except SubscriptionLagged as exc:  # a flood outran the log; say so and go on
            log.warning("server log skipped events after #%d (too many at once)", exc.last_seq)


async def cmd_serve(args: argparse.Namespace) -> int:
    """The engine headless, serving dashboards and CLI commands until SIGTERM/SIGINT."""
    from voltui.engine.orchestrator import Orchestrator
    from voltui.remote.paths import default_socket_path, default_token_path, load_or_create_token
    from voltui.remote.server import EngineServer

    config = load_cli_config(
        args,
        dask_address=getattr(args, "dask", None),
        metrics_address=getattr(args, "metrics", None),
    )
    setup_logging(config.log_level)
    tcp = getattr(args, "tcp", None)
    token = None
    if tcp is not None:
        token = load_or_create_token(getattr(args, "token_file", None) or default_token_path())
    engine = Orchestrator(config)
    socket_path = getattr(args, "socket", None) or default_socket_path()
    read_only_token_file = getattr(args, "read_only_token_file", None)
    server = EngineServer(
        engine,
        socket_path=socket_path,
        tcp=tcp,
        token=token,
        read_only_token=load_or_create_token(read_only_token_file)
        if read_only_token_file
        else None,
    )
    # serve_forever installs its own handlers once listening; a SIGTERM before that (a service
    # manager stopping us during start-up) must still end in an orderly stop, not a kill that
    # leaves the socket behind.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, server.request_stop)
    await engine.start()
    loggers = [
        asyncio.create_task(log_events(engine, pattern), name=f"serve-log-{pattern}")
        for pattern in ("remote:*", "workflow:*", "store:pruned")
    ]
    try:
        await server.start()
        # The server itself logs the socket it serves on; the TCP side is said here.
        if server.tcp_address:
            token_file = getattr(args, "token_file", None) or default_token_path()
            log.info(
                "also listening on tcp %s:%d; clients need the token in %s",
                *server.tcp_address,
                token_file,
            )
        log.info("state file %s; run folders in %s", engine.store.path, config.runs_dir())
        if engine.automation.metrics_address:
            log.info("metrics on http://%s/metrics", engine.automation.metrics_address)
        agents = config.agent_specs()
        log.info("%d agents: %s", len(agents), ", ".join(f"{a.id} ({a.kind})" for a in agents))
        folder = config.workflows_dir
        log.info("workflows folder %s", folder.resolve() if folder else "(none: runs by file path)")
        await server.serve_forever(on_stop=args.on_stop)
        await asyncio.sleep(LOG_DRAIN)  # let the last run ends reach the log
    finally:
        for task in loggers:
            task.cancel()
        for task in loggers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.stop()
        await engine.stop()
    log.info("stopped")
    return EXIT_OK
