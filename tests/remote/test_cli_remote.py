"""`voltui serve` with the CLI commands acting on it over the socket, as real processes."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).parents[2]


def _voltui(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "voltui", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_serve_then_run_list_cancel_over_the_socket(tmp_path: Path) -> None:
    sock = tmp_path / "voltui.sock"
    env = {**os.environ, "VOLTUI_DB": str(tmp_path / "server.db")}
    server = subprocess.Popen(
        [sys.executable, "-m", "voltui", "serve", "--socket", str(sock)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sock.exists(), "server did not listen"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        # A client with another state file proves the work happens in the server.
        client_env = {**os.environ, "VOLTUI_DB": str(tmp_path / "client.db")}
        flaky = REPO / "sample-workflows" / "flaky.yaml"
        done = _voltui("run", str(flaky), "--socket", str(sock), "--json", env=client_env)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["run"]["state"] == "succeeded"

        long_run = subprocess.Popen(
            [sys.executable, "-m", "voltui", "run", "long_running", "--socket", str(sock)],
            cwd=REPO,
            env=client_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        run_id = None
        while run_id is None and time.monotonic() < deadline + 30:
            listed = _voltui(
                "list", "--socket", str(sock), "--state", "running", "--json", env=client_env
            )
            runs = json.loads(listed.stdout)["runs"] if listed.returncode == 0 else []
            run_id = runs[0]["id"] if runs else None
            time.sleep(0.2)
        assert run_id, "long_running never showed as running"
        cancelled = _voltui("cancel", run_id, "--socket", str(sock), env=client_env)
        assert cancelled.returncode == 0, cancelled.stderr
        assert "cancelled" in cancelled.stdout
        assert long_run.wait(30) == 1  # the watching `voltui run` sees the run end unsuccessfully
        assert not (tmp_path / "client.db").exists()
    finally:
        server.send_signal(signal.SIGTERM)
        _out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert "Traceback" not in err
    assert not sock.exists(), "socket left behind after SIGTERM"
    listed = _voltui("list", "--json", env=env)  # the server's own file, read directly
    states = sorted(r["state"] for r in json.loads(listed.stdout)["runs"])
    assert states == ["cancelled", "succeeded"]


def test_no_server_is_a_clear_user_error(tmp_path: Path) -> None:
    env = {**os.environ, "VOLTUI_DB": str(tmp_path / "x.db")}
    result = _voltui("list", "--socket", str(tmp_path / "nobody.sock"), env=env)
    assert result.returncode == 2
    assert "voltui serve" in result.stderr
    assert "Traceback" not in result.stderr
