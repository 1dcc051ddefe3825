"""`voltui list` at 80 columns on a terminal (a real pty) and piped, with long workflow ids, a
long error and a run in progress: nothing is cut when piped; on the terminal no line wraps,
identity columns stay whole, and whatever gives way is hidden whole and named, never cut to
`20/2` or spelled one letter per line.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import REPO, cli_env, voltui
from voltui.config import OrchestratorConfig
from voltui.engine.api import StartRequest
from voltui.engine.models import AgentSpec, RunState
from voltui.engine.orchestrator import Orchestrator

LONG_ID = "an_exceptionally_long_workflow_identifier_x"
ERROR_TEXT = (
    "something went badly wrong while processing the input file; the log of this step says "
    "more about what exactly happened and where"
)
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")


def _write_workflows(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    twenty = ["id: twenty_simulated_steps_workflow", "steps:"]
    for i in range(20):
        twenty += [
            f"  - id: s{i}",
            "    requires: [simulated]",
            "    run: {simulated: {duration: 0}}",
        ]
    files = {
        "twenty": folder / "twenty.yaml",
        "failing": folder / "failing.yaml",
        "hold": folder / "hold.yaml",
    }
    files["twenty"].write_text("\n".join(twenty) + "\n", encoding="utf-8")
    script = json.dumps(f"import sys; sys.exit({ERROR_TEXT!r})")
    files["failing"].write_text(
        f"id: {LONG_ID}\nsteps:\n  - id: boom\n    run: {{command: [python, -c, {script}]}}\n",
        encoding="utf-8",
    )
    files["hold"].write_text(
        "id: hold\nsteps:\n  - id: wait\n    requires: [simulated]\n"
        "    run: {simulated: {duration: 120}}\n",
        encoding="utf-8",
    )
    return files


@pytest.fixture
async def busy_db(tmp_path: Path) -> AsyncIterator[Path]:
    """A state file with a 20-step success, a long-named failure and a run still running."""
    db = tmp_path / "state.db"
    files = _write_workflows(tmp_path / "wf")
    agents = [
        AgentSpec(id="sim", kind="simulated", capabilities=["simulated"], capacity=4),
        AgentSpec(id="shell", kind="command", capabilities=["shell"], capacity=2),
    ]
    engine = Orchestrator(OrchestratorConfig(db=db, agents=agents))
    await engine.start(watch=False)
    try:
        for name in ("twenty", "failing"):
            run = await engine.start_workflow(StartRequest(workflow=str(files[name])))
            await asyncio.wait_for(engine.wait_run(run.id), 60)
        running = await engine.start_workflow(StartRequest(workflow=str(files["hold"])))
        for _ in range(200):
            if (await engine.get_run(running.id)).run.state is RunState.RUNNING:
                break
            await asyncio.sleep(0.05)
        await engine.store.flush()
        yield db  # the hold run stays running while the test lists
    finally:
        await engine.stop()


def _listed(db: Path) -> dict[str, Any]:
    result = voltui("list", "--json", db=db)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _on_a_pty(db: Path, columns: int) -> list[str]:
    """`voltui list` with its stdout on a pseudo-terminal `columns` wide; the screen's lines."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = cli_env(db, COLUMNS=str(columns), LINES="24", TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "voltui", "list"],
        cwd=REPO,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the program ended and closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    screen = ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")
    return screen.splitlines()


async def test_piped_list_is_whole_and_tab_separated(busy_db: Path) -> None:
    listed = await asyncio.to_thread(_listed, busy_db)
    result = await asyncio.to_thread(voltui, "list", db=busy_db)

    lines = result.stdout.splitlines()
    start = lines.index("Runs")
    assert lines[start + 1].split("\t") == [
        "run",
        "workflow",
        "state",
        "steps",
        "started",
        "duration",
        "error",
    ]
    rows = [line.split("\t") for line in lines[start + 2 :] if line]
    assert all(len(row) == 7 for row in rows), rows
    by_id = {row[0]: row for row in rows}
    assert set(by_id) == {r["id"] for r in listed["runs"]}
    for run in listed["runs"]:
        row = by_id[run["id"]]
        assert row[1] == run["workflow_id"]
        assert row[2] == run["state"]
        assert row[3] == f"{run['steps_done']}/{run['steps_total']}"
        assert row[6] == (run["error"] or "")
    states = {row[1]: row[2] for row in rows}
    assert states == {
        "twenty_simulated_steps_workflow": "succeeded",
        LONG_ID: "failed",
        "hold": "running",
    }
    assert by_id[next(r["id"] for r in listed["runs"] if r["workflow_id"] == LONG_ID)][6]
    assert ERROR_TEXT[:60] in result.stdout


# What gives way at each width, for this state file (ids of 43 and 31 characters, a long error):
# first the start time, then the duration; the error needs 16 columns or goes, while the narrow
# step counts come back beside it; at 60 even the longest workflow id is cut, as a last resort.
HIDDEN = {
    120: ["started"],
    100: ["started", "duration"],
    80: ["started", "duration", "error"],
    60: ["started", "duration", "steps", "error"],
}


@pytest.mark.parametrize("columns", sorted(HIDDEN))
async def test_terminal_list_gives_way_in_order(busy_db: Path, columns: int) -> None:
    listed = await asyncio.to_thread(_listed, busy_db)
    screen = await asyncio.to_thread(_on_a_pty, busy_db, columns)

    assert all(len(line) <= columns for line in screen), "a line wider than the terminal wraps"
    assert not any(re.fullmatch(r"\s*\w\s*", line) for line in screen), "one letter per line"
    start = next(i for i, line in enumerate(screen) if line.strip() == "Runs")
    header = screen[start + 1].split()
    hidden = HIDDEN[columns]
    every = ["run", "workflow", "state", "steps", "started", "duration", "error"]
    assert header == [c for c in every if c not in hidden]
    note = re.search(r"hidden at (\d+) columns: ([a-z, ]+)", " ".join(screen[start:]))
    assert note, "what was hidden is said under the table"
    assert int(note.group(1)) == columns
    assert note.group(2).strip().split(", ") == hidden
    rows = screen[start + 2 : start + 2 + len(listed["runs"])]
    for run in listed["runs"]:
        row = next(line for line in rows if line.startswith(run["id"] + " "))
        cut = columns == 60 and run["workflow_id"] == LONG_ID
        shown = run["workflow_id"][:20] if cut else run["workflow_id"] + " "
        assert shown in row, f"{run['workflow_id']} cut at {columns}: {row!r}"
        assert ("…" in row) == (cut or ("error" in header and bool(run["error"])))
        assert re.search(rf"\S {run['state']}\b", row), row
        if "steps" in header:
            assert re.search(rf"\s{run['steps_done']}/{run['steps_total']}(\s|$)", row), row
        if "error" in header and run["error"]:
            assert "step boom failed" in row
