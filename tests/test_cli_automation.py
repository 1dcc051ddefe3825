"""`voltui schedules` and `voltui serve --metrics`: the commands an operator types."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from voltui.cli import main

ROOT = Path(__file__).resolve().parents[1]

NIGHTLY = """\
id: nightly
schedules:
  - {id: quarter, cron: "*/15 * * * *", timezone: Europe/Berlin}
  - {every: 1h, catchup: none}
steps:
  - id: s
    run: {simulated: {duration: 1ms}}
"""
TICKER = """\
id: ticker
schedules:
  - {every: 1s}
steps:
  - id: s
    run: {simulated: {duration: 1ms}}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / "nightly.yaml").write_text(NIGHTLY)
    return wf


def schedules(folder: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    try:
        code = main(["schedules", *args, "--workflows", str(folder)])
    except SystemExit as exc:  # argparse mistakes end the parse with exit status 2
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


def test_list_pause_resume(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = schedules(folder, capsys, "list", "--json")
    assert code == 0
    listed = {s["id"]: s for s in json.loads(out)}
    assert sorted(listed) == ["nightly:2", "nightly:quarter"]
    quarter = listed["nightly:quarter"]
    assert quarter["spec"] == "cron */15 * * * * (Europe/Berlin)"
    assert quarter["paused"] is False and quarter["next_fire_at"] > time.time()
    assert quarter["next_fire_at"] % 900 == 0  # a quarter hour in Berlin is one in UTC too

    code, out = schedules(folder, capsys, "pause", "nightly:quarter")
    assert code == 0 and "nightly:quarter paused" in out
    code, out = schedules(folder, capsys, "--json")
    listed = {s["id"]: s for s in json.loads(out)}
    assert listed["nightly:quarter"]["paused"] is True
    assert listed["nightly:quarter"]["next_fire_at"] is None
    assert listed["nightly:2"]["paused"] is False

    code, out = schedules(folder, capsys)
    assert code == 0 and "paused" in out and "every 1h" in out
    code, out = schedules(folder, capsys, "resume", "nightly:quarter")
    assert code == 0 and "active" in out


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["pause", "nope"], "unknown schedule 'nope'; known schedules: nightly:quarter, nightly:2"),
        (["pause", "nightly"], "has several schedules; name one of"),
        (["pause"], "the following arguments are required: ID"),
    ],
)
def test_mistakes_exit_2_with_a_clear_message(
    folder: Path, capsys: pytest.CaptureFixture[str], args: list[str], phrase: str
) -> None:
    code, out = schedules(folder, capsys, *args)
    assert code == 2
    assert phrase in out and "Traceback" not in out


def test_dashboard_listing_carries_schedules(folder: Path) -> None:
    import asyncio

    from voltui.config import OrchestratorConfig
    from voltui.engine.orchestrator import Orchestrator

    async def listing() -> list:
        engine = Orchestrator(OrchestratorConfig(workflows_dir=folder))
        await engine.start(watch=False)
        try:
            return await engine.list_workflows()
        finally:
            await engine.stop()

    (info,) = asyncio.run(listing())
    assert [s.id for s in info.schedules] == ["nightly:quarter", "nightly:2"]
    assert all(s.next_fire_at is not None and not s.paused for s in info.schedules)


def test_serve_rejects_a_bad_metrics_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--metrics", "9464"]) == 2
    assert "is not HOST:PORT" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_runs_schedules_and_serves_metrics(tmp_path: Path) -> None:
    """A real `voltui serve`: its schedule fires on its own, and /metrics says so."""
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "ticker.yaml").write_text(TICKER)
    port = free_port()
    env = dict(os.environ, VOLTUI_DB=str(tmp_path / "state" / "voltui.db"))
    env["VOLTUI_AGENTS"] = json.dumps(
        [{"id": "sim", "kind": "simulated", "capabilities": [], "capacity": 4}]
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "voltui",
                "serve",
                "--socket",
                str(tmp_path / "s.sock"),
                "--workflows",
                str(folder),
                "--metrics",
                f"127.0.0.1:{port}",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        fires = 0.0
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                time.sleep(0.1)
                continue
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(text)
                for s in fam.samples
            }
            fires = samples.get(("voltui_schedule_fires_total", (("schedule", "ticker:1"),)), 0)
            started = samples.get(
                ("voltui_runs_started_total", (("trigger", "schedule"), ("workflow", "ticker"))), 0
            )
            if fires >= 2 and started >= 2:
                break
            time.sleep(0.2)
        assert fires >= 2, log.read_text()
        assert f"metrics on http://127.0.0.1:{port}/metrics" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
