"""CLI behaviour beyond the acceptance tests: following events across engines, flag order."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from voltui.config import OrchestratorConfig
from voltui.engine.orchestrator import Orchestrator

REPO = Path(__file__).parents[1]


async def _emit_from_two_engines(db: Path, count: int) -> None:
    first = Orchestrator(OrchestratorConfig(db=db, agents=[]))
    second = Orchestrator(OrchestratorConfig(db=db, agents=[]))
    await first.start(watch=False)
    await second.start(watch=False)
    try:
        # The second engine leased the higher block; emitting from it first puts high numbers in
        # the file before the first engine's lower ones, which a seq-based follower would skip.
        for i in range(count):
            second.dispatcher.emit("test:ping", "second", {"n": i})
            await second.store.flush()
            first.dispatcher.emit("test:ping", "first", {"n": i})
            await first.store.flush()
            await asyncio.sleep(0.3)
    finally:
        await first.stop()
        await second.stop()


def test_follow_sees_both_engines_events(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    asyncio.run(_emit_from_two_engines(db, 0))  # create the file before the follower opens it
    follower = subprocess.Popen(
        [sys.executable, "-m", "voltui", "events", "--follow", "--json", "--type", "test:*"],
        cwd=REPO,
        env={**os.environ, "VOLTUI_DB": str(db)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)  # let it start following
        asyncio.run(_emit_from_two_engines(db, 4))
        time.sleep(1.5)  # a few polls
    finally:
        follower.terminate()
        out, err = follower.communicate(timeout=10)
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    got = sorted((e["source"], e["data"]["n"]) for e in events)
    want = sorted((src, n) for src in ("first", "second") for n in range(4))
    assert got == want, err


def test_state_flags_work_before_or_after_the_command(tmp_path: Path) -> None:
    for args, name in (
        (["--db", "{db}", "list"], "before.db"),
        (["list", "--db", "{db}"], "after.db"),
    ):
        db = tmp_path / name
        argv = [a.replace("{db}", str(db)) for a in args]
        env = {k: v for k, v in os.environ.items() if k != "VOLTUI_DB"}
        result = subprocess.run(
            [sys.executable, "-m", "voltui", *argv, "--json"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert db.exists(), f"{argv}: state went elsewhere"
