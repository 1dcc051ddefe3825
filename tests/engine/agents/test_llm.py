"""LLMAgent against a real local HTTP server speaking the chat-completions protocol."""

from __future__ import annotations

import json
import socket
import threading
import time
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


# ---------------------------------------------------------------- httpx, streaming, usage, limits

from tests.fixtures.fake_openai import FakeOpenAI, Reply  # noqa: E402
from voltui.engine.agents.llm import LineCoalescer, check_answer  # noqa: E402
from voltui.engine.errors import WorkflowFileError  # noqa: E402
from voltui.engine.loader import load_workflow_text  # noqa: E402
from voltui.engine.models import RateLimitSpec, Usage  # noqa: E402
from voltui.engine.ratelimit import RateLimits  # noqa: E402

PRICES = {"tiny": {"input_per_1m": 2.0, "output_per_1m": 8.0}}


def observed_ctx(
    tmp_path: Path, llm: dict[str, Any], settings: dict[str, Any], **extra: Any
) -> tuple[StepContext, list[tuple[str, str]], list[Usage], list[tuple[float | None, str]]]:
    ctx, lines = make_ctx(tmp_path, llm, settings, **extra)
    usages: list[Usage] = []
    waits: list[tuple[float | None, str]] = []
    ctx.on_usage = usages.append
    ctx.on_rate_limited = lambda until, reason: waits.append((until, reason))
    return ctx, lines, usages, waits


