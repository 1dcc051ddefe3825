"""Token-bucket maths and the limits registry, on a fake clock (no real waiting)."""

from __future__ import annotations

import asyncio
import email.utils

import pytest

from voltui.engine.models import RateLimitSpec
from voltui.engine.ratelimit import RateLimits, TokenBucket, parse_retry_after


class FakeTime:
    """A timer, an epoch clock 1,000,000 s ahead of it, and a sleep that advances both."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def timer(self) -> float:
        return self.now

    def clock(self) -> float:
        return self.now + 1_000_000

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def test_bucket_spreads_a_burst_at_the_rate() -> None:
    t = FakeTime()
    bucket = TokenBucket(rate=20.0, capacity=1.0, timer=t.timer)  # 1,200 per minute, burst 1
    waits = [bucket.reserve(1) for _ in range(20)]
    assert waits == pytest.approx([i * 0.05 for i in range(20)])
    assert waits[-1] == pytest.approx(0.95)


def test_bucket_refills_up_to_capacity_only() -> None:
    t = FakeTime()
    bucket = TokenBucket(rate=2.0, capacity=4.0, timer=t.timer)
    assert [bucket.reserve(1) for _ in range(4)] == [0, 0, 0, 0]  # the burst
    assert bucket.reserve(1) == pytest.approx(0.5)
    t.now += 100  # a long idle time refills to capacity, not beyond
    assert bucket.balance == pytest.approx(4.0)
    assert bucket.reserve(6) == pytest.approx(1.0)  # 2 tokens short at 2/s
    bucket.give_back(6)
    assert bucket.balance == pytest.approx(4.0)


def test_a_reservation_larger_than_the_bucket_waits_for_its_debt() -> None:
    t = FakeTime()
    bucket = TokenBucket(rate=100.0, capacity=100.0, timer=t.timer)
    assert bucket.reserve(350) == pytest.approx(2.5)
    t.now += 2.5
    assert bucket.balance == pytest.approx(0.0)


def limits(t: FakeTime, **kw: RateLimitSpec) -> RateLimits:
    agents = {k.removeprefix("agent_"): v for k, v in kw.items() if k.startswith("agent_")}
    providers = {k.removeprefix("p_"): v for k, v in kw.items() if k.startswith("p_")}
    return RateLimits(agents, providers, clock=t.clock, timer=t.timer, sleep=t.sleep)


async def test_hold_waits_for_the_slowest_bucket_and_reports_until() -> None:
    t = FakeTime()
    reg = limits(
        t,
        agent_a=RateLimitSpec(requests_per_minute=60, burst=1),  # 1/s
        p_default=RateLimitSpec(tokens_per_minute=6000, token_burst=100),  # 100 tokens/s
    )
    waits: list[tuple[float | None, str]] = []
    for _ in range(2):
        async with reg.hold(
            agent_id="a", provider=None, tokens=300, on_wait=lambda u, r: waits.append((u, r))
        ) as permit:
            permit.settle(300)
    # first call: 300 tokens against a 100-token bucket = 2 s of debt; second: 3 s more
    assert t.slept == pytest.approx([2.0, 3.0])
    assert waits[0] == (pytest.approx(1_000_102.0), "tokens_per_minute of provider default")
    assert waits[1][1] == "tokens_per_minute of provider default"


async def test_settle_corrects_the_estimate() -> None:
    t = FakeTime()
    reg = limits(t, p_default=RateLimitSpec(tokens_per_minute=60, token_burst=10))  # 1 token/s
    async with reg.hold(agent_id=None, provider=None, tokens=10) as permit:
        permit.settle(4)  # used 4 of the 10 charged: 6 come back
    async with reg.hold(agent_id=None, provider=None, tokens=6) as permit:
        permit.settle(16)  # used 10 more than charged: a debt of 10 s
    assert t.slept == []
    async with reg.hold(agent_id=None, provider=None, tokens=1):
        pass
    assert t.slept == pytest.approx([11.0])


async def test_retry_after_blocks_the_provider_not_others() -> None:
    t = FakeTime()
    reg = limits(t)
    until = reg.block("openai", 1.5)
    assert until == pytest.approx(t.clock() + 1.5)
    seen: list[str] = []
    async with reg.hold(agent_id="x", provider="local", on_wait=lambda u, r: seen.append(r)):
        pass
    assert t.slept == []
    async with reg.hold(agent_id="x", provider="openai", on_wait=lambda u, r: seen.append(r)):
        pass
    assert t.slept == pytest.approx([1.5])
    assert seen == ["Retry-After of provider openai"]


async def test_max_concurrent_and_refund_on_cancel() -> None:
    t = FakeTime()
    reg = limits(t, agent_a=RateLimitSpec(max_concurrent=1, requests_per_minute=60, burst=5))
    notes: list[tuple[float | None, str]] = []
    inside = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with reg.hold(agent_id="a", provider=None):
            inside.set()
            await release.wait()

    async def second() -> None:
        async with reg.hold(agent_id="a", provider=None, on_wait=lambda u, r: notes.append((u, r))):
            pass

    one = asyncio.create_task(first())
    await inside.wait()
    two = asyncio.create_task(second())
    await asyncio.sleep(0)
    assert notes == [(None, "max_concurrent 1 of agent a")]
    two.cancel()  # cancelled while waiting for the slot: it took nothing
    with pytest.raises(asyncio.CancelledError):
        await two
    release.set()
    await one
    scope = reg._scope("agent", "a")
    assert scope.requests is not None and scope.requests.balance == pytest.approx(4.0)
    assert scope.slots is not None and not scope.slots.locked()


def test_parse_retry_after() -> None:
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(date, now=1_000_000) == pytest.approx(30.0)
    assert parse_retry_after(date, now=2_000_000) == 0.0
