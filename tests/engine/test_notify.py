"""Notifications against a real local HTTP receiver and a real command, through a real engine."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.engine.waiting import until
from voltui.config import OrchestratorConfig, load_config
from voltui.engine.errors import UserError
from voltui.engine.models import AgentSpec, Event, EventQuery, HealthStatus, RunState, Workflow
from voltui.engine.notify import NotifyRule, event_kinds, notification_text
from voltui.engine.orchestrator import Orchestrator

PY = sys.executable
WAIT = 30.0
TOKEN = "hook-token-5f1c9a"


class Receiver:
    """A tiny webhook endpoint: records every POST, answers with scripted status codes."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.posts: list[dict[str, Any]] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.paths.append(self.path)
                receiver.posts.append(json.loads(body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def failing(wid: str = "nightly") -> Workflow:
    return Workflow.model_validate(
        {
            "id": wid,
            "steps": [
                {"id": "boom", "run": {"command": [PY, "-c", "raise SystemExit('disk full')"]}}
            ],
        }
    )


def passing(wid: str = "nightly") -> Workflow:
    return Workflow.model_validate(
        {"id": wid, "steps": [{"id": "ok", "run": {"simulated": {"duration": "1ms"}}}]}
    )


def engine_with(tmp_path: Path, rules: list[dict[str, Any]]) -> Orchestrator:
    return Orchestrator(
        OrchestratorConfig(
            db=tmp_path / "state" / "engine.db",
            agents=[
                AgentSpec(id="cmd", kind="command", capabilities=[], capacity=4),
                AgentSpec(id="sim", kind="simulated", capabilities=[], capacity=4),
            ],
            notify=[NotifyRule.model_validate(r) for r in rules],
        )
    )


def notify_failed(engine: Orchestrator) -> bool:
    return any(e.type == "notify:failed" for e in engine.dispatcher.history())


FAST = {"max_attempts": 3, "base_delay": "10ms", "max_delay": "50ms", "jitter": 0}


async def run_all(engine: Orchestrator, workflows: list[Workflow]) -> list[str]:
    ids = []
    for wf in workflows:
        run = await engine.run_workflow(wf)
        await asyncio.wait_for(engine.wait_run(run.id), WAIT)
        ids.append(run.id)
    return ids


async def test_one_post_per_failed_run_retried_after_a_500(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    receiver.statuses = [500]  # the first delivery fails once, then everything is accepted
    engine = engine_with(
        tmp_path,
        [
            {
                "on": ["failed"],
                "webhook": f"{receiver.url}/hook?t=${{env:HOOK_TOKEN}}",
                "retry": FAST,
            }
        ],
    )
    await engine.start(watch=False)
    try:
        failed_a, ok, failed_b = await run_all(engine, [failing(), passing(), failing()])
    finally:
        await engine.stop()  # waits for deliveries still in flight

    assert len(receiver.posts) == 3  # 500, its retry, and the second run's one post
    assert [p["run_id"] for p in receiver.posts] == [failed_a, failed_a, failed_b]
    assert ok not in {p["run_id"] for p in receiver.posts}
    body = receiver.posts[-1]
    assert body["kind"] == "failed" and body["workflow_id"] == "nightly"
    assert body["text"].startswith(f"voltui: nightly run {failed_b} failed")
    assert "disk full" in body["text"]
    assert receiver.paths[0] == f"/hook?t={TOKEN}"  # the secret was sent...
    reopened = Orchestrator(engine.config)
    await reopened.start(watch=False)
    try:
        events = await reopened.events(EventQuery(type="notify:*"))
    finally:
        await reopened.stop()
    assert [e.type for e in events] == ["notify:retrying", "notify:sent", "notify:sent"]
    for path in (tmp_path / "state").glob("engine.db*"):  # ...and never stored
        assert TOKEN.encode() not in path.read_bytes(), path.name


async def test_a_failed_notification_is_an_event_and_a_health_warning_not_a_failed_run(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.statuses = [503] * 10
    engine = engine_with(
        tmp_path,
        [{"name": "ops", "on": ["succeeded"], "webhook": receiver.url, "retry": FAST}],
    )
    await engine.start(watch=False)
    try:
        (run_id,) = await run_all(engine, [passing()])
        await until(lambda: notify_failed(engine), "notify:failed")
        (failed,) = [e for e in engine.dispatcher.history() if e.type == "notify:failed"]
        assert failed.correlation_id == run_id
        assert failed.data["rule"] == "ops" and failed.data["attempts"] == 3
        assert failed.data["error"] == "HTTP 503 Service Unavailable"
        (status,) = await engine.watcher.check_now("notifications")
        assert status.status is HealthStatus.DEGRADED and "ops" in status.message
        assert (await engine.get_run(run_id)).run.state is RunState.SUCCEEDED
    finally:
        await engine.stop()
    assert len(receiver.posts) == 3


async def test_a_command_gets_the_notification_as_json_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    script = f"import sys, pathlib; pathlib.Path({str(out)!r}).write_text(sys.stdin.read())"
    engine = engine_with(
        tmp_path, [{"on": ["failed"], "workflows": ["night*"], "command": [PY, "-c", script]}]
    )
    await engine.start(watch=False)
    try:
        await run_all(engine, [failing("daily")])  # not matched by the rule's pattern
        assert not out.exists()
        (run_id,) = await run_all(engine, [failing("nightly")])
    finally:
        await engine.stop()
    got = json.loads(out.read_text())
    assert got["run_id"] == run_id and got["kind"] == "failed" and got["event"] == "workflow:failed"


async def test_a_rule_reading_an_unset_variable_stops_the_start_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOT_SET_HOOK", raising=False)
    engine = engine_with(tmp_path, [{"on": ["failed"], "webhook": "${env:NOT_SET_HOOK}"}])
    with pytest.raises(UserError, match="NOT_SET_HOOK is not set"):
        await engine.start(watch=False)
    assert not engine.running


def test_workflow_timeouts_notify_as_timed_out_and_as_failed() -> None:
    event = Event(
        seq=1,
        ts=0,
        type="workflow:failed",
        source="t",
        correlation_id="r1",
        data={"name": "Nightly", "error": "workflow timed out after 10m", "duration": 600.0},
    )
    assert event_kinds(event) == ("timed_out", "failed")
    assert notification_text("timed_out", event, "nightly") == (
        "voltui: Nightly run r1 timed out after 600.0s: workflow timed out after 10m"
    )


def test_notify_rules_read_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "voltui.toml"
    path.write_text(
        '[[notify]]\non = ["failed", "timed_out"]\nworkflows = ["nightly*"]\n'
        'webhook = { url = "https://hooks.example/${env:SLACK}", headers = { X-A = "b" } }\n'
        '[[notify]]\nname = "pager"\non = ["approval_needed"]\ncommand = ["notify-send"]\n'
    )
    config = load_config(path)
    first, second = config.notify
    assert first.webhook is not None and first.env_names() == ["SLACK"]
    assert second.command == ["notify-send"] and second.name == "pager"
    path.write_text('[[notify]]\non = ["failed"]\n')
    with pytest.raises(UserError, match="exactly one of webhook or command"):
        load_config(path)


async def test_a_secret_in_a_failing_notification_is_masked_in_its_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    argv = [PY, "-c", "import sys; sys.exit('rejected ' + sys.argv[1])", "${env:HOOK_TOKEN}"]
    engine = engine_with(
        tmp_path, [{"on": ["failed"], "command": argv, "retry": {"max_attempts": 1}}]
    )
    await engine.start(watch=False)
    try:
        await run_all(engine, [failing()])
        await until(lambda: notify_failed(engine), "notify:failed")
        (failed,) = [e for e in engine.dispatcher.history() if e.type == "notify:failed"]
    finally:
        await engine.stop()
    assert failed.data["error"].endswith("exited with code 1: rejected ***")
    for path in (tmp_path / "state").glob("engine.db*"):
        assert TOKEN.encode() not in path.read_bytes(), path.name


async def test_an_engine_sharing_the_store_does_not_notify_about_another_engines_runs(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The dashboard relays a server's events (marked foreign); only the owner notifies."""
    rules = [{"on": ["failed"], "webhook": receiver.url, "retry": FAST}]
    owner = engine_with(tmp_path, rules)
    watcher = engine_with(tmp_path, rules)
    await owner.start(watch=False)
    await watcher.start()  # watching: relays the owner's events from the store
    try:
        (run_id,) = await run_all(owner, [failing()])
        await until(
            lambda: any(
                e.foreign and e.type == "workflow:failed" and e.correlation_id == run_id
                for e in watcher.dispatcher.history()
            ),
            "the relayed workflow:failed",
        )
    finally:
        await watcher.stop()
        await owner.stop()
    assert [p["run_id"] for p in receiver.posts] == [run_id]


async def test_an_approval_step_notifies_approval_needed_with_its_prompt(tmp_path: Path) -> None:
    out = tmp_path / "asked.json"
    script = f"import sys, pathlib; pathlib.Path({str(out)!r}).write_text(sys.stdin.read())"
    engine = engine_with(tmp_path, [{"on": ["approval_needed"], "command": [PY, "-c", script]}])
    wf = Workflow.model_validate(
        {
            "id": "release",
            "steps": [{"id": "gate", "run": {"approval": {"prompt": "ship 1.2 to prod?"}}}],
        }
    )
    await engine.start(watch=False)
    try:
        run = await engine.run_workflow(wf)
        await until(out.exists, "the approval notification")
        await engine.cancel_run(run.id)
    finally:
        await engine.stop()
    got = json.loads(out.read_text())
    assert got["kind"] == "approval_needed" and got["run_id"] == run.id
    assert got["workflow_id"] == "release" and got["step"] == "gate"
    assert got["text"] == f"voltui: release run {run.id} waits for approval at step gate: " + (
        "ship 1.2 to prod?"
    )
