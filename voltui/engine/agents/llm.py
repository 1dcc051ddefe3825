"""Run a step as one OpenAI-compatible chat completion (`POST {base_url}/chat/completions`).

Any server speaking that protocol works: OpenAI, vLLM, llama.cpp, Ollama's /v1, LiteLLM. The
endpoint comes from the engine settings `llm_base_url`, `llm_model`, `llm_api_key` and
`llm_timeout` (the config maps VOLTUI_LLM_* environment variables onto them); a step's
`llm.model` overrides the model. The request uses stdlib `urllib` in a worker thread, so there is
no HTTP dependency; a cancelled step stops waiting at once and the thread ends at its timeout.

`chat_completion` and `llm_configured` are public so Python steps can use the same endpoint.
"""

from __future__ import annotations

import asyncio
import json
import string
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from voltui.engine.agents.base import Agent, StepContext
from voltui.engine.durations import parse_duration
from voltui.engine.errors import StepError
from voltui.engine.models import RunKind

DEFAULT_TIMEOUT = 120.0
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


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> bytes:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


async def chat_completion(
    settings: Mapping[str, Any],
    messages: list[dict[str, Any]],
    *,
    model: str | None = None,
    max_tokens: int = 512,
    temperature: float = 0.2,
) -> dict[str, Any]:
    """One chat completion; returns `{"text", "model", "usage"}` or raises StepError.

    429 and 5xx answers and network failures are retryable; other 4xx answers (bad key, unknown
    model, bad request) are not, since repeating them cannot help.
    """
    base_url = _setting(settings, "llm_base_url")
    if not base_url:
        raise StepError(f"no LLM endpoint is configured; {HOW_TO_CONFIGURE}", retryable=False)
    model = model or _setting(settings, "llm_model")
    if not model:
        raise StepError(
            f"no LLM model is configured; set llm.model on the step or {HOW_TO_CONFIGURE}",
            retryable=False,
        )
    timeout = parse_duration(_setting(settings, "llm_timeout") or DEFAULT_TIMEOUT)
    url = str(base_url).rstrip("/")
    if not url.endswith("/chat/completions"):
        url += "/chat/completions"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    api_key = _setting(settings, "llm_api_key")
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    body = json.dumps(
        {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
    ).encode()
    try:
        raw = await asyncio.to_thread(_post, url, body, headers, timeout)
    except urllib.error.HTTPError as exc:
        with exc:
            detail = _error_message(exc.read() or b"")
        status = exc.code
        retryable = status == 429 or status >= 500
        raise StepError(
            f"LLM endpoint {url} answered HTTP {status}: {detail}",
            exit_code=status,
            retryable=retryable,
        ) from exc
    except urllib.error.URLError as exc:
        raise StepError(f"cannot reach LLM endpoint {url}: {exc.reason}") from exc
    except (TimeoutError, OSError) as exc:
        message = f"LLM endpoint {url} failed or timed out (timeout {timeout:g}s): {exc}"
        raise StepError(message) from exc
    try:
        doc = json.loads(raw)
        message = doc["choices"][0]["message"]
        text = message.get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        snippet = raw[:300].decode("utf-8", errors="replace")
        raise StepError(
            f"LLM endpoint {url} sent an answer that is not a chat completion: {snippet!r}",
            retryable=False,
        ) from exc
    return {"text": text, "model": doc.get("model") or model, "usage": doc.get("usage") or {}}


class LLMAgent(Agent):
    """Runs `llm` steps against the configured OpenAI-compatible endpoint."""

    kinds: frozenset[RunKind] = frozenset({"llm"})

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
        result = await chat_completion(
            ctx.settings,
            messages,
            model=call.model,
            max_tokens=call.max_tokens,
            temperature=call.temperature,
        )
        for line in result["text"].splitlines():
            ctx.emit("stdout", line)
        return result
