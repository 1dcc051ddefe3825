"""Notifications: tell someone when a run fails, succeeds, times out or waits for approval.

Rules live in the config (`[[notify]]` in voltui.toml), each matching event kinds and workflow ids
and sending either a webhook (a JSON body with a Slack-compatible `text` field, via httpx) or a
command (an argv list; the notification as JSON on stdin; no shell). The Notifier reads engine
events from a dispatcher sink, so the engine needs no notification code of its own.

Delivery is retried with backoff (the same `retry` policy as steps). A notification that still
fails is a `notify:failed` event and a degraded `notifications` health component, never a failed
run. Secrets (a webhook URL with a token, an auth header) come from environment variables
written as `${env:NAME}`; they are resolved only when sending and are masked out of every error
the Notifier reports, so they never reach the store or the events.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from voltui.engine.errors import UserError
from voltui.engine.events import EventEmitter
from voltui.engine.models import Duration, Event, HealthStatus, Priority, RetryPolicy
from voltui.engine.retry import backoff_delay
from voltui.engine.secrets import Masker

__all__ = [
    "EVENT_KINDS",
    "Notifier",
    "NotifyKind",
    "NotifyRule",
    "WebhookTarget",
    "event_kinds",
    "notification_text",
]

log = logging.getLogger(__name__)

SOURCE = "notify"
NotifyKind = Literal["failed", "succeeded", "approval_needed", "timed_out"]
EVENT_KINDS: dict[str, tuple[NotifyKind, ...]] = {
    "workflow:succeeded": ("succeeded",),
    "workflow:failed": ("failed",),
    "workflow:timed_out": ("timed_out", "failed"),
    "step:approval_requested": ("approval_needed",),
}
"""Event types that can notify, and the rule kinds (`on = [...]`) each one matches."""
_FINAL = frozenset(
    f"workflow:{s}" for s in ("succeeded", "failed", "cancelled", "interrupted", "timed_out")
)
_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
DRAIN_TIMEOUT = 10.0
"""How long engine shutdown waits for notifications still being delivered."""


def _default_retry() -> RetryPolicy:
    return RetryPolicy(max_attempts=4, backoff="exponential", base_delay=1.0, max_delay=60.0)


class WebhookTarget(BaseModel):
    """POST the notification as JSON; `${env:NAME}` in the URL and headers is read at send time."""

    model_config = ConfigDict(extra="forbid")
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "${env:")):
            raise ValueError(
                f"webhook url {value!r} must start with http:// or https:// "
                "(or be ${env:NAME} to read it from the environment)"
            )
        return value


class NotifyRule(BaseModel):
    """One `[[notify]]` entry: when (`on`, `workflows`) and how (`webhook` or `command`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str | None = Field(None, description="shown in events and health; default rule-N")
    on: list[NotifyKind] = Field(min_length=1)
    workflows: list[str] = Field(default_factory=lambda: ["*"], description="fnmatch patterns")
    webhook: WebhookTarget | None = None
    command: list[str] | None = Field(None, description="argv; the notification JSON on stdin")
    timeout: Duration = Field(30.0, description="for a command")
    retry: RetryPolicy = Field(default_factory=_default_retry)

    @field_validator("webhook", mode="before")
    @classmethod
    def _url_shorthand(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_target(self) -> NotifyRule:
        if (self.webhook is None) == (self.command is None):
            raise ValueError("a notify rule needs exactly one of webhook or command")
        if self.command is not None and not self.command:
            raise ValueError("command is an empty list; give at least the program name")
        return self

    def env_names(self) -> list[str]:
        """Environment variables the rule reads (its secrets)."""
        texts: list[str] = []
        if self.webhook is not None:
            texts += [self.webhook.url, *self.webhook.headers.values()]
        if self.command is not None:
            texts += self.command
        return [m for t in texts for m in _ENV_REF.findall(t)]


def event_kinds(event: Event) -> tuple[NotifyKind, ...]:
    """The notify kinds an event stands for; a workflow timeout is also a failure."""
    kinds = EVENT_KINDS.get(event.type, ())
    if event.type == "workflow:failed" and (
        event.data.get("timed_out") is True
        or str(event.data.get("error") or "").startswith("workflow timed out")
    ):
        return ("timed_out", "failed")
    return kinds


def notification_text(kind: str, event: Event, workflow_id: str | None) -> str:
    """One line a chat channel can show: what happened to which run, and why."""
    d = event.data
    name = d.get("name") or workflow_id or d.get("workflow_id") or "workflow"
    run = event.correlation_id or "?"
    if kind == "approval_needed":
        step = d.get("step")
        prompt = d.get("prompt")
        text = f"voltui: {name} run {run} waits for approval" + (f" at step {step}" if step else "")
        return text + (f": {prompt}" if prompt else "")
    words = {"failed": "failed", "succeeded": "succeeded", "timed_out": "timed out"}[kind]
    text = f"voltui: {name} run {run} {words}"
    duration = d.get("duration")
    if isinstance(duration, int | float):
        text += f" after {duration:.1f}s"
    if kind != "succeeded" and d.get("error"):
        text += f": {d['error']}"
    return text


class _Failure(Exception):
    """A delivery attempt failed; the message is safe to report (secrets masked)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Notifier:
    """Matches events to rules and delivers; see the module docstring."""

    def __init__(
        self,
        rules: list[NotifyRule],
        events: EventEmitter,
        *,
        environ: dict[str, str] | None = None,
        on_health: Callable[[], None] | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rules = rules
        self._events = events
        self._environ = os.environ if environ is None else environ
        self._on_health = on_health
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: Any = None
        self._runs: dict[str, tuple[str, str]] = {}  # run id -> (workflow id, trigger)
        self._closed = False
        self.sent = 0
        self.failed = 0
        self.last_failure: str | None = None

    # ------------------------------------------------------------------ setup

    def check_env(self) -> None:
        """Every `${env:NAME}` a rule uses must be set now: a missing one is a config mistake
        better reported at start than at the first failed run."""
        for i, rule in enumerate(self._rules):
            for name in rule.env_names():
                if not self._environ.get(name):
                    raise UserError(
                        f"notify rule {self.rule_name(i)}: it reads ${{env:{name}}}, but the "
                        f"environment variable {name} is not set; export it before starting "
                        "voltui, or change the rule"
                    )

    def rule_name(self, index: int) -> str:
        return self._rules[index].name or f"rule-{index + 1}"

    def health(self) -> tuple[HealthStatus, str]:
        """For the watcher: degraded while the latest delivery outcome was a failure."""
        if self.last_failure is not None:
            return HealthStatus.DEGRADED, self.last_failure
        return HealthStatus.HEALTHY, f"{self.sent} sent, {self.failed} failed"

    # ------------------------------------------------------------------ events

    def sink(self, event: Event) -> None:
        """Dispatcher sink: cheap for every event, starts a delivery task for matching ones."""
        etype = event.type
        if etype == "workflow:queued":
            if event.correlation_id:
                d = event.data
                self._runs[event.correlation_id] = (
                    str(d.get("workflow_id") or ""),
                    str(d.get("trigger") or "manual"),
                )
            return
        if etype in _FINAL:
            info = self._runs.pop(event.correlation_id or "", None)
        elif etype in EVENT_KINDS:
            info = self._runs.get(event.correlation_id or "")
        else:
            return
        if self._closed or etype not in EVENT_KINDS:
            return
        kinds = event_kinds(event)
        workflow_id = event.data.get("workflow_id") or (info[0] if info else None)
        for i, rule in enumerate(self._rules):
            kind = next((k for k in kinds if k in rule.on), None)
            if kind is None:
                continue
            if not any(fnmatch.fnmatchcase(str(workflow_id or ""), p) for p in rule.workflows):
                continue
            payload = self._payload(kind, event, workflow_id, info[1] if info else None)
            task = asyncio.get_running_loop().create_task(
                self._deliver(i, rule, payload, event), name=f"notify:{self.rule_name(i)}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _payload(
        self, kind: str, event: Event, workflow_id: str | None, trigger: str | None
    ) -> dict[str, Any]:
        d = event.data
        return {
            "text": notification_text(kind, event, workflow_id),
            "kind": kind,
            "event": event.type,
            "run_id": event.correlation_id,
            "workflow_id": workflow_id,
            "workflow_name": d.get("name"),
            "state": d.get("state"),
            "error": d.get("error"),
            "duration": d.get("duration"),
            "step": d.get("step"),
            "trigger": trigger,
            "ts": event.ts,
            "seq": event.seq,
        }

    # ------------------------------------------------------------------ delivery

    async def _deliver(
        self, index: int, rule: NotifyRule, payload: dict[str, Any], event: Event
    ) -> None:
        name = self.rule_name(index)
        target = "webhook" if rule.webhook is not None else "command"
        masker = Masker(self._environ.get(n, "") for n in rule.env_names())
        attempt = 0
        while True:
            attempt += 1
            try:
                detail = await self._send_once(rule, payload, masker)
            except _Failure as exc:
                error = masker.mask(str(exc))
                if exc.retryable and attempt < rule.retry.max_attempts:
                    delay = backoff_delay(rule.retry, attempt, self._rng)
                    self._emit(
                        "notify:retrying",
                        {
                            "rule": name,
                            "target": target,
                            "attempt": attempt,
                            "error": error,
                            "delay": round(delay, 3),
                        },
                        event,
                    )
                    await self._sleep(delay)
                    continue
                self.failed += 1
                self.last_failure = f"{name}: {error} (after {attempt} attempt(s))"
                self._emit(
                    "notify:failed",
                    {
                        "rule": name,
                        "target": target,
                        "kind": payload["kind"],
                        "attempts": attempt,
                        "error": error,
                    },
                    event,
                    priority=Priority.HIGH,
                )
                self._health_changed()
                return
            self.sent += 1
            recovered = self.last_failure is not None
            self.last_failure = None
            self._emit(
                "notify:sent",
                {
                    "rule": name,
                    "target": target,
                    "kind": payload["kind"],
                    "attempts": attempt,
                    "detail": masker.mask(detail),
                },
                event,
            )
            if recovered:
                self._health_changed()
            return

    async def _send_once(self, rule: NotifyRule, payload: dict[str, Any], masker: Masker) -> str:
        if rule.webhook is not None:
            return await self._post(rule.webhook, payload)
        assert rule.command is not None
        return await self._run_command(rule, payload, masker)

    def _expand(self, text: str) -> str:
        return _ENV_REF.sub(lambda m: self._environ.get(m.group(1), ""), text)

    async def _post(self, hook: WebhookTarget, payload: dict[str, Any]) -> str:
        import httpx  # loads only when a webhook is sent

        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        headers = {k: self._expand(v) for k, v in hook.headers.items()}
        try:
            response = await self._client.post(
                self._expand(hook.url), json=payload, headers=headers, timeout=hook.timeout
            )
        except httpx.HTTPError as exc:
            # httpx messages can quote the URL; the Masker removes any secret in it.
            raise _Failure(f"{type(exc).__name__}: {exc}") from None
        status = response.status_code
        if 200 <= status < 300:
            return f"HTTP {status}"
        retryable = status >= 500 or status in (408, 425, 429)
        raise _Failure(f"HTTP {status} {response.reason_phrase}", retryable=retryable)

    async def _run_command(self, rule: NotifyRule, payload: dict[str, Any], masker: Masker) -> str:
        argv = [self._expand(a) for a in rule.command or []]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise _Failure(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from None
        try:
            async with asyncio.timeout(rule.timeout):
                _out, err = await proc.communicate(json.dumps(payload).encode())
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise _Failure(f"{argv[0]} did not finish within {rule.timeout:g}s") from None
        if proc.returncode != 0:
            last = err.decode("utf-8", "replace").strip().splitlines()[-1:] if err else []
            tail = f": {last[0][:300]}" if last else ""
            raise _Failure(f"{argv[0]} exited with code {proc.returncode}{tail}")
        return "exit code 0"

    # ------------------------------------------------------------------ plumbing

    def _emit(
        self,
        type_: str,
        data: dict[str, Any],
        cause: Event,
        *,
        priority: Priority = Priority.NORMAL,
    ) -> None:
        data = {**data, "event": cause.type}
        self._events.emit(
            type_, SOURCE, data, priority=priority, correlation_id=cause.correlation_id
        )

    def _health_changed(self) -> None:
        if self._on_health is not None:
            self._on_health()

    async def close(self, drain: float = DRAIN_TIMEOUT) -> None:
        """Let deliveries in flight finish (up to `drain` seconds), then cancel the rest."""
        self._closed = True
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=drain)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
