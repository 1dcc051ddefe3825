"""CacheManager: eviction per strategy, expiry on a fake clock, namespaces, stats, memoize."""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from voltui.engine.cache import CacheConfig, CacheManager, stable_key
from voltui.engine.errors import UserError

STRATEGIES = ["lru", "lfu", "fifo", "ttl"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def manager(clock: FakeClock, **config: Any) -> CacheManager:
    return CacheManager(CacheConfig(**config), clock=clock)


# --------------------------------------------------------------------------- config


def test_config_accepts_human_durations_and_rejects_mistakes() -> None:
    assert CacheConfig(ttl="5m").ttl == 300.0
    assert CacheConfig(ttl=None).ttl is None
    with pytest.raises(ValidationError, match="ttl must be more than 0"):
        CacheConfig(ttl=0)
    with pytest.raises(ValidationError):
        CacheConfig(strategy="random")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        CacheConfig(max_item=5)  # type: ignore[call-arg]  # extra="forbid" catches typos


# --------------------------------------------------------------------------- eviction


@pytest.mark.parametrize(
    ("strategy", "evicted"),
    [("fifo", "a"), ("lru", "b"), ("lfu", "c"), ("ttl", "b")],
)
def test_each_strategy_evicts_its_own_victim(clock: FakeClock, strategy: str, evicted: str) -> None:
    # Insertion order a, b, c. Reads: b twice, a twice, c once, so recency (oldest first) is
    # b, a, c and use counts are a=2, b=2, c=1. FIFO drops a, LRU (and TLRU) b, LFU c.
    cache = manager(clock, strategy=strategy, max_items=3, ttl=None)
    for key in "abc":
        cache.set(key, key.upper())
    for key in "bbaac":
        assert cache.get(key) == key.upper()
    cache.set("d", "D")
    remaining = {k for k in "abcd" if cache.contains(k)}
    assert remaining == set("abcd") - {evicted}
    stats = cache.namespace_stats("default")
    assert (stats.evictions, stats.size, stats.max_size) == (1, 3, 3)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_contains_does_not_count_as_a_use(clock: FakeClock, strategy: str) -> None:
    cache = manager(clock, strategy=strategy, max_items=2, ttl=None)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.contains("a")  # must not refresh a for LRU nor bump its LFU count
    assert not cache.contains("zzz")
    cache.set("c", 3)
    assert not cache.contains("a")
    assert cache.contains("b") and cache.contains("c")
    stats = cache.namespace_stats("default")
    assert (stats.hits, stats.misses) == (0, 0)


# --------------------------------------------------------------------------- expiry


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ttl_expiry_with_fake_clock(clock: FakeClock, strategy: str) -> None:
    cache = manager(clock, strategy=strategy, ttl="10s")
    cache.set("a", 1)
    clock.advance(9.9)
    assert cache.get("a") == 1
    clock.advance(0.1)
    assert cache.get("a", default="gone") == "gone"
    assert not cache.contains("a")
    stats = cache.namespace_stats("default")
    assert (stats.hits, stats.misses, stats.evictions, stats.size) == (1, 1, 1, 0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_per_entry_ttl_overrides_namespace_ttl(clock: FakeClock, strategy: str) -> None:
    cache = manager(clock, strategy=strategy, ttl=100)
    cache.set("short", 1, ttl=5)
    cache.set("default", 2)
    cache.set("forever", 3, ttl=math.inf)
    clock.advance(6)
    assert not cache.contains("short")
    assert cache.contains("default") and cache.contains("forever")
    clock.advance(100)
    assert not cache.contains("default")
    assert cache.get("forever") == 3
    assert cache.namespace_stats("default").evictions == 2


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_zero_ttl_stores_nothing_and_drops_the_old_value(clock: FakeClock, strategy: str) -> None:
    cache = manager(clock, strategy=strategy)
    cache.set("a", "old")
    cache.set("a", "new", ttl=0)
    assert not cache.contains("a")


@pytest.mark.parametrize("strategy", ["lru", "lfu", "fifo"])
def test_full_cache_drops_expired_entries_before_live_ones(clock: FakeClock, strategy: str) -> None:
    cache = manager(clock, strategy=strategy, max_items=3, ttl=None)
    cache.set("live1", 1)
    cache.set("dead", 2, ttl=1)
    cache.set("live2", 3)
    clock.advance(2)
    cache.set("new", 4)  # full: the expired entry makes room, not a live one
    assert all(cache.contains(k) for k in ("live1", "live2", "new"))
    assert cache.namespace_stats("default").evictions == 1


def test_no_ttl_means_no_expiry(clock: FakeClock) -> None:
    cache = manager(clock, ttl=None)
    cache.set("a", 1)
    clock.advance(10**9)
    assert cache.get("a") == 1


# --------------------------------------------------------------------------- bytes


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_max_bytes_limits_by_size_not_count(clock: FakeClock, strategy: str) -> None:
    cache = manager(clock, strategy=strategy, max_bytes=3500, max_items=1, ttl=None)
    for i in range(3):
        cache.set(f"k{i}", "x" * 1000)
    stats = cache.namespace_stats("default")
    assert stats.size == 3  # max_items is ignored when max_bytes is set
    assert 3000 <= stats.bytes <= 3500
    assert (stats.max_size, stats.max_bytes) == (0, 3500)
    cache.set("k3", "y" * 1000)
    stats = cache.namespace_stats("default")
    assert (stats.size, stats.evictions) == (3, 1)
    assert stats.bytes <= 3500
    assert cache.contains("k3")


def test_value_larger_than_budget_is_skipped_and_old_value_dropped(clock: FakeClock) -> None:
    cache = manager(clock, max_bytes=500)
    cache.set("k", "small")
    cache.set("k", "x" * 1000)  # must not raise: a cache never fails its caller
    assert not cache.contains("k")
    cache.set("other", "fine")
    assert cache.get("other") == "fine"


def test_bytes_reported_without_a_budget(clock: FakeClock) -> None:
    cache = manager(clock)
    cache.set("a", list(range(1000)))
    cache.set("b", threading.Lock())  # unpicklable: falls back to sys.getsizeof
    stats = cache.namespace_stats("default")
    assert stats.bytes > 1000
    assert stats.max_size == 10_000


# --------------------------------------------------------------------------- namespaces


def test_namespaces_are_isolated(clock: FakeClock) -> None:
    cache = manager(clock)
    cache.set("k", "default-value")
    cache.set("k", "steps-value", namespace="steps")
    assert cache.get("k") == "default-value"
    assert cache.get("k", namespace="steps") == "steps-value"
    assert cache.delete("k", namespace="steps")
    assert not cache.delete("k", namespace="steps")
    assert cache.get("k") == "default-value"
    cache.set("j", 1, namespace="other")
    cache.clear("default")
    assert not cache.contains("k")
    assert cache.contains("j", namespace="other")
    cache.clear()
    assert not cache.contains("j", namespace="other")
    assert [s.namespace for s in cache.stats()] == ["default", "other", "steps"]


def test_configure_namespace_overrides_only_that_namespace(clock: FakeClock) -> None:
    cache = manager(clock, strategy="lru", ttl=100, max_items=10)
    cache.configure_namespace("fast", strategy="fifo", ttl="1s", max_items=2)
    cache.set("a", 1, namespace="fast")
    cache.set("a", 1)
    clock.advance(2)
    assert not cache.contains("a", namespace="fast")
    assert cache.contains("a")
    fast = cache.namespace_stats("fast")
    assert (fast.strategy, fast.max_size) == ("fifo", 2)
    assert cache.namespace_stats("default").strategy == "lru"
    with pytest.raises(ValidationError):
        cache.configure_namespace("bad", strategy="mru")  # type: ignore[arg-type]


def test_reconfiguring_a_used_namespace_keeps_entries_and_counts(clock: FakeClock) -> None:
    cache = manager(clock, ttl=None)
    for i in range(5):
        cache.set(f"k{i}", i, namespace="ns")
    cache.get("k4", namespace="ns")
    cache.configure_namespace("ns", strategy="lfu", max_items=3)
    stats = cache.namespace_stats("ns")
    assert (stats.strategy, stats.size, stats.hits, stats.evictions) == ("lfu", 3, 1, 2)
    assert cache.get("k4", namespace="ns") == 4  # most recently used entries survive


def test_invalidate_pattern_in_one_namespace(clock: FakeClock) -> None:
    cache = manager(clock)
    for key in ("run1:build", "run1:test", "run2:build"):
        cache.set(key, 1, namespace="steps")
    cache.set("run1:build", 1, namespace="other")
    assert cache.invalidate_pattern(r"^run1:", namespace="steps") == 2
    assert cache.contains("run2:build", namespace="steps")
    assert not cache.contains("run1:test", namespace="steps")
    assert cache.contains("run1:build", namespace="other")


def test_invalidate_pattern_across_namespaces(clock: FakeClock) -> None:
    cache = manager(clock)
    cache.set("user:1", 1, namespace="a")
    cache.set("user:2", 2, namespace="b")
    cache.set("group:1", 3, namespace="b")
    cache.set("expired-user:3", 4, namespace="b", ttl=1)
    clock.advance(2)
    assert cache.invalidate_pattern(r"user:\d") == 2  # search, not match; expired not counted
    assert cache.contains("group:1", namespace="b")
    assert not cache.contains("user:1", namespace="a")


def test_invalidate_pattern_with_bad_regex_is_a_user_error(clock: FakeClock) -> None:
    with pytest.raises(UserError, match="not a regular expression"):
        manager(clock).invalidate_pattern("run[")


# --------------------------------------------------------------------------- stats


def test_stats_hit_rate_and_evictions(clock: FakeClock) -> None:
    cache = manager(clock, max_items=2, ttl=None)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get("a") == 1
    assert cache.get("a") == 1
    assert cache.get("a") == 1
    assert cache.get("missing") is None
    cache.set("c", 3)  # evicts b
    stats = cache.namespace_stats("default")
    assert (stats.hits, stats.misses, stats.evictions, stats.size) == (3, 1, 1, 2)
    assert stats.hit_rate == pytest.approx(0.75)
    assert stats.model_dump()["hit_rate"] == pytest.approx(0.75)
    cache.clear()
    assert cache.namespace_stats("default").hits == 3  # clearing entries keeps the history


def test_cached_none_is_a_hit(clock: FakeClock) -> None:
    cache = manager(clock)
    cache.set("a", None)
    assert cache.get("a", default="x") is None
    assert cache.contains("a")
    assert cache.namespace_stats("default").hits == 1


# --------------------------------------------------------------------------- memoize


def test_memoize_sync_bare_and_with_options(clock: FakeClock) -> None:
    cache = manager(clock)
    calls: list[tuple[Any, ...]] = []

    @cache.memoize
    def add(a: int, b: int = 0) -> int:
        calls.append((a, b))
        return a + b

    assert add(1, b=2) == 3
    assert add(1, b=2) == 3
    assert add(2, b=1) == 3
    assert calls == [(1, 2), (2, 1)]
    assert add.__name__ == "add"

    @cache.memoize(namespace="custom", ttl=5, key=lambda user: f"user:{user}")
    def profile(user: str) -> dict[str, str]:
        calls.append((user,))
        return {"name": user}

    assert profile("ann") == {"name": "ann"}
    assert cache.get("user:ann", namespace="custom") == {"name": "ann"}
    clock.advance(6)
    assert profile("ann") == {"name": "ann"}
    assert calls.count(("ann",)) == 2
    memo = cache.namespace_stats("memo")
    assert (memo.hits, memo.misses) == (1, 2)


def test_memoize_default_key_ignores_kwarg_order_and_names_the_function(
    clock: FakeClock,
) -> None:
    cache = manager(clock)
    calls = 0

    @cache.memoize
    def f(**kwargs: Any) -> int:
        nonlocal calls
        calls += 1
        return len(kwargs)

    f(a=1, b={"x": 1, "y": 2})
    f(b={"y": 2, "x": 1}, a=1)
    assert calls == 1
    f(a=1, b={"x": 1, "y": 3})
    assert calls == 2
    # The key starts with module.qualname, so one function's results can be dropped by name.
    assert cache.invalidate_pattern(r"\.test_memoize_default_key_\w+\.<locals>\.f:", "memo") == 2


def test_memoize_sync_exception_is_not_cached(clock: FakeClock) -> None:
    cache = manager(clock)
    attempts = 0

    @cache.memoize
    def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("boom")
        return "ok"

    with pytest.raises(RuntimeError, match="boom"):
        flaky()
    assert flaky() == "ok"
    assert flaky() == "ok"
    assert attempts == 2


def test_memoize_sync_computes_once_across_threads(clock: FakeClock) -> None:
    cache = manager(clock)
    calls = 0
    entered = threading.Event()
    release = threading.Event()

    @cache.memoize
    def slow(x: int) -> int:
        nonlocal calls
        calls += 1
        entered.set()
        assert release.wait(10)
        return x * 2

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(slow(21))) for _ in range(8)]
    for t in threads:
        t.start()
    assert entered.wait(10)
    # Give the other threads a moment to queue on the key lock; the assertion below holds
    # however long this takes, a busy machine only makes the overlap smaller.
    threading.Event().wait(0.05)
    release.set()
    for t in threads:
        t.join(10)
    assert results == [42] * 8
    assert calls == 1
    assert cache._key_locks == {}  # per-key locks are dropped once unused


