"""One store, many processes, in a real terminal: a run that `voltui run` starts in another
process shows up in an open dashboard within 2 s, and `c` there cancels it (the request goes
through the store to the process that owns the run)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.test_tmux import (
    ROOT,
    Tmux,
    dashboard_ready,
    panel,
    pytestmark,
    quit_program,
    terminal,
)

__all__ = ["pytestmark", "terminal"]  # the skip mark and the fixture, used by name


def _recorded_run(db: Path, deadline: float) -> tuple[str, float]:
    """The id of the run the other process recorded, and when this test first saw it."""
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(db) as conn:
                row = conn.execute(
                    "SELECT id FROM runs WHERE workflow_id = 'long_running'"
                ).fetchone()
        except sqlite3.OperationalError:
            row = None
        if row:
            return str(row[0]), time.monotonic()
        time.sleep(0.05)
    raise AssertionError("the other process never recorded its run")


def test_a_run_from_another_process_appears_and_is_cancelled_from_the_dashboard(
    terminal: Callable[[int, int], Tmux],
) -> None:
    term = terminal(160, 48)
    term.wait(dashboard_ready, "the dashboard with its agents")
    other = subprocess.Popen(
        [sys.executable, "-m", "voltui", "run", "long_running", "--db", str(term.db)],
        cwd=ROOT,
        env=term.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        run_id, recorded = _recorded_run(term.db, time.monotonic() + 30)
        screen = term.wait(
            lambda t: run_id[:8] in panel(t, "1 Runs"), "the other process's run", 10
        )
        seen_after = time.monotonic() - recorded
        assert seen_after < 2.0, f"the run showed {seen_after:.1f}s after it was recorded"
        assert "Long-running" in panel(screen, "1 Runs") or "long_running" in screen

        term.send("1")  # the runs panel; the newest run is on top
        term.send("g")
        term.send("c")
        term.wait(lambda t: f"Cancel run {run_id[:12]}" in t, "the cancel question", 10)
        term.send("y")
        assert other.wait(timeout=20) == 1  # the owner cancelled it and said so
        term.wait(lambda t: "cancelled" in panel(t, "1 Runs"), "the run shown cancelled", 10)
    finally:
        if other.poll() is None:
            other.kill()
            other.wait(10)
    assert quit_program(term) == 0
    listing = subprocess.run(
        [sys.executable, "-m", "voltui", "list", "--json", "--db", str(term.db)],
        cwd=ROOT,
        env=term.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    states = {r["id"]: r["state"] for r in json.loads(listing.stdout)["runs"]}
    assert states[run_id] == "cancelled"
