"""The `voltui` command: headless runs and queries of the engine's store.

User mistakes (a bad workflow file, an unknown run id) print one paragraph and exit 2; a run
that did not succeed exits 1; success exits 0. Tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from voltui import __version__
from voltui.cli_schedules import add_parser as add_schedules_parser
from voltui.cli_schedules import cmd_schedules
from voltui.config import OrchestratorConfig, load_config
from voltui.engine.api import EngineAPI, ReplayRequest, StartRequest
from voltui.engine.durations import format_duration
from voltui.engine.errors import UserError
from voltui.engine.inputs import parse_input_pairs
from voltui.engine.loader import load_workflow, workflow_json_schema
from voltui.engine.models import Event, EventQuery, RunDetail, RunState, StepState
from voltui.engine.orchestrator import Orchestrator
from voltui.engine.store import StoreError
from voltui.remote.client import RemoteEngine
from voltui.remote.paths import (
    default_socket_path,
    default_token_path,
    load_or_create_token,
    parse_tcp,
    read_token,
)
from voltui.remote.server import EngineServer
from voltui.safetext import clean
from voltui.states import CLI_STYLE as STATE_STYLE
from voltui.summaries import summarize

EXIT_OK, EXIT_RUN_FAILED, EXIT_USER, EXIT_INTERRUPTED = 0, 1, 2, 130
FOLLOW_OVERLAP = 10.0
"""Seconds `events --follow` looks back on each poll, covering other engines' write batching."""
FINAL_EVENTS = {f"workflow:{s.value}" for s in RunState if s.finished}


def default_workflows_dir() -> Path | None:
    candidate = Path("sample-workflows")
    return candidate if candidate.is_dir() else None


