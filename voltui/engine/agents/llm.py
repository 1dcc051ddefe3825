"""Run a step as one OpenAI-compatible chat completion (`POST {base_url}/chat/completions`).

Any server speaking that protocol works: OpenAI, vLLM, llama.cpp, Ollama's /v1, LiteLLM. The
endpoint comes from the engine settings `llm_base_url`, `llm_model`, `llm_api_key` and
`llm_timeout` (the config maps VOLTUI_LLM_* environment variables onto them), or from a named
provider (`[llm.providers.NAME]` in the config) that an agent selects with
`config = {provider = "NAME"}`; a step's `llm.model` overrides the model.

The HTTP client is `httpx` on asyncio, so a call costs no thread and a cancelled step stops at
once. With `stream: true` the answer arrives as server-sent events and reaches the step log as
it grows (whole lines at once, and words after 100 ms without a newline), not one event per
token. Token usage is a structured fact (`StepRun.usage`, priced from `[llm.prices]`), rate
limits of the agent and the provider are waited for before the call, and a 429/503 answer's
`Retry-After` holds back every later call to that provider.

`chat_completion` and `llm_configured` are public so Python steps can use the same endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import string
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

if "httpx" not in sys.modules:
    # httpx imports its command-line client (click, rich, pygments) eagerly whenever click is
    # installed, as it is with the Dask extra. The engine never uses that client and must not
    # load UI libraries, so that one submodule is marked unavailable; httpx then skips it.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[assignment]

import httpx

from voltui.engine.agents.base import Agent, StepContext
from voltui.engine.durations import parse_duration
from voltui.engine.errors import StepError
from voltui.engine.models import AgentSpec, RunKind, Usage
from voltui.engine.ratelimit import DEFAULT_PROVIDER, Permit, parse_retry_after
from voltui.engine.usage import estimate_prompt_tokens, make_usage

DEFAULT_TIMEOUT = 120.0
FLUSH_INTERVAL = 0.1
"""Longest time streamed words wait for their line's newline before reaching the log."""
HOW_TO_CONFIGURE = (
    "set VOLTUI_LLM_BASE_URL (an OpenAI-compatible endpoint such as https://api.openai.com/v1 "
    "or http://localhost:11434/v1), VOLTUI_LLM_MODEL and, if the server needs one, "
    "VOLTUI_LLM_API_KEY (or llm_base_url, llm_model, llm_api_key in voltui.toml)"
)


class _Missing:
    """A placeholder that formats back to its own `{name!conv:spec}` text."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.conversion: str | None = None

    def __format__(self, spec: str) -> str:
        conv = f"!{self.conversion}" if self.conversion else ""
        return "{" + self.name + conv + (f":{spec}" if spec else "") + "}"


class _LenientFormatter(string.Formatter):
    """`str.format_map` where unknown names stay as written, so prompts may contain literal
    braces (JSON examples) or placeholders for later without failing the step."""

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        try:
            return super().get_field(field_name, args, kwargs)
        except (KeyError, IndexError, AttributeError, TypeError):
            return _Missing(field_name), field_name

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if isinstance(value, _Missing):
            value.conversion = conversion
            return value
        return super().convert_field(value, conversion)


_formatter = _LenientFormatter()


def fill_template(template: str, values: Mapping[str, Any]) -> str:
    """Fill `{name}` fields from `values`; missing names and malformed braces are left as is."""
    try:
        return _formatter.vformat(template, (), values)
    except (ValueError, IndexError):  # e.g. a lone "{" or "}": the text is not a template
        return template


def _setting(settings: Mapping[str, Any], key: str) -> Any:
    value = settings.get(key)
    return value if value not in ("", None) else None


def llm_configured(settings: Mapping[str, Any]) -> bool:
    """Whether an endpoint and a default model are configured (what `chat_completion` needs
    when no model is passed)."""
    return bool(_setting(settings, "llm_base_url")) and bool(_setting(settings, "llm_model"))


@dataclass(frozen=True)
class Endpoint:
    """Where one call goes, resolved from the settings and the agent's provider."""

    provider: str
    url: str
    model: str
    api_key: str | None
    timeout: float


