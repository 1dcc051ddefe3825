"""`voltui logs RUN [STEP] [--attempt N] [--tail N] [--follow] [--json]`, embedded and over the
socket, on finished runs and on a run still printing (owned by another process)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import REPO, assert_one_paragraph, cli_env, voltui

CHATTY = """\
id: chatty
steps:
  - id: a
    run: {command: [python, -c, "for i in range(5): print(f'a{i}')"]}
  - id: b
    depends_on: [a]
    retry: {max_attempts: 2, base_delay: 0}
    run:
      command:
        - python
        - -c
        - |
          import os, sys
          n = os.environ["VOLTUI_ATTEMPT"]
          print(f"b try {n}", flush=True)
          print(f"b complains {n}", file=sys.stderr, flush=True)
          sys.exit(1 if n == "1" else 0)
"""
TICKS = 15
TICKER = f"""\
id: ticker
steps:
  - id: tick
    run:
      command:
        - python
        - -c
        - |
          import time
          for i in range({TICKS}):
              print(f"tick{{i}}", flush=True)
              time.sleep(0.2)
"""
BURSTS, PER_BURST = 6, 500
BURSTY = f"""\
id: bursty
steps:
  - id: tick
    run:
      command:
        - python
        - -c
        - |
          import time
          for burst in range({BURSTS}):
              for i in range({PER_BURST}):
                  print(f"tick{{burst * {PER_BURST} + i}}")
              print("", end="", flush=True)
              time.sleep(0.5)
"""


@pytest.fixture(scope="module")
def chatty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A finished run: step a printed 5 lines; step b failed once and succeeded on try 2."""
    folder = tmp_path_factory.mktemp("chatty")
    db = folder / "x.db"
    workflow = folder / "chatty.yaml"
    workflow.write_text(CHATTY, encoding="utf-8")
    ran = voltui("run", str(workflow), "--json", db=db)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    yield db, json.loads(ran.stdout)["run"]["id"]


def _logs(db: Path, *args: str) -> list[str]:
    result = voltui("logs", *args, db=db)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_one_step(chatty: tuple[Path, str]) -> None:
    db, run_id = chatty
    assert _logs(db, run_id, "a") == ["a0", "a1", "a2", "a3", "a4"]


def test_one_attempt(chatty: tuple[Path, str]) -> None:
    db, run_id = chatty
    assert sorted(_logs(db, run_id, "b", "--attempt", "1")) == ["b complains 1", "b try 1"]
    assert sorted(_logs(db, run_id, "b", "--attempt", "2")) == ["b complains 2", "b try 2"]


def test_every_step_is_prefixed_and_in_order(chatty: tuple[Path, str]) -> None:
    db, run_id = chatty
    lines = _logs(db, run_id)

    assert lines[:5] == [f"a | a{i}" for i in range(5)]
    assert set(lines[5:]) == {"b | b try 1", "b | b complains 1", "b#2 | b try 2"} | {
        "b#2 | b complains 2"
    }
    assert lines.index("b | b try 1") < lines.index("b#2 | b try 2")


def test_tail(chatty: tuple[Path, str]) -> None:
    db, run_id = chatty
    assert _logs(db, run_id, "a", "--tail", "2") == ["a3", "a4"]
    assert _logs(db, run_id, "a", "--tail", "0") == []
    assert len(_logs(db, run_id, "--tail", "3")) == 3


def test_json_lines_are_log_records(chatty: tuple[Path, str]) -> None:
    db, run_id = chatty
    records = [json.loads(line) for line in _logs(db, run_id, "b", "--json")]

    assert {(r["attempt"], r["stream"], r["line"]) for r in records} == {
        (1, "stdout", "b try 1"),
        (1, "stderr", "b complains 1"),
        (2, "stdout", "b try 2"),
        (2, "stderr", "b complains 2"),
    }
    assert {r["run_id"] for r in records} == {run_id}


def test_follow_on_a_finished_run_prints_and_ends(chatty: tuple[Path, str]) -> None:
    db, run_id = chatty
    assert _logs(db, run_id, "a", "--follow") == ["a0", "a1", "a2", "a3", "a4"]


def test_unknown_step_lists_the_steps(chatty: tuple[Path, str]) -> None:
    db, run_id = chatty
    result = voltui("logs", run_id, "nosuch", db=db)

    assert result.returncode == 2
    assert_one_paragraph(result.stderr)
    assert "no step 'nosuch'" in result.stderr and "a, b" in result.stderr


# ---------------------------------------------------------------------- following a live run


def _start_ticker(
    tmp_path: Path, db: Path, *remote: str, text: str = TICKER
) -> tuple[subprocess.Popen[bytes], str]:
    workflow = tmp_path / "ticker.yaml"
    workflow.write_text(text, encoding="utf-8")
    runner = subprocess.Popen(
        [sys.executable, "-m", "voltui", "run", str(workflow), *remote],
        cwd=REPO,
        env=cli_env(db),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "the ticker run never printed"
        listed = voltui("list", "--json", *remote, db=db)
        runs = json.loads(listed.stdout)["runs"] if listed.returncode == 0 else []
        if runs:
            run_id = runs[0]["id"]
            if len(_logs(db, run_id, "tick", *remote)) >= 3:  # follow from mid-run
                return runner, run_id
        time.sleep(0.1)


def _follow_whole_run(
    tmp_path: Path, db: Path, *remote: str, text: str = TICKER, lines: int = TICKS
) -> None:
    runner, run_id = _start_ticker(tmp_path, db, *remote, text=text)
    try:
        follow = voltui("logs", run_id, "tick", "--follow", *remote, db=db)
        assert runner.wait(timeout=60) == 0
    finally:
        if runner.poll() is None:
            runner.kill()
    assert follow.returncode == 0, follow.stderr
    assert follow.stdout.splitlines() == [f"tick{i}" for i in range(lines)], (
        "following from mid-run must show every line once, in order"
    )


def test_follow_a_run_owned_by_another_process(tmp_path: Path) -> None:
    _follow_whole_run(tmp_path, tmp_path / "x.db")


def test_follow_misses_no_line_of_a_step_faster_than_live_events(tmp_path: Path) -> None:
    """Bursts of 500 lines: far above the live step:output limit, so most lines are in the
    log only; following must still print every one."""
    _follow_whole_run(tmp_path, tmp_path / "x.db", text=BURSTY, lines=BURSTS * PER_BURST)


def test_follow_over_the_socket(tmp_path: Path, short_dir: Path) -> None:
    sock = short_dir / "s.sock"
    server = subprocess.Popen(
        [sys.executable, "-m", "voltui", "serve", "--socket", str(sock)],
        cwd=REPO,
        env=cli_env(tmp_path / "server.db"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert time.monotonic() < deadline and server.poll() is None, "no server"
            time.sleep(0.1)
        # The client's own state file stays unused: everything goes through the socket.
        _follow_whole_run(tmp_path, tmp_path / "client.db", "--socket", str(sock))
        assert not (tmp_path / "client.db").exists()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
