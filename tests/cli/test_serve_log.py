"""`voltui serve` tells its operator what it does, on stderr, at the config's `log_level`."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cli.conftest import REPO, cli_env, voltui


def _serve(sock: Path, db: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voltui", "serve", "--socket", str(sock), *extra],
            cwd=REPO,
            env=cli_env(db),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 60
    while not sock.exists():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the server never listened"
        time.sleep(0.1)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def test_serve_logs_where_what_who_and_every_run(short_dir: Path, tmp_path: Path) -> None:
    sock, db, log = short_dir / "s.sock", tmp_path / "server.db", tmp_path / "serve.log"
    server = _serve(sock, db, log)
    try:
        ran = voltui("run", "flaky", "--socket", str(sock), "--json", db=tmp_path / "client.db")
        assert ran.returncode == 0, ran.stderr
        run_id = json.loads(ran.stdout)["run"]["id"]
        time.sleep(0.5)  # the disconnect reaches the log
    finally:
        _stop(server)
    text = log.read_text()

    assert "Traceback" not in text, text
    assert re.search(rf"INFO .*serving on .*{re.escape(str(sock))}", text), text
    assert f"state file {db}" in text
    assert f"workflows folder {REPO / 'sample-workflows'}" in text
    assert re.search(r"\d+ agents: shell-1 \(command\), shell-2 \(command\)", text), text
    assert re.search(r"client \d+ connected from .* \(read-write\); 1 attached", text), text
    assert re.search(r"client \d+ disconnected .*; 0 attached", text), text
    assert f"run {run_id} started: Flaky step with retries" in text
    assert re.search(rf"run {run_id} succeeded after \S+: Flaky step with retries", text), text


def test_log_level_warn_keeps_serve_quiet(short_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "voltui.toml"
    config.write_text('log_level = "warn"\n', encoding="utf-8")
    log = tmp_path / "serve.log"
    server = _serve(short_dir / "s.sock", tmp_path / "x.db", log, "--config", str(config))
    _stop(server)

    text = log.read_text()
    assert "serving on" not in text and "INFO" not in text, text


def test_log_level_debug_shows_the_cli_story(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    quiet = voltui("list", "--json", db=db)
    loud = voltui("list", "--json", db=db, VOLTUI_LOG_LEVEL="debug")

    assert quiet.returncode == loud.returncode == 0, loud.stderr
    assert "DEBUG" not in quiet.stderr
    assert re.search(rf"DEBUG voltui\.cli: state file {re.escape(str(db))}", loud.stderr), (
        loud.stderr
    )
    assert json.loads(loud.stdout) == json.loads(quiet.stdout), "logs never go to stdout"


def test_every_logged_event_reads_as_a_sentence() -> None:
    """describe() on the events serve subscribes to, including what retention removed."""
    from voltui.commands.serve import describe
    from voltui.engine.models import Event

    def line(type_: str, data: dict[str, object], run: str | None = None) -> str:
        event = Event(seq=1, ts=0.0, type=type_, source="t", data=data, correlation_id=run)
        described = describe(event)
        assert described is not None, type_
        return described[1]

    assert line("store:pruned", {"runs": 3, "events": 40, "log_lines": 7, "folders": 2}) == (
        "retention removed 3 run(s), 40 event(s), 7 log line(s), 2 run folder(s)"
    )
    failed = line("workflow:failed", {"name": "x", "error": "boom\x1b]0;t\x07"}, run="r1")
    assert failed == "run r1 failed: x: boom", "untrusted text is sanitised"
    assert describe(Event(seq=2, ts=0.0, type="step:output", source="t", data={})) is None
