"""The dashboard runs unchanged on a RemoteEngine, through a dropped connection."""

from __future__ import annotations

from pathlib import Path

from tests.remote.conftest import until
from voltui.engine.api import StartRequest
from voltui.engine.models import RunState
from voltui.engine.orchestrator import Orchestrator
from voltui.remote.client import RemoteEngine
from voltui.remote.server import EngineServer
from voltui.tui.app import VoltApp


async def test_dashboard_on_a_remote_engine_catches_up_after_a_cut(
    engine: Orchestrator, server: EngineServer, sock: Path
) -> None:
    remote = RemoteEngine(socket_path=sock, read_only=True)
    await remote.connect()
    app = VoltApp(remote, embedded=False, read_only=True)
    try:
        async with app.run_test(size=(120, 40)):
            run = await engine.start_workflow(StartRequest(workflow="simulated_load"))
            await until(lambda: run.id in app.state.runs, what="the run on the dashboard")
            assert remote._writer is not None
            remote._writer.transport.abort()  # the SSH session drops mid-run
            await engine.wait_run(run.id)
            last = engine.dispatcher.last_seq
            await until(lambda: app.state.seq >= last, what="the dashboard catching up")
            assert app.state.runs[run.id].run.state == RunState.SUCCEEDED
            assert remote.state == "connected"
    finally:
        await remote.close()


async def test_header_says_when_the_link_is_down(
    engine: Orchestrator, server: EngineServer, sock: Path
) -> None:
    from voltui.tui.widgets.header import HeaderBar

    remote = RemoteEngine(socket_path=sock, read_only=True, max_backoff=0.5)
    await remote.connect()
    app = VoltApp(remote, embedded=False, read_only=True)
    try:
        async with app.run_test(size=(120, 40)):
            header = app.query_one(HeaderBar)

            def shown() -> str:
                return header.render_state(
                    app.state, embedded=False, connection=remote.connection
                ).plain

            await until(lambda: "attached" in shown(), what="attached in the header")
            await server.stop()  # the server goes away: the dashboard must say so
            await until(
                lambda: "RECONNECTING" in str(header.render()), what="RECONNECTING in the header"
            )
    finally:
        await remote.close()