# ---------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voltui",
        description="Orchestrate AI-agent workflows: DAGs of steps run by agents, "
        "recorded in SQLite.",
    )
    parser.add_argument("--version", action="version", version=f"voltui {__version__}")
    dash = parser.add_argument_group("dashboard (plain `voltui`)")
    dash.add_argument("--read-only", action="store_true", help="show actions but refuse them")
    dash.add_argument("--refresh", type=float, default=10.0, metavar="HZ", help="repaint rate")
    dash.add_argument("--no-mouse", action="store_true", help="leave the mouse to the terminal")
    dash.add_argument("--theme", help="Textual theme name, e.g. textual-dark, ansi-dark")
    dash.add_argument("--db", type=Path, help="SQLite state file (default: user data dir)")
    dash.add_argument("--config", type=Path, help="config file (default: ./voltui.toml)")
    dash.add_argument(
        "--workflows", type=Path, help="workflow folder (default: ./sample-workflows)"
    )
    # SUPPRESS: a subcommand must not reset `voltui --db X run ...` to its own default.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--db", type=Path, help="SQLite state file (default: user data dir)")
    common.add_argument("--config", type=Path, help="config file (default: ./voltui.toml)")
    common.add_argument(
        "--workflows", type=Path, help="folder of workflow files (default: ./sample-workflows)"
    )
    # Connection options: act on a `voltui serve` engine instead of an embedded one.
    remote = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    remote.add_argument("--socket", type=Path, help="Unix socket of a `voltui serve` engine")
    remote.add_argument("--tcp", metavar="HOST:PORT", help="TCP address of a `voltui serve`")
    remote.add_argument("--token-file", type=Path, help="token for --tcp (default: the server's)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "run", parents=[common, remote], help="run a workflow headless until it ends"
    )
    p.add_argument("workflow", help="workflow file, or the id of one in --workflows")
    p.add_argument(
        "-i", "--input", action="append", default=[], metavar="KEY=VALUE", help="workflow input"
    )
    p.add_argument("--json", action="store_true", help="print the final run as JSON")

    p = sub.add_parser("validate", parents=[common], help="check workflow files")
    p.add_argument("files", nargs="+", type=Path)

    p = sub.add_parser("list", parents=[common, remote], help="list workflows and recent runs")
    p.add_argument("--state", choices=[s.value for s in RunState])
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("watch", parents=[common, remote], help="follow a run until it ends")
    p.add_argument("run_id")
    p.add_argument("--tail", type=int, default=20, help="recorded events to show first")
    p.add_argument("--json", action="store_true", help="events as JSON lines")

    p = sub.add_parser("events", parents=[common, remote], help="show recorded events")
    p.add_argument("--run", dest="run_id", help="only this run's events")
    p.add_argument("--type", help="type pattern, e.g. 'step:*'")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--json", action="store_true", help="events as JSON lines")

    p = sub.add_parser("replay", parents=[common, remote], help="run a finished run again")
    p.add_argument("run_id")
    p.add_argument("--failed", action="store_true", help="re-run only steps that did not succeed")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("cancel", parents=[common, remote], help="cancel an active run")
    p.add_argument("run_id")

    p = sub.add_parser("serve", parents=[common], help="run the engine headless for dashboards")
    p.add_argument("--socket", type=Path, help="Unix socket (default: under $XDG_RUNTIME_DIR)")
    p.add_argument("--tcp", metavar="HOST:PORT", help="also listen on TCP (token required)")
    p.add_argument("--token-file", type=Path, help="token file for --tcp (created if missing)")
    p.add_argument(
        "--read-only-token-file",
        type=Path,
        help="a second token for --tcp whose clients can only watch (created if missing)",
    )
    p.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run steps on a Dask cluster (tcp://HOST:8786), or `local` for a LocalCluster",
    )
    p.add_argument(
        "--on-stop",
        choices=["cancel", "finish"],
        default="cancel",
        help="on SIGTERM/SIGINT: cancel active runs, or let them finish first",
    )
    p.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus /metrics there")

    p = sub.add_parser("attach", parents=[remote], help="open the dashboard on a `voltui serve`")
    p.add_argument("--read-only", action="store_true", help="show actions but refuse them")
    p.add_argument("--refresh", type=float, default=10.0, metavar="HZ", help="repaint rate")
    p.add_argument("--no-mouse", action="store_true", help="leave the mouse to the terminal")
    p.add_argument("--theme", help="Textual theme name, e.g. textual-dark, ansi-dark")

    sub.add_parser("schema", help="print the JSON Schema of workflow files")
    add_schedules_parser(sub, [common])
    return parser


# ---------------------------------------------------------------------- helpers


def _config(args: argparse.Namespace, **extra: Any) -> OrchestratorConfig:
    workflows = getattr(args, "workflows", None) or default_workflows_dir()
    return load_config(
        getattr(args, "config", None),
        db=getattr(args, "db", None),
        workflows_dir=workflows,
        **extra,
    )


def _text(value: object, style: str = "", max_len: int | None = None) -> Text:
    return Text(clean(value, max_len=max_len), style=style)


def _stamp(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def _event_line(event: Event) -> Text:
    line = Text(_stamp(event.ts) + " ", style="dim")
    if event.correlation_id:
        line.append(clean(event.correlation_id) + " ", style="dim")
    style = "red" if event.type.endswith(("failed", "error")) else ""
    line.append(f"{clean(event.type, max_len=40):<18} ", style=style or "bold")
    line.append(summarize(event))
    return line


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")
    sys.stdout.flush()


def _exit_for(state: RunState) -> int:
    return EXIT_OK if state is RunState.SUCCEEDED else EXIT_RUN_FAILED


def _summary(console: Console, detail: RunDetail) -> None:
    run = detail.run
    sym, style = STATE_STYLE.get(run.state.value, ("?", ""))
    head = Text(f"{sym} ", style=style)
    head.append(f"{clean(run.workflow_name)} ", style="bold")
    head.append(f"run {run.id} {run.state.value}", style=style)
    head.append(f" in {format_duration(run.duration)}")
    console.print(head)
    if run.error:
        console.print(_text(run.error, "red"))
    console.print(_steps_table(detail))
    if run.run_dir:
        console.print(Text("run folder: ", style="dim") + _text(run.run_dir))
    last = detail.steps[-1] if detail.steps else None
    if last is not None and last.output is not None and run.state is RunState.SUCCEEDED:
        console.print(Text("output: ", style="dim") + _text(json.dumps(last.output, default=str)))


def _steps_table(detail: RunDetail, last_lines: dict[str, str] | None = None) -> Table:
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
            _text(by_id[sr.step_id].title if sr.step_id in by_id else sr.step_id),
            _text(sr.agent_id or "-", "dim"),
            Text(f"{sr.attempt}/{sr.max_attempts}" if sr.attempt else "-"),
            Text(format_duration(sr.duration) if sr.duration is not None else "-"),
            _text(note or "", "red" if sr.state is StepState.FAILED else "dim", max_len=120),
        )
    return table


