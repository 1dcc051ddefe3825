"""`voltui attach` in a real terminal while its server is killed (-9) and started again.

While the server is gone the dashboard must say its figures are stale (header, dimmed panels,
clocks stopped); once a new server runs on the same database, the dashboard must show that
server's state, not a continuation of the dead one's: the run it was running is interrupted and
its steps no longer "running" (issue 9, item 2).
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.test_attach_tmux import _serve
from tests.e2e.test_tmux import POLL, Tmux, dashboard_ready, panel
from voltui.engine.api import StartRequest
from voltui.remote.client import RemoteEngine

pytestmark = pytest.mark.skipif(
    subprocess.run(["which", "tmux"], capture_output=True).returncode != 0,
    reason="tmux is not installed",
)


def _listening(sock: Path) -> bool:
    """Whether a server accepts connections on `sock` (a dead server's file refuses them)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(sock))
        except OSError:
            return False
    return True


def _start_long_run(sock: Path) -> str:
    async def start() -> str:
        async with RemoteEngine(socket_path=sock, reconnect=False) as remote:
            run = await remote.start_workflow(StartRequest(workflow="long_running"))
            return run.id

    return asyncio.run(start())


def _row(text: str, run_id: str) -> str:
    """The runs panel's row of `run_id` ('' while it is not shown whole)."""
    rows = [line for line in panel(text, "1 Runs").splitlines() if run_id[:8] in line]
    return rows[0] if len(rows) == 1 else ""


def _uptime(text: str) -> str:
    found = re.search(r"  up (\S+)", text.splitlines()[0])
    assert found is not None, text
    return found.group(1)


def _line_with(text: str, needle: str) -> str:
    return next((line for line in text.splitlines() if needle in line), "")


def test_server_killed_and_restarted_under_attach(tmp_path: Path) -> None:
    sock = tmp_path / "s.sock"
    servers = [_serve(tmp_path, sock)]
    term = Tmux(tmp_path / "dashboard.db", ("attach", "--socket", str(sock)))
    try:
        run_id = _start_long_run(sock)
        term.start(120, 40)
        term.wait(dashboard_ready, "the attached dashboard")
        term.wait(
            lambda t: "running" in _row(t, run_id) and "▶" in panel(t, "2 DAG"),
            "the run and its running steps",
            30,
        )
        agents_line = _line_with(term.pane(escapes=True), "shell-1")

        servers[0].send_signal(signal.SIGKILL)
        servers[0].wait(timeout=30)
        stale = term.wait(lambda t: "last update" in t.splitlines()[0], "the stale header", 30)
        header = stale.splitlines()[0]
        assert "RECONNECTING" in header and "? was " in header
        # Dimmed: the same agents row, in other colours.
        dimmed = _line_with(term.pane(escapes=True), "shell-1")
        assert re.sub(r"\x1b\[[0-9;:]*m", "", dimmed) == re.sub(r"\x1b\[[0-9;:]*m", "", agents_line)
        assert dimmed != agents_line
        # Clocks stopped: the run's time and the uptime stand still while the age grows.
        row = _row(stale, run_id)
        assert row, stale
        time.sleep(2.5)
        later = term.pane()
        assert _row(later, run_id) == row
        assert _uptime(later) == _uptime(stale)
        assert "running" in row  # what was last known, shown as such

        # A new server on the same database (and socket): the dashboard shows its state.
        servers.append(_serve_again(tmp_path, sock))
        back = term.wait(
            lambda t: "last update" not in t.splitlines()[0] and "interrupted" in _row(t, run_id),
            "the new server's state",
            60,
        )
        assert "RECONNECTING" not in back.splitlines()[0]
        dag = term.wait(
            lambda t: "■" in panel(t, "2 DAG") and "▶" not in panel(t, "2 DAG"),
            "the interrupted run's steps, none running",
            30,
        )
        assert "interrupted" in panel(dag, "2 DAG")
    finally:
        print(f"--- final screen ---\n{term.pane() if term.socket_path else ''}")
        term.kill()
        for server in servers:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
                try:
                    server.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()


def _serve_again(tmp_path: Path, sock: Path) -> subprocess.Popen[str]:
    """`_serve` waits for the socket file, which the killed server left behind: also wait for
    the new server to answer on it."""
    server = _serve(tmp_path, sock)
    deadline = time.monotonic() + 30
    while not _listening(sock):
        if server.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the second server did not start: {server.communicate()[1]}")
        time.sleep(POLL)
    return server