def resolve_endpoint(
    settings: Mapping[str, Any], *, provider: str | None = None, model: str | None = None
) -> Endpoint:
    """The endpoint of `provider` (default: the `llm_*` settings), or a non-retryable
    StepError saying what to configure."""
    name = provider or DEFAULT_PROVIDER
    if name == DEFAULT_PROVIDER and not (settings.get("llm_providers") or {}).get(name):
        base_url = _setting(settings, "llm_base_url")
        default_model = _setting(settings, "llm_model")
        api_key = _setting(settings, "llm_api_key")
        timeout = _setting(settings, "llm_timeout")
        if not base_url:
            raise StepError(f"no LLM endpoint is configured; {HOW_TO_CONFIGURE}", retryable=False)
    else:
        entry = (settings.get("llm_providers") or {}).get(name)
        if not entry:
            known = ", ".join(sorted(settings.get("llm_providers") or {})) or "none"
            raise StepError(
                f"LLM provider {name!r} is not configured; add [llm.providers.{name}] with "
                f"base_url (and model, api_key_env) to voltui.toml (configured: {known})",
                retryable=False,
            )
        base_url = entry.get("base_url")
        default_model = entry.get("model") or _setting(settings, "llm_model")
        timeout = entry.get("timeout") or _setting(settings, "llm_timeout")
        api_key = None
        key_env = entry.get("api_key_env")
        if key_env:
            api_key = os.environ.get(key_env)
            if not api_key:
                raise StepError(
                    f"LLM provider {name!r} takes its API key from ${key_env}, which is not set "
                    "in the engine's environment; export it and start the engine again",
                    retryable=False,
                )
    model = model or default_model
    if not model:
        raise StepError(
            f"no LLM model is configured; set llm.model on the step or {HOW_TO_CONFIGURE}",
            retryable=False,
        )
    url = str(base_url).rstrip("/")
    if not url.endswith("/chat/completions"):
        url += "/chat/completions"
    return Endpoint(
        provider=name,
        url=url,
        model=str(model),
        api_key=str(api_key) if api_key else None,
        timeout=parse_duration(timeout or DEFAULT_TIMEOUT),
    )