async def _follow_run(
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


async def _drive_run(
    engine: EngineAPI, start: Callable[[], Any], as_json: bool, console: Console
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
        with Live(_steps_table(detail), console=console, refresh_per_second=8) as live:
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
                        live.update(_steps_table(await engine.get_run(run.id), last_lines))

            task = asyncio.create_task(refresher())
            try:
                await _follow_run(engine, run.id, since, on_event)
            finally:
                task.cancel()
            live.update(_steps_table(await engine.get_run(run.id), last_lines))
    else:

        def on_event(event: Event) -> None:
            if not as_json:
                console.print(_event_line(event), soft_wrap=True, highlight=False)

        await _follow_run(engine, run.id, since, on_event)
    final = await engine.wait_run(run.id)
    detail = await engine.get_run(final.id)
    if as_json:
        _print_json(detail.model_dump(mode="json"))
    else:
        _summary(console, detail)
    if interrupted:
        return EXIT_INTERRUPTED
    return _exit_for(final.state)


# ---------------------------------------------------------------------- commands


def _absolute_if_file(ref: str) -> str:
    """A server resolves relative paths from its own folder, so send a local file absolute."""
    path = Path(ref)
    return str(path.resolve()) if path.is_file() else ref


async def cmd_run(args: argparse.Namespace, console: Console) -> int:
    inputs = parse_input_pairs(args.input)
    workflow = _absolute_if_file(args.workflow)
    async with _engine(args) as engine:
        request = StartRequest(workflow=workflow, inputs=inputs)
        return await _drive_run(engine, lambda: engine.start_workflow(request), args.json, console)


async def cmd_replay(args: argparse.Namespace, console: Console) -> int:
    request = ReplayRequest(run_id=args.run_id, mode="failed" if args.failed else "all")
    async with _engine(args) as engine:
        return await _drive_run(engine, lambda: engine.replay_run(request), args.json, console)


def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    bad = 0
    for path in args.files:
        try:
            wf = load_workflow(path)
        except UserError as exc:
            bad += 1
            console.print(_text(str(exc), "red"), soft_wrap=True)
            continue
        console.print(
            Text("ok ", style="green") + _text(f"{path}: {wf.id} ({len(wf.steps)} steps)")
        )
    return EXIT_USER if bad else EXIT_OK


async def cmd_list(args: argparse.Namespace, console: Console) -> int:
    state = RunState(args.state) if args.state else None
    async with _engine(args) as engine:
        workflows = await engine.list_workflows()
        runs = await engine.list_runs(state=state, limit=args.limit)
    if args.json:
        _print_json(
            {
                "workflows": [w.model_dump(mode="json") for w in workflows],
                "runs": [r.model_dump(mode="json") for r in runs],
            }
        )
        return EXIT_OK
    if workflows:
        table = Table(title="Workflows", title_justify="left", box=None, header_style="bold")
        for col in ("id", "name", "steps", "file"):
            table.add_column(col)
        for w in workflows:
            table.add_row(_text(w.id), _text(w.name), str(w.steps), _text(w.path or "", "dim"))
        console.print(table)
        console.print()
    table = Table(title="Runs", title_justify="left", box=None, header_style="bold")
    for col in ("run", "workflow", "state", "steps", "started", "duration", "error"):
        table.add_column(col, no_wrap=col != "error", overflow="fold")
    for r in runs:
        sym, style = STATE_STYLE.get(r.state.value, ("?", ""))
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started_at or r.created_at))
        table.add_row(
            Text(r.id),
            _text(r.workflow_id),
            Text(f"{sym} {r.state.value}", style=style),
            Text(f"{r.steps_done}/{r.steps_total}"),
            Text(started, style="dim"),
            Text(format_duration(r.duration)),
            _text(r.error or "", "dim", max_len=80),
        )
    if not runs:
        console.print(Text("no runs yet: try `voltui run sample-workflows/code_review.yaml`"))
    else:
        console.print(table)
    return EXIT_OK


