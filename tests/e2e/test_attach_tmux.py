"""`voltui attach` in a real terminal against a `voltui serve` started by the test.

Starts and cancels a run with keys, quits the dashboard, and checks the run lives on in the
server: closing a dashboard must never stop or lose a run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.test_tmux import POLL, ROOT, RUN_ROW, Tmux, dashboard_ready, panel, quit_program
from tests.e2e.test_tmux import highlighted_option as highlighted

pytestmark = pytest.mark.skipif(
    subprocess.run(["which", "tmux"], capture_output=True).returncode != 0,
    reason="tmux is not installed",
)


def _serve(tmp_path: Path, sock: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "VOLTUI_DB": str(tmp_path / "server.db")}
    server = subprocess.Popen(
        [sys.executable, "-m", "voltui", "serve", "--socket", str(sock)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not sock.exists():
        if server.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"server did not start: {server.communicate()[1]}")
        time.sleep(0.1)
    return server


def test_attach_start_and_cancel_a_run_with_keys(tmp_path: Path) -> None:
    sock = tmp_path / "s.sock"
    server = _serve(tmp_path, sock)
    # The dashboard gets a different state file: everything it shows must come from the server.
    term = Tmux(tmp_path / "dashboard.db", ("attach", "--socket", str(sock)))
    try:
        term.start(120, 40)
        screen = term.wait(dashboard_ready, "the attached dashboard with the server's agents")
        assert "attached" in screen

        term.send("s")
        term.wait(lambda t: "long_running" in t, "the start dialog")
        moves = 0
        while highlighted(term.pane(escapes=True)) != "long_running":
            assert moves <= 40, f"cannot highlight long_running:\n{term.pane()}"
            term.send("Down" if moves < 20 else "Up")
            moves += 1
            time.sleep(POLL)
        term.send("Enter")
        deadline = time.monotonic() + 20
        submitted = False
        while not RUN_ROW.search(panel(text := term.pane(), "1 Runs")):
            if not submitted and "seconds" in text:
                term.send("C-s")  # the inputs form, pre-filled with defaults
                submitted = True
            assert time.monotonic() < deadline, f"no run appeared:\n{text}"
            time.sleep(POLL)
        term.wait(lambda t: "running" in panel(t, "1 Runs"), "the run running", 30)

        term.send("c")
        # The dialog's own words: "Cancel" alone is always on screen (footer, workflow name).
        term.wait(lambda t: "Cancel run" in t, "the cancel confirmation")
        term.send("y")
        term.wait(lambda t: "cancelled" in panel(t, "1 Runs"), "the run cancelled", 30)
        assert quit_program(term) == 0
    finally:
        print(f"--- final screen ---\n{term.pane() if term.socket_path else ''}")
        term.kill()
        server.send_signal(signal.SIGTERM)
        _out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert not (tmp_path / "dashboard.db").exists()
    listing = subprocess.run(
        [sys.executable, "-m", "voltui", "list", "--json", "--db", str(tmp_path / "server.db")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    runs = json.loads(listing.stdout)["runs"]
    assert [(r["workflow_id"], r["state"]) for r in runs] == [("long_running", "cancelled")]