def _error_message(body: bytes) -> str:
    """The server's own words when it sent JSON (`{"error": {"message": ...}}` or similar)."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        return text[:500] or "(empty body)"
    if isinstance(doc, dict):
        err = doc.get("error", doc)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err.get("error")
            if msg:
                return str(msg)
        elif isinstance(err, str):
            return err
        if doc.get("message") or doc.get("detail"):
            return str(doc.get("message") or doc.get("detail"))
    return text[:500]


class LineCoalescer:
    """Turns streamed text fragments into log lines: every complete line at once, and the
    words of an unfinished line once they waited `interval` seconds (cut at a space, so a
    slow line reaches the dashboard in readable pieces, never one event per token)."""

    def __init__(
        self,
        emit: Callable[[str], None],
        *,
        interval: float = FLUSH_INTERVAL,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit = emit
        self._interval = interval
        self._timer = timer
        self._buffer = ""
        self._since = timer()

    def feed(self, text: str) -> None:
        if not self._buffer:
            self._since = self._timer()
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._emit(line.rstrip("\r"))
        if lines:
            self._since = self._timer()
        if self._buffer and self._timer() - self._since >= self._interval:
            cut = self._buffer.rfind(" ")
            if cut > 0:
                self._emit(self._buffer[:cut])
                self._buffer = self._buffer[cut + 1 :]
                self._since = self._timer()

    def close(self) -> None:
        if self._buffer:
            self._emit(self._buffer)
            self._buffer = ""


async def _sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The `data` of each server-sent event (several `data:` lines joined by newlines)."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue  # a comment (keep-alive)
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def _http_error(endpoint: Endpoint, status: int, body: bytes) -> StepError:
    detail = _error_message(body or b"")
    return StepError(
        f"LLM endpoint {endpoint.url} answered HTTP {status}: {detail}",
        exit_code=status,
        retryable=status == 429 or status >= 500,
    )


def _not_a_completion(endpoint: Endpoint, raw: bytes | str) -> StepError:
    text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
    return StepError(
        f"LLM endpoint {endpoint.url} sent an answer that is not a chat completion: {text[:300]!r}",
        retryable=False,
    )


async def _read_stream(
    endpoint: Endpoint, response: httpx.Response, on_text: Callable[[str], None] | None
) -> tuple[str, str | None, dict[str, Any] | None]:
    """Text, served model and usage of a streamed completion."""
    parts: list[str] = []
    served: str | None = None
    usage: dict[str, Any] | None = None
    async for data in _sse_data(response):
        if data.strip() == "[DONE]":
            break
        try:
            chunk = json.loads(data)
        except ValueError:
            raise _not_a_completion(endpoint, data) from None
        if not isinstance(chunk, dict):
            raise _not_a_completion(endpoint, data)
        if chunk.get("error"):
            raise StepError(
                f"LLM endpoint {endpoint.url} failed mid-answer: "
                f"{_error_message(json.dumps(chunk).encode())}"
            )
        served = chunk.get("model") or served
        if isinstance(chunk.get("usage"), dict):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = (choice or {}).get("delta") or {}
            text = delta.get("content") if isinstance(delta, dict) else None
            if text:
                parts.append(str(text))
                if on_text is not None:
                    on_text(str(text))
    return "".join(parts), served, usage


def _parse_completion(endpoint: Endpoint, raw: bytes) -> tuple[str, str | None, Any]:
    try:
        doc = json.loads(raw)
        message = doc["choices"][0]["message"]
        text = message.get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise _not_a_completion(endpoint, raw[:300]) from None
    return str(text), doc.get("model"), doc.get("usage")


async def chat_completion(
    settings: Mapping[str, Any],
    messages: list[dict[str, Any]],
    *,
    model: str | None = None,
    max_tokens: int = 512,
    temperature: float = 0.2,
    stream: bool = False,
    on_text: Callable[[str], None] | None = None,
    provider: str | None = None,
    ctx: StepContext | None = None,
    agent_id: str | None = None,
    client: httpx.AsyncClient | None = None,
) -> dict[str, Any]:
    """One chat completion; returns `{"text", "model", "usage"}` or raises StepError.

    429 and 5xx answers and network failures are retryable; other 4xx answers (bad key, unknown
    model, bad request) are not, since repeating them cannot help. With `stream`, `on_text`
    gets each text fragment as it arrives. With `ctx`, the call waits for the rate limits of
    `agent_id` and `provider`, and reports its usage and waits through the context.
    """
    endpoint = resolve_endpoint(settings, provider=provider, model=model)
    headers = {"Content-Type": "application/json"}
    headers["Accept"] = "text/event-stream" if stream else "application/json"
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    body: dict[str, Any] = {
        "model": endpoint.model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": temperature,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    estimate = estimate_prompt_tokens(messages) + max_tokens
    budget = ctx.budget if ctx is not None else None
    reservation = (
        budget.reserve(
            model=endpoint.model,
            prompt_tokens=estimate_prompt_tokens(messages),
            max_tokens=max_tokens,
            step_id=ctx.step.id if ctx is not None else "?",
        )
        if budget is not None
        else None
    )
    limits = ctx.limits if ctx is not None else None
    hold: contextlib.AbstractAsyncContextManager[Permit] = (
        limits.hold(
            agent_id=agent_id,
            provider=endpoint.provider,
            tokens=estimate,
            on_wait=ctx.on_rate_limited if ctx is not None else None,
        )
        if limits is not None
        else contextlib.nullcontext(Permit(estimate=estimate))
    )
    usage: Usage | None = None
    try:
        async with hold as permit, contextlib.AsyncExitStack() as stack:
            if client is None:
                client = await stack.enter_async_context(httpx.AsyncClient())
            try:
                async with client.stream(
                    "POST", endpoint.url, json=body, headers=headers, timeout=endpoint.timeout
                ) as response:
                    if response.status_code >= 400:
                        error = _http_error(endpoint, response.status_code, await response.aread())
                        _note_retry_after(ctx, limits, endpoint, response)
                        raise error
                    ctype = response.headers.get("content-type", "")
                    if stream and "text/event-stream" in ctype:
                        text, served, raw_usage = await _read_stream(endpoint, response, on_text)
                    else:  # a server may ignore `stream` and answer in one piece
                        text, served, raw_usage = _parse_completion(
                            endpoint, await response.aread()
                        )
                        if on_text is not None and text:
                            on_text(text)
            except httpx.TimeoutException as exc:
                raise StepError(
                    f"LLM endpoint {endpoint.url} timed out (timeout {endpoint.timeout:g}s): "
                    f"{type(exc).__name__}"
                ) from exc
            except httpx.ConnectError as exc:
                raise StepError(f"cannot reach LLM endpoint {endpoint.url}: {exc}") from exc
            except httpx.HTTPError as exc:
                raise StepError(f"LLM endpoint {endpoint.url} failed: {exc}") from exc
            prices = settings.get("llm_prices") or {}
            if isinstance(raw_usage, dict) and (
                "prompt_tokens" in raw_usage or "completion_tokens" in raw_usage
            ):
                usage = make_usage(raw_usage, endpoint.model, prices, served)
            else:  # never count a call as free because the server did not say
                guessed = {
                    "prompt_tokens": estimate_prompt_tokens(messages),
                    "completion_tokens": len(text) // 3 + 1,
                }
                usage = make_usage(guessed, endpoint.model, prices, served)
                if ctx is not None:
                    ctx.emit(
                        "engine", "the LLM server reported no token usage; counted an estimate"
                    )
            permit.settle(usage.total_tokens)
    finally:
        if budget is not None and reservation is not None:
            budget.settle(reservation, usage)
    if ctx is not None:
        ctx.on_usage(usage)
    return {
        "text": text,
        "model": served or endpoint.model,
        "usage": raw_usage if isinstance(raw_usage, dict) else {},
    }


def _note_retry_after(
    ctx: StepContext | None, limits: Any, endpoint: Endpoint, response: httpx.Response
) -> None:
    """A 429/503 with Retry-After holds back every later call to the provider that long."""
    if response.status_code not in (429, 503):
        return
    seconds = parse_retry_after(response.headers.get("retry-after"))
    if seconds is None or limits is None:
        return
    until = limits.block(endpoint.provider, seconds)
    if ctx is not None:
        ctx.on_rate_limited(
            until, f"HTTP {response.status_code} Retry-After of provider {endpoint.provider}"
        )


_FENCE = re.compile(r"^\s*```[\w-]*\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


def parse_json_answer(text: str) -> Any:
    """The JSON value of a model's answer, allowing one surrounding ``` fence."""
    match = _FENCE.match(text)
    return json.loads(match.group(1) if match else text)


