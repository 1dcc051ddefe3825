"""Rate limits on calls through an agent or to a provider: token buckets, concurrency caps and
the `Retry-After` a provider asks for.

Why a small bucket of our own rather than `aiolimiter`: a step held by a limit must say until
when (`step:rate_limited` carries `until`, the dashboard shows `rate limited until 12:04:31`),
and a token limit is charged an estimate before the call and corrected by the real usage after
it. A *reservation* bucket gives both: `reserve(n)` debits the bucket at once (it may go
negative) and returns how long the caller must wait until that debt is paid back, so the wait is
known up front, callers are served in arrival order, and a correction is one more debit or
refund. aiolimiter's leaky bucket only offers `acquire`, which waits without saying for how long.

The maths: a bucket holds at most `capacity` tokens and refills at `rate` tokens per second.
After `reserve(n)` the balance is `b = min(capacity, b_prev + elapsed * rate) - n`; the wait is
`max(0, -b / rate)`. So 20 requests at 1,200 per minute (rate 20/s) with capacity 1 start at
0, 0.05, ..., 0.95 s.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from voltui.engine.models import RateLimitSpec

DEFAULT_PROVIDER = "default"
"""Name of the endpoint given by `llm_base_url` (the provider an agent uses unless it names
another)."""

OnWait = Callable[[float | None, str], None]
"""Told `(until, reason)` when a call has to wait: `until` is epoch seconds, or None when the
wait has no known end (a `max_concurrent` slot)."""


class TokenBucket:
    """A reservation token bucket; see the module docstring for the maths."""

    def __init__(
        self, rate: float, capacity: float, *, timer: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError(
                f"a token bucket needs a positive rate and capacity: {rate}, {capacity}"
            )
        self.rate = rate
        self.capacity = capacity
        self._timer = timer
        self._balance = capacity
        self._stamp = timer()

    def _refill(self) -> None:
        now = self._timer()
        self._balance = min(self.capacity, self._balance + (now - self._stamp) * self.rate)
        self._stamp = now

    @property
    def balance(self) -> float:
        """Tokens available now (negative while reservations are outstanding)."""
        self._refill()
        return self._balance

    def reserve(self, amount: float) -> float:
        """Take `amount` tokens now; return the seconds to wait before using them."""
        self._refill()
        self._balance -= amount
        return 0.0 if self._balance >= 0 else -self._balance / self.rate

    def give_back(self, amount: float) -> None:
        """Return tokens that were reserved but not used (a cancelled call, an overestimate)."""
        self._refill()
        self._balance = min(self.capacity, self._balance + amount)


@dataclass
class _Scope:
    """The limits of one agent or one provider."""

    label: str
    """`agent gpt-1` or `provider openai`, for messages."""
    requests: TokenBucket | None = None
    tokens: TokenBucket | None = None
    slots: asyncio.Semaphore | None = None
    max_concurrent: int | None = None
    blocked_until: float = 0.0
    """Timer value before which no call may start (a provider's `Retry-After`)."""

    @classmethod
    def build(cls, label: str, spec: RateLimitSpec | None, timer: Callable[[], float]) -> _Scope:
        scope = cls(label)
        if spec is None:
            return scope
        if spec.requests_per_minute:
            rate = spec.requests_per_minute / 60.0
            scope.requests = TokenBucket(rate, spec.burst or max(1.0, rate), timer=timer)
        if spec.tokens_per_minute:
            rate = spec.tokens_per_minute / 60.0
            scope.tokens = TokenBucket(rate, spec.token_burst or max(1.0, rate), timer=timer)
        if spec.max_concurrent:
            scope.slots = asyncio.Semaphore(spec.max_concurrent)
            scope.max_concurrent = spec.max_concurrent
        return scope


@dataclass
class Permit:
    """Leave to make one call; `settle` corrects the token estimate with the real count."""

    estimate: int = 0
    """Tokens charged to the token buckets so far."""
    _requests: list[TokenBucket] = field(default_factory=list)
    _tokens: list[TokenBucket] = field(default_factory=list)

    def settle(self, used_tokens: int) -> None:
        """Charge the difference between the tokens used and the estimate charged before:
        an underestimate becomes a debt later calls wait for, an overestimate is refunded."""
        difference = used_tokens - self.estimate
        for bucket in self._tokens:
            if difference > 0:
                bucket.reserve(difference)
            elif difference < 0:
                bucket.give_back(-difference)
        self.estimate = used_tokens

    def _refund(self) -> None:
        for bucket in self._requests:
            bucket.give_back(1)
        for bucket in self._tokens:
            bucket.give_back(self.estimate)


class RateLimits:
    """Every configured limit of one engine, by agent id and by provider name.

    Scopes without configured limits still exist (created on first use) so that a provider's
    `Retry-After` holds back every later call to it.
    """

    def __init__(
        self,
        agents: Mapping[str, RateLimitSpec | None] | None = None,
        providers: Mapping[str, RateLimitSpec | None] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._timer = timer
        self._sleep = sleep
        self._agent_specs = dict(agents or {})
        self._provider_specs = dict(providers or {})
        self._scopes: dict[tuple[str, str], _Scope] = {}

    def configured(self, agent_id: str | None, provider: str | None) -> bool:
        """Whether any limit applies to this agent or provider (besides a Retry-After)."""
        return self._agent_specs.get(agent_id or "") is not None or (
            self._provider_specs.get(provider or DEFAULT_PROVIDER) is not None
        )

    def _scope(self, kind: str, name: str) -> _Scope:
        key = (kind, name)
        scope = self._scopes.get(key)
        if scope is None:
            specs = self._agent_specs if kind == "agent" else self._provider_specs
            scope = self._scopes[key] = _Scope.build(f"{kind} {name}", specs.get(name), self._timer)
        return scope

    def _scopes_for(self, agent_id: str | None, provider: str | None) -> list[_Scope]:
        scopes = [self._scope("agent", agent_id)] if agent_id else []
        scopes.append(self._scope("provider", provider or DEFAULT_PROVIDER))
        return scopes

    def block(self, provider: str | None, seconds: float) -> float:
        """No call to `provider` starts for `seconds` (its Retry-After); returns the epoch end."""
        scope = self._scope("provider", provider or DEFAULT_PROVIDER)
        scope.blocked_until = max(scope.blocked_until, self._timer() + max(0.0, seconds))
        return self._clock() + max(0.0, scope.blocked_until - self._timer())

    @asynccontextmanager
    async def hold(
        self,
        *,
        agent_id: str | None,
        provider: str | None,
        tokens: int = 0,
        on_wait: OnWait | None = None,
    ) -> AsyncIterator[Permit]:
        """Wait until every limit of the agent and the provider allows one call of about
        `tokens` tokens; hold its concurrency slots until the block ends."""
        scopes = self._scopes_for(agent_id, provider)
        taken: list[asyncio.Semaphore] = []
        permit = Permit(estimate=max(0, tokens))
        granted = False
        try:
            for scope in scopes:
                if scope.slots is None:
                    continue
                if scope.slots.locked() and on_wait is not None:
                    on_wait(None, f"max_concurrent {scope.max_concurrent} of {scope.label}")
                await scope.slots.acquire()
                taken.append(scope.slots)
            # Reserve in every bucket at once: the call may start when the slowest allows it.
            ready_at, ready_reason = self._timer(), ""
            for scope in scopes:
                for bucket, amount, into, what in (
                    (scope.requests, 1, permit._requests, "requests_per_minute"),
                    (scope.tokens, permit.estimate, permit._tokens, "tokens_per_minute"),
                ):
                    if bucket is None or amount <= 0:
                        continue
                    into.append(bucket)
                    at = self._timer() + bucket.reserve(amount)
                    if at > ready_at:
                        ready_at, ready_reason = at, f"{what} of {scope.label}"
            while True:
                # Re-checked after every sleep: a Retry-After that arrived meanwhile (another
                # call got a 429) pushes the start further out.
                target, reason = ready_at, ready_reason
                for scope in scopes:
                    if scope.blocked_until > target:
                        target, reason = scope.blocked_until, f"Retry-After of {scope.label}"
                wait = target - self._timer()
                if wait <= 0:
                    break
                if on_wait is not None:
                    on_wait(self._clock() + wait, reason)
                await self._sleep(wait)
            granted = True
            yield permit
        finally:
            if not granted:
                permit._refund()
            for slots in taken:
                slots.release()


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