async def cmd_watch(args: argparse.Namespace, console: Console) -> int:
    async with _engine(args) as engine:
        detail = await engine.get_run(args.run_id)
        run_id = detail.run.id
        recorded = await engine.events(EventQuery(correlation_id=run_id, limit=args.tail))
        seen = -1
        for event in recorded:
            _show_event(event, args.json, console)
            seen = max(seen, event.seq)
        run = detail.run
        while not run.state.finished:
            await asyncio.sleep(0.25)
            for event in await engine.events(EventQuery(correlation_id=run_id, since_seq=seen)):
                _show_event(event, args.json, console)
                seen = max(seen, event.seq)
            run = (await engine.get_run(run_id)).run
        for event in await engine.events(EventQuery(correlation_id=run_id, since_seq=seen)):
            _show_event(event, args.json, console)
        if not args.json:
            _summary(console, await engine.get_run(run_id))
        return _exit_for(run.state)


def _show_event(event: Event, as_json: bool, console: Console) -> None:
    if as_json:
        _print_json(event.model_dump(mode="json"))
    else:
        console.print(_event_line(event), soft_wrap=True, highlight=False)


async def cmd_events(args: argparse.Namespace, console: Console) -> int:
    async with _engine(args) as engine:
        run_id = (await engine.get_run(args.run_id)).run.id if args.run_id else None
        query = EventQuery(type=args.type, correlation_id=run_id, limit=args.limit)
        # Several engines may write the file at once, each numbering from its own leased block,
        # so following by seq could skip events; follow by time with an overlap instead and
        # drop the ones already shown.
        shown: dict[int, float] = {}
        for event in await engine.events(query):
            _show_event(event, args.json, console)
            shown[event.seq] = event.ts
        while args.follow:
            await asyncio.sleep(0.25)
            latest = max(shown.values(), default=0.0)
            since = latest - FOLLOW_OVERLAP
            newer = EventQuery(type=args.type, correlation_id=run_id, since=since)
            for event in await engine.events(newer):
                if event.seq not in shown:
                    _show_event(event, args.json, console)
                    shown[event.seq] = event.ts
            shown = {seq: ts for seq, ts in shown.items() if ts >= since}
    return EXIT_OK


async def cmd_dashboard(args: argparse.Namespace) -> int:
    """The Textual dashboard on an embedded engine (sample workflows and agents by default)."""
    from voltui.tui.app import VoltApp  # Textual loads only for the dashboard

    config = _config(args)
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
        _apply_theme(app, args.theme)
        await app.run_async(mouse=not args.no_mouse)
    finally:
        await engine.stop()
    return EXIT_OK


def _remote(args: argparse.Namespace, *, reconnect: bool, read_only: bool = False) -> RemoteEngine:
    """A client for the server named by --socket/--tcp (the default socket when neither)."""
    tcp = parse_tcp(args.tcp) if getattr(args, "tcp", None) else None
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