async def test_memoize_async_basic(clock: FakeClock) -> None:
    cache = manager(clock)
    calls = 0

    @cache.memoize(namespace="llm")
    async def ask(prompt: str) -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return prompt.upper()

    assert await ask("hi") == "HI"
    assert await ask("hi") == "HI"
    assert await ask("yo") == "YO"
    assert calls == 2
    assert asyncio.iscoroutinefunction(ask)
    stats = cache.namespace_stats("llm")
    assert (stats.hits, stats.misses, stats.size) == (1, 2, 2)


async def test_memoize_async_single_flight(clock: FakeClock) -> None:
    cache = manager(clock)
    calls = 0
    started = asyncio.Event()
    gate = asyncio.Event()

    @cache.memoize
    async def compute(x: int) -> dict[str, int]:
        nonlocal calls
        calls += 1
        started.set()
        await gate.wait()
        return {"x": x}

    tasks = [asyncio.create_task(compute(7)) for _ in range(10)]
    await started.wait()  # the computation task runs after every caller has looked it up
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert all(r is results[0] for r in results)
    assert await compute(7) == {"x": 7}
    assert calls == 1
    stats = cache.namespace_stats("memo")
    assert (stats.hits, stats.misses) == (10, 1)
    assert cache._flights == {}


async def test_memoize_async_exception_reaches_all_waiters_and_is_not_cached(
    clock: FakeClock,
) -> None:
    cache = manager(clock)
    calls = 0
    started = asyncio.Event()
    gate = asyncio.Event()

    @cache.memoize
    async def fragile() -> str:
        nonlocal calls
        calls += 1
        started.set()
        await gate.wait()
        if calls == 1:
            raise ValueError("first try fails")
        return "ok"

    tasks = [asyncio.create_task(fragile()) for _ in range(5)]
    await started.wait()
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert calls == 1
    assert all(isinstance(r, ValueError) for r in results)
    assert cache.namespace_stats("memo").size == 0
    assert await fragile() == "ok"
    assert calls == 2