async def test_streamed_answer_reaches_the_log_line_by_line(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    text = "alpha beta\ngamma delta\n\nepsilon"
    fake_openai.then(
        Reply(text=text, chunks=["al", "pha", " be", "ta\ngam", "ma delta\n", "\neps", "ilon"])
    )
    ctx, lines, usages, _ = observed_ctx(
        tmp_path,
        {"prompt": "four words in here", "stream": True},
        fake_openai.settings(llm_prices=PRICES),
    )
    out = await AGENT.execute(ctx)
    assert out["text"] == text
    # seven chunks, four lines: tokens are coalesced into lines, not one event each
    assert lines == [
        ("stdout", "alpha beta"),
        ("stdout", "gamma delta"),
        ("stdout", ""),
        ("stdout", "epsilon"),
    ]
    [req] = fake_openai.requests
    assert req.body["stream"] is True
    assert req.body["stream_options"] == {"include_usage": True}
    assert req.headers["Accept"] == "text/event-stream"
    # the server counts words: 4 in the prompt, 5 in the answer
    assert usages == [
        Usage(
            prompt_tokens=4,
            completion_tokens=5,
            calls=1,
            model="tiny",
            cost_usd=(4 * 2.0 + 5 * 8.0) / 1e6,
            priced=True,
        )
    ]
    assert out["usage"]["completion_tokens"] == 5


def test_coalescer_flushes_words_of_a_slow_line() -> None:
    now = [0.0]
    got: list[str] = []
    lines = LineCoalescer(got.append, interval=0.1, timer=lambda: now[0])
    for piece in ["The", " quick", " brown"]:
        lines.feed(piece)
        now[0] += 0.04
    assert got == []  # 80 ms: still waiting for the newline
    lines.feed(" fox")  # 120 ms since the line began: the finished words go out
    assert got == ["The quick brown"]
    lines.feed(" jumps\nover")
    assert got == ["The quick brown", "fox jumps"]
    now[0] += 1.0
    lines.feed("the")  # a single unfinished word is kept whole
    assert got == ["The quick brown", "fox jumps"]
    lines.close()
    assert got == ["The quick brown", "fox jumps", "overthe"]


async def test_unpriced_model_and_missing_usage_are_never_free(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.then(Reply(text="x " * 30, send_usage=False))
    ctx, lines, usages, _ = observed_ctx(tmp_path, {"prompt": "p" * 300}, fake_openai.settings())
    await AGENT.execute(ctx)
    [usage] = usages
    assert usage.prompt_tokens >= 100 and usage.completion_tokens >= 20  # estimated
    assert not usage.priced and usage.cost_usd == 0.0
    assert ("engine", "the LLM server reported no token usage; counted an estimate") in lines


@pytest.mark.parametrize(
    ("answer", "ok"),
    [
        ('{"score": 9, "summary": "fine"}', True),
        ('```json\n{"score": 7, "summary": "ok"}\n```', True),
        ('{"score": "nine", "summary": "fine"}', "at score: 'nine' is not of type 'integer'"),
        ('{"summary": "fine"}', "'score' is a required property"),
        ("Sure! The score is 9.", "is not JSON"),
    ],
)
async def test_output_schema(
    tmp_path: Path, fake_openai: FakeOpenAI, answer: str, ok: bool | str
) -> None:
    schema = {
        "type": "object",
        "required": ["score", "summary"],
        "properties": {"score": {"type": "integer"}, "summary": {"type": "string"}},
    }
    fake_openai.then(Reply(text=answer))
    ctx, _, _, _ = observed_ctx(
        tmp_path, {"prompt": "rate it", "output_schema": schema}, fake_openai.settings()
    )
    if ok is True:
        out = await AGENT.execute(ctx)
        assert out["json"]["score"] in (7, 9)
        return
    with pytest.raises(StepError) as info:
        await AGENT.execute(ctx)
    assert info.value.retryable  # a model often gets it right on the next try
    assert str(ok) in str(info.value)


def test_check_answer_accepts_any_json_value() -> None:
    assert check_answer("[1, 2]", {"type": "array", "items": {"type": "integer"}}) == [1, 2]


def test_invalid_output_schema_is_a_located_file_error() -> None:
    text = (
        "id: w\n"
        "steps:\n"
        "  - id: a\n"
        "    run:\n"
        "      llm:\n"
        "        prompt: hi\n"
        "        output_schema: {type: object, properties: {n: {type: integr}}}\n"
    )
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(text, "bad.yaml")
    [problem] = info.value.problems
    assert problem.startswith("line 7, column 24 (steps[0].run.llm.output_schema): ")
    assert "not a valid JSON Schema at properties/n/type" in problem


async def test_429_retry_after_blocks_the_provider(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.then(
        Reply(status=429, error="slow down", headers={"Retry-After": "7"}),
    )
    ctx, _, usages, waits = observed_ctx(tmp_path, {"prompt": "hi"}, fake_openai.settings())
    ctx.limits = RateLimits()
    with pytest.raises(StepError, match="HTTP 429: slow down") as info:
        await AGENT.execute(ctx)
    assert info.value.retryable
    assert usages == []
    [(until, reason)] = waits
    assert reason == "HTTP 429 Retry-After of provider default"
    assert until is not None and 6 < until - time.time() <= 7.5
    scope = ctx.limits._scope("provider", "default")
    assert scope.blocked_until - time.monotonic() > 6


async def test_agent_rate_limit_is_waited_for_and_reported(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    agent = LLMAgent(AgentSpec(id="gpt", kind="llm"))
    now = [5000.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limits = RateLimits(
        {"gpt": RateLimitSpec(requests_per_minute=30, burst=1)},
        clock=lambda: now[0],
        timer=lambda: now[0],
        sleep=fake_sleep,
    )
    for _ in range(2):
        ctx, _, _, waits = observed_ctx(tmp_path, {"prompt": "hi"}, fake_openai.settings())
        ctx.limits = limits
        await agent.execute(ctx)
    await agent.close()
    assert slept == [2.0]  # 30 per minute, burst 1: the second call starts 2 s after the first
    assert waits == [(5002.0, "requests_per_minute of agent gpt")]
    assert len(fake_openai.requests) == 2


async def test_named_provider_with_key_from_environment(
    tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = LLMAgent(AgentSpec(id="gpt", kind="llm", config={"provider": "lab"}))
    providers = {"lab": {"base_url": fake_openai.base_url, "model": "lab-model"}}
    providers["lab"]["api_key_env"] = "LAB_KEY"
    settings = {"llm_providers": providers}
    monkeypatch.delenv("LAB_KEY", raising=False)
    ctx, _, _, _ = observed_ctx(tmp_path, {"prompt": "hi"}, settings)
    with pytest.raises(StepError, match=r"\$LAB_KEY, which is not set") as info:
        await agent.execute(ctx)
    assert not info.value.retryable
    monkeypatch.setenv("LAB_KEY", "sk-lab")
    out = await agent.execute(ctx)
    assert out["model"] == "lab-model"
    assert fake_openai.requests[-1].headers["Authorization"] == "Bearer sk-lab"
    other = LLMAgent(AgentSpec(id="x", kind="llm", config={"provider": "nope"}))
    with pytest.raises(StepError, match=r"provider 'nope' is not configured.*\(configured: lab\)"):
        await other.execute(ctx)
    await agent.close()
