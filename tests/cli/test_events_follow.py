"""`voltui events --follow --limit N`: the newest N recorded events, then new ones, in order."""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from tests.cli.conftest import REPO, cli_env
from voltui.config import OrchestratorConfig
from voltui.engine.orchestrator import Orchestrator


async def _emit(db: Path, numbers: Iterable[int]) -> None:
    engine = Orchestrator(OrchestratorConfig(db=db, agents=[]))
    await engine.start(watch=False)
    try:
        for n in numbers:
            engine.dispatcher.emit("test:ping", "test", {"n": n})
        await engine.store.flush()
    finally:
        await engine.stop()


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    found: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            found.put(line)

    threading.Thread(target=read, daemon=True).start()
    return found


def _take(found: queue.Queue[str], count: int, within: float) -> list[int]:
    got: list[int] = []
    deadline = time.monotonic() + within
    while len(got) < count and time.monotonic() < deadline:
        try:
            got.append(json.loads(found.get(timeout=0.2))["data"]["n"])
        except queue.Empty:
            continue
    return got


def _drain(found: queue.Queue[str], quiet: float) -> list[int]:
    """Whatever else arrives until nothing has for `quiet` seconds."""
    got: list[int] = []
    while True:
        try:
            got.append(json.loads(found.get(timeout=quiet))["data"]["n"])
        except queue.Empty:
            return got


def test_follow_with_limit_shows_the_newest_n_then_new_events_in_order(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    asyncio.run(_emit(db, range(30)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "voltui", "events", "-f", "--limit", "5", "--json", "--type", "t*"],
        cwd=REPO,
        env=cli_env(db),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        found = _lines(proc)
        first = _take(found, 5, within=30)
        # Several polls go by: older events (the bug) would come now, before any new one.
        early = _drain(found, quiet=1.5)
        asyncio.run(_emit(db, range(30, 33)))
        later = _take(found, 3, within=30) + _drain(found, quiet=1.5)
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)

    assert first == [25, 26, 27, 28, 29], err
    assert early == [], "events older than the newest 5 came after them"
    assert later == [30, 31, 32]