def check_answer(text: str, schema: Mapping[str, Any]) -> Any:
    """The answer's JSON if it matches `schema`, else a retryable StepError saying where not
    (a model often gets it right on a second try)."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match
    from jsonschema.validators import validator_for

    try:
        value = parse_json_answer(text)
    except ValueError as exc:
        raise StepError(
            f"the model's answer is not JSON ({exc}); output_schema needs a JSON answer: "
            f"{text[:200]!r}",
            retryable=True,
        ) from None
    validator = validator_for(schema, default=Draft202012Validator)(schema)
    error = best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise StepError(
            f"the model's answer does not match output_schema at {where}: {error.message}",
            retryable=True,
        )
    return value


class LLMAgent(Agent):
    """Runs `llm` steps against the configured OpenAI-compatible endpoint.

    The agent's `config` may name a `provider` (a `[llm.providers.NAME]` entry); without one it
    uses the `llm_*` settings. One HTTP client per agent keeps connections alive between steps.
    """

    kinds: frozenset[RunKind] = frozenset({"llm"})

    def __init__(self, spec: AgentSpec) -> None:
        super().__init__(spec)
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @property
    def provider(self) -> str | None:
        value = self.spec.config.get("provider")
        return str(value) if value else None

    def _http(self) -> httpx.AsyncClient:
        # Pooled connections belong to the event loop that opened them; an agent reused by a
        # new loop (an engine restarted in the same process) starts a fresh client.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._client_loop is not loop:
            self._client = httpx.AsyncClient()
            self._client_loop = loop
        return self._client

    async def execute(self, ctx: StepContext) -> Any:
        call = ctx.step.run.llm
        if call is None:
            raise StepError(
                f"step {ctx.step.id!r} has no llm call; the llm agent cannot run it",
                retryable=False,
            )
        values: dict[str, Any] = {**ctx.inputs, **ctx.step.params, "upstream": ctx.upstream}
        messages: list[dict[str, Any]] = []
        if call.system:
            messages.append({"role": "system", "content": fill_template(call.system, values)})
        messages.append({"role": "user", "content": fill_template(call.prompt, values)})
        lines = LineCoalescer(lambda line: ctx.emit("stdout", line))
        try:
            result = await chat_completion(
                ctx.settings,
                messages,
                model=call.model,
                max_tokens=call.max_tokens,
                temperature=call.temperature,
                stream=call.stream,
                on_text=lines.feed,
                provider=self.provider,
                ctx=ctx,
                agent_id=self.id,
                client=self._http(),
            )
        finally:
            lines.close()
        if call.output_schema is not None:
            result["json"] = check_answer(result["text"], call.output_schema)
        return result

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._client_loop is asyncio.get_running_loop():
            await client.aclose()