@contextlib.asynccontextmanager
async def _engine(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The engine a one-shot command acts on: a server when named, else an embedded one."""
    if getattr(args, "socket", None) or getattr(args, "tcp", None):
        client = _remote(args, reconnect=False)
        await client.connect()
        try:
            yield client
        finally:
            await client.close()
        return
    engine = Orchestrator(_config(args))
    await engine.start(watch=False)
    try:
        yield engine
    finally:
        await engine.stop()


async def cmd_cancel(args: argparse.Namespace, console: Console) -> int:
    async with _engine(args) as engine:
        run = await engine.cancel_run(args.run_id)
    console.print(Text(f"run {run.id} {run.state.value}"))
    return EXIT_OK


async def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    """The engine headless, serving dashboards and CLI commands until SIGTERM/SIGINT."""
    config = _config(
        args,
        dask_address=getattr(args, "dask", None),
        metrics_address=getattr(args, "metrics", None),
    )
    tcp = parse_tcp(args.tcp) if getattr(args, "tcp", None) else None
    token = None
    if tcp is not None:
        token = load_or_create_token(getattr(args, "token_file", None) or default_token_path())
    engine = Orchestrator(config)
    await engine.start()
    server = EngineServer(
        engine,
        socket_path=getattr(args, "socket", None) or default_socket_path(),
        tcp=tcp,
        token=token,
        read_only_token=load_or_create_token(args.read_only_token_file)
        if getattr(args, "read_only_token_file", None)
        else None,
    )
    try:
        await server.start()
        where = [str(getattr(args, "socket", None) or default_socket_path())]
        if server.tcp_address:
            where.append("tcp {}:{}".format(*server.tcp_address))
        if engine.automation.metrics_address:
            where.append(f"metrics http://{engine.automation.metrics_address}/metrics")
        console.print(Text(f"voltui engine serving on {', '.join(where)} (db {engine.store.path})"))
        await server.serve_forever(on_stop=args.on_stop)
    finally:
        await server.stop()
        await engine.stop()
    return EXIT_OK


async def cmd_attach(args: argparse.Namespace) -> int:
    """The dashboard on a `voltui serve` engine; reconnects with backoff if the link drops."""
    from voltui.tui.app import VoltApp

    client = _remote(args, reconnect=True, read_only=args.read_only)
    await client.connect()
    try:
        app = VoltApp(client, read_only=args.read_only, refresh_hz=args.refresh, embedded=False)
        _apply_theme(app, args.theme)
        await app.run_async(mouse=not args.no_mouse)
    finally:
        await client.close()
    return EXIT_OK


def _apply_theme(app: Any, theme: str | None) -> None:
    if theme:
        if theme not in app.available_themes:
            names = ", ".join(sorted(app.available_themes))
            raise UserError(f"unknown theme {theme!r}; choose one of: {names}")
        app.theme = theme


# ---------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(highlight=False, soft_wrap=False)
    err = Console(stderr=True, highlight=False)
    try:
        if args.command is None:
            return asyncio.run(cmd_dashboard(args))
        if args.command == "schema":
            _print_json(workflow_json_schema())
            return EXIT_OK
        if args.command == "validate":
            return cmd_validate(args, console)
        handler = {
            "run": cmd_run,
            "replay": cmd_replay,
            "list": cmd_list,
            "watch": cmd_watch,
            "events": cmd_events,
            "cancel": cmd_cancel,
            "serve": cmd_serve,
            "schedules": cmd_schedules,
        }.get(args.command)
        if args.command == "attach":
            return asyncio.run(cmd_attach(args))
        assert handler is not None
        return asyncio.run(handler(args, console))
    except (UserError, StoreError) as exc:  # StoreError: --db is unusable (not SQLite, locked)
        # soft_wrap: a piped stderr must keep `FILE: line N` and long paths on one line.
        err.print(
            Text("error: ", style="bold red") + Text(clean_multiline(str(exc))), soft_wrap=True
        )
        return EXIT_USER
    except KeyboardInterrupt:
        err.print(Text("interrupted", style="yellow"))
        return EXIT_INTERRUPTED


def clean_multiline(text: str) -> str:
    """Error paragraphs may list problems on lines of their own; keep the newlines."""
    return "\n".join(clean(line) for line in text.splitlines())


if __name__ == "__main__":
    raise SystemExit(main())
