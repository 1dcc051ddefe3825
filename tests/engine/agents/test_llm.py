"""LLMAgent against a real local HTTP server speaking the chat-completions protocol."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from voltui.engine.agents.base import StepContext
from voltui.engine.agents.llm import LLMAgent, chat_completion, fill_template, llm_configured
from voltui.engine.errors import StepError
from voltui.engine.models import AgentSpec, Step

AGENT = LLMAgent(AgentSpec(id="llm", kind="llm"))


@dataclass
class FakeLLM:
    """What the server answers next, and every request it received."""

    base_url: str = ""
    status: int = 200
    reply: Any = None
    requests: list[dict[str, Any]] = field(default_factory=list)

    def answer(self, body: dict[str, Any]) -> Any:
        if self.reply is not None:
            return self.reply
        return {
            "id": "cmpl-1",
            "model": body.get("model", "?") + "-served",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "line one\nline two"}}
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15},
        }


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLM]:
    for name in ("NO_PROXY", "no_proxy"):  # urllib honours *_proxy; keep local calls local
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    fake = FakeLLM()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            fake.requests.append(
                {"path": self.path, "headers": dict(self.headers.items()), "body": body}
            )
            payload = fake.answer(body)
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(fake.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    fake.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def make_ctx(
    tmp_path: Path, llm: dict[str, Any], settings: dict[str, Any], **extra: Any
) -> tuple[StepContext, list[tuple[str, str]]]:
    lines: list[tuple[str, str]] = []
    step = Step.model_validate(
        {"id": "ask", "run": {"llm": llm}, "params": extra.pop("params", {})}
    )
    ctx = StepContext(
        run_id="r1",
        step=step,
        attempt=1,
        inputs=extra.pop("inputs", {}),
        upstream=extra.pop("upstream", {}),
        base_dir=tmp_path,
        run_dir=tmp_path,
        emit=lambda stream, line: lines.append((stream, line)),
        settings=settings,
    )
    return ctx, lines


def settings_for(server: FakeLLM, **more: Any) -> dict[str, Any]:
    return {"llm_base_url": server.base_url, "llm_model": "tiny", "llm_timeout": 10, **more}


async def test_request_and_output(tmp_path: Path, server: FakeLLM) -> None:
    ctx, lines = make_ctx(
        tmp_path,
        {
            "system": "You review {language} code.",
            "prompt": 'Review {path} ({upstream[lint][issues]} issues, {missing}); as {"k": 1}',
            "max_tokens": 64,
            "temperature": 0.7,
        },
        settings_for(server, llm_api_key="sk-test"),
        inputs={"path": "src/app.py", "language": "Rust"},
        params={"language": "Python"},
        upstream={"lint": {"issues": 3}},
    )
    out = await AGENT.execute(ctx)
    assert out == {
        "text": "line one\nline two",
        "model": "tiny-served",
        "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15},
    }
    assert lines == [("stdout", "line one"), ("stdout", "line two")]
    [req] = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == "Bearer sk-test"
    assert req["body"] == {
        "model": "tiny",
        "messages": [
            {"role": "system", "content": "You review Python code."},  # params beat inputs
            {
                "role": "user",
                "content": 'Review src/app.py (3 issues, {missing}); as {"k": 1}',
            },
        ],
        "max_tokens": 64,
        "temperature": 0.7,
    }


async def test_step_model_overrides_and_no_key_means_no_auth(
    tmp_path: Path, server: FakeLLM
) -> None:
    ctx, _ = make_ctx(tmp_path, {"prompt": "hi", "model": "big"}, settings_for(server))
    out = await AGENT.execute(ctx)
    assert out["model"] == "big-served"
    [req] = server.requests
    assert req["body"]["model"] == "big"
    assert [m["role"] for m in req["body"]["messages"]] == ["user"]
    assert "Authorization" not in req["headers"]


@pytest.mark.parametrize(
    ("status", "reply", "retryable", "detail"),
    [
        (429, {"error": {"message": "rate limited, slow down"}}, True, "rate limited, slow down"),
        (503, {"error": "overloaded"}, True, "overloaded"),
        (500, b"<html>oops</html>", True, "<html>oops</html>"),
        (401, {"error": {"message": "invalid api key"}}, False, "invalid api key"),
        (404, {"detail": "model not found"}, False, "model not found"),
    ],
)
async def test_http_errors(
    tmp_path: Path, server: FakeLLM, status: int, reply: Any, retryable: bool, detail: str
) -> None:
    server.status, server.reply = status, reply
    ctx, _ = make_ctx(tmp_path, {"prompt": "hi"}, settings_for(server))
    with pytest.raises(StepError) as info:
        await AGENT.execute(ctx)
    assert info.value.retryable is retryable
    assert f"HTTP {status}" in str(info.value)
    assert detail in str(info.value)


async def test_answer_that_is_not_a_completion(tmp_path: Path, server: FakeLLM) -> None:
    server.reply = {"unexpected": True}
    ctx, _ = make_ctx(tmp_path, {"prompt": "hi"}, settings_for(server))
    with pytest.raises(StepError, match="not a chat completion") as info:
        await AGENT.execute(ctx)
    assert not info.value.retryable


async def test_not_configured(tmp_path: Path) -> None:
    ctx, _ = make_ctx(tmp_path, {"prompt": "hi"}, {})
    with pytest.raises(StepError) as info:
        await AGENT.execute(ctx)
    assert not info.value.retryable
    for name in ("VOLTUI_LLM_BASE_URL", "VOLTUI_LLM_MODEL", "VOLTUI_LLM_API_KEY"):
        assert name in str(info.value)


async def test_unreachable_endpoint_is_retryable(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx, _ = make_ctx(
        tmp_path, {"prompt": "hi"}, {"llm_base_url": f"http://127.0.0.1:{port}", "llm_model": "m"}
    )
    with pytest.raises(StepError, match="cannot reach") as info:
        await AGENT.execute(ctx)
    assert info.value.retryable


async def test_chat_completion_for_python_steps(server: FakeLLM) -> None:
    settings = settings_for(server)
    assert llm_configured(settings)
    assert not llm_configured({"llm_base_url": server.base_url})
    assert not llm_configured({"llm_model": "m", "llm_base_url": ""})
    out = await chat_completion(
        settings, [{"role": "user", "content": "x"}], max_tokens=5, temperature=0
    )
    assert out["text"] == "line one\nline two"
    assert server.requests[0]["body"]["max_tokens"] == 5
    assert server.requests[0]["body"]["temperature"] == 0


def test_fill_template_leaves_unknowns_alone() -> None:
    values = {"name": "ada", "n": 3, "up": {"a": [1, 2]}}
    assert fill_template("hi {name}, {n:03d} {up[a][1]}", values) == "hi ada, 003 2"
    assert fill_template("{missing!r:>5} {up.attr} {0}", values) == "{missing!r:>5} {up.attr} {0}"
    assert fill_template("lone { brace", values) == "lone { brace"
    assert fill_template("{{literal}} {name}", values) == "{literal} ada"