async def test_memoize_async_cancelling_one_waiter_keeps_the_computation(
    clock: FakeClock,
) -> None:
    cache = manager(clock)
    started = asyncio.Event()
    gate = asyncio.Event()
    cancelled = False

    @cache.memoize
    async def work() -> int:
        nonlocal cancelled
        started.set()
        try:
            await gate.wait()
        except asyncio.CancelledError:
            cancelled = True
            raise
        return 1

    first = asyncio.create_task(work())
    second = asyncio.create_task(work())
    await started.wait()
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    assert await second == 1
    assert not cancelled

    # The last waiter leaving cancels the computation instead of leaking it.
    gate.clear()
    started.clear()
    cache.clear()
    lone = asyncio.create_task(work())
    await started.wait()
    lone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await lone
    for _ in range(5):
        await asyncio.sleep(0)
    assert cancelled
    assert cache._flights == {}


# --------------------------------------------------------------------------- stable_key


class _Spec(BaseModel):
    name: str
    params: dict[str, Any]


def test_stable_key_is_stable_across_dict_ordering() -> None:
    one = stable_key("step", {"a": 1, "b": {"x": [1, 2], "y": None}})
    two = stable_key("step", {"b": {"y": None, "x": [1, 2]}, "a": 1})
    assert one == two
    assert len(one) == 64 and int(one, 16) >= 0
    assert stable_key("step", {"a": 2, "b": {"x": [1, 2], "y": None}}) != one
    assert stable_key("step", {"a": 1}) != stable_key({"a": 1}, "step")
    assert stable_key(1) != stable_key("1")


def test_stable_key_handles_models_sets_and_other_objects() -> None:
    a = _Spec(name="s", params={"p": 1, "q": 2})
    b = _Spec(name="s", params={"q": 2, "p": 1})
    assert stable_key(a) == stable_key(b)
    assert stable_key({3, 1, 2}) == stable_key({2, 3, 1})
    assert stable_key(object) == stable_key(object)  # falls back to str
    # The format is documented (compact, sorted JSON) so keys can be reproduced elsewhere.
    expected = hashlib.sha256(b'["a",{"k":[1,"x"]}]').hexdigest()
    assert stable_key("a", {"k": [1, "x"]}) == expected
