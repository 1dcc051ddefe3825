"""In-memory caches for step results and memoized functions, grouped in namespaces.

Eviction is cachetools' job: each namespace holds one cachetools cache (LRU, LFU, FIFO or TLRU)
subclassed only to *count* what it throws away, so the statistics the dashboard shows are the
cache's own decisions rather than guesses made from the outside.

Every stored value is wrapped in an `_Entry` that carries its expiry time and its approximate
size, so a per-entry TTL and a byte budget work the same way for every strategy:

- `ttl` uses `cachetools.TLRUCache`: expired entries are removed eagerly (a heap, O(log n)) on
  every write; when full, the least recently used live entry goes. Pick it when most entries are
  expected to expire rather than be pushed out.
- `lru`, `lfu` and `fifo` use the matching cachetools class, which has no notion of time. Expiry
  is checked when a key is read, and expired entries are swept before a live entry is evicted
  for room and whenever statistics are taken, so a full cache never pushes out live data while
  dead data sits in it.

Sizes in bytes are the length of the value's pickle (highest protocol) plus the UTF-8 length of
its key; values that cannot be pickled fall back to `sys.getsizeof`, which is shallow and so
under-counts containers. Sizes are measured once, when a value is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import json
import logging
import math
import pickle
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast, overload

import cachetools
from pydantic import BaseModel, ConfigDict, Field, field_validator

from voltui.engine.durations import parse_duration
from voltui.engine.errors import UserError
from voltui.engine.models import CacheStats, Duration

__all__ = ["CacheConfig", "CacheManager", "CacheStrategy", "stable_key"]

log = logging.getLogger(__name__)

CacheStrategy = Literal["lru", "lfu", "fifo", "ttl"]
F = TypeVar("F", bound=Callable[..., Any])

_KEEP: Any = ...
"""Sentinel for `configure_namespace(ttl=...)`: None already means "never expire"."""


# --------------------------------------------------------------------------- keys


def _json_default(obj: Any) -> Any:
    """Make the usual non-JSON values canonical, so equal inputs give equal keys.

    Models are dumped (their `str` does not sort nested dicts) and sets are sorted (their
    iteration order depends on insertion history); anything else falls back to `str`.
    """
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, set | frozenset):
        return sorted((_canonical_json(item) for item in obj), key=str)
    return str(obj)


def _canonical_json(obj: Any) -> str:
    try:
        return json.dumps(
            obj, sort_keys=True, default=_json_default, separators=(",", ":"), ensure_ascii=False
        )
    except (TypeError, ValueError):
        # Mixed-type dict keys cannot be sorted and circular structures cannot be encoded;
        # repr is still deterministic for a given value within this process.
        return repr(obj)


def stable_key(*parts: Any) -> str:
    """Sha256 hex of the canonical JSON of `parts`: the same inputs give the same key in any
    process and whatever the order of dict keys, which plain `hash()` does not promise."""
    return hashlib.sha256(_canonical_json(list(parts)).encode()).hexdigest()


def _default_memo_key(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """`module.qualname:<hash>`: the readable prefix lets `invalidate_pattern` pick a function."""
    digest = hashlib.sha256(_canonical_json([list(args), kwargs]).encode()).hexdigest()
    return f"{fn.__module__}.{fn.__qualname__}:{digest[:32]}"


def _approx_size(key: str, value: Any) -> int:
    try:
        size = len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # unpicklable values (locks, sockets, lambdas) still need a size
        size = sys.getsizeof(value)
    return size + len(key.encode())


# --------------------------------------------------------------------------- config


class CacheConfig(BaseModel):
    """Cache settings; the defaults apply to every namespace not configured on its own."""

    model_config = ConfigDict(extra="forbid")

    strategy: CacheStrategy = Field(
        "lru", description="what goes when the cache is full: lru, lfu, fifo, or ttl (see docs)"
    )
    ttl: Duration | None = Field(
        300.0, description="seconds (or e.g. 5m) an entry lives; null = no expiry"
    )
    max_items: int = Field(10_000, ge=1, description="capacity in entries")
    max_bytes: int | None = Field(
        None, ge=1, description="when set, capacity in approximate bytes instead of entries"
    )
    namespace: str = Field("default", min_length=1, description="namespace used when none given")

    @field_validator("ttl")
    @classmethod
    def _ttl_positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("ttl must be more than 0; use null for entries that never expire")
        return value


# --------------------------------------------------------------------------- cachetools subclasses


@dataclass(slots=True)
class _Entry:
    value: Any
    expires: float
    size: int


@dataclass(slots=True)
class _Counters:
    """Shared by a namespace and its cache, so they survive `configure_namespace` rebuilds."""

    hits: int = 0
    misses: int = 0
    evicted: int = 0  # pushed out for room
    expired: int = 0  # removed because their ttl ran out


def _entry_size(entry: _Entry) -> int:
    return entry.size


def _entry_expires(_key: str, entry: _Entry, _now: float) -> float:
    return entry.expires


_contains = cachetools.Cache.__contains__
_INF = math.inf


class _LazyExpiry:
    """Time awareness for the cachetools classes that have none (LRU, LFU, FIFO).

    Must precede the cachetools class in the bases. `_next_due` is a lower bound of the earliest
    expiry, so sweeping costs nothing until something can actually have expired.
    """

    _clock: Callable[[], float]
    _counters: _Counters
    _next_due: float

    def __init__(
        self,
        maxsize: int,
        *,
        clock: Callable[[], float],
        counters: _Counters,
        getsizeof: Callable[[_Entry], int] | None = None,
    ) -> None:
        super().__init__(maxsize, getsizeof)  # type: ignore[call-arg]
        self._clock = clock
        self._counters = counters
        self._next_due = math.inf

    def __setitem__(self, key: str, entry: _Entry) -> None:
        super().__setitem__(key, entry)  # type: ignore[misc]
        if entry.expires < self._next_due:
            self._next_due = entry.expires

    def popitem(self) -> tuple[str, _Entry]:
        expired = self.expire()
        if expired:
            return expired[0]
        item = super().popitem()  # type: ignore[misc]
        self._counters.evicted += 1
        return cast(tuple[str, _Entry], item)

    def expire(self, time: float | None = None) -> list[tuple[str, _Entry]]:
        now = self._clock() if time is None else time
        if now < self._next_due:
            return []
        expired: list[tuple[str, _Entry]] = []
        next_due = math.inf
        for key in list(cachetools.Cache.__iter__(cast(cachetools.Cache, self))):
            entry: _Entry = cachetools.Cache.__getitem__(cast(cachetools.Cache, self), key)
            if entry.expires <= now:
                expired.append((key, entry))
            else:
                next_due = min(next_due, entry.expires)
        for key, _ in expired:
            del self[key]  # type: ignore[attr-defined]
        self._next_due = next_due
        self._counters.expired += len(expired)
        return expired

    def peek(self, key: str) -> _Entry | None:
        """The live entry without counting a use (no reordering in LRU, no count in LFU)."""
        try:
            entry: _Entry = cachetools.Cache.__getitem__(cast(cachetools.Cache, self), key)
        except KeyError:
            return None
        return self._check(key, entry)

    def lookup(self, key: str) -> _Entry | None:
        """The live entry, counted as a use by the eviction policy.

        A miss is a membership test, not a KeyError raised through `__missing__` and caught:
        misses are common and exceptions are ten times the cost of the lookup itself.
        """
        if not _contains(self, key):
            return None
        entry: _Entry = self[key]  # type: ignore[index]
        if entry.expires == _INF:
            return entry
        return self._check(key, entry)

    def _check(self, key: str, entry: _Entry) -> _Entry | None:
        if entry.expires <= self._clock():
            del self[key]  # type: ignore[attr-defined]
            self._counters.expired += 1
            return None
        return entry


class _LRU(_LazyExpiry, cachetools.LRUCache):
    pass


class _LFU(_LazyExpiry, cachetools.LFUCache):
    pass


class _FIFO(_LazyExpiry, cachetools.FIFOCache):
    pass


class _TLRU(cachetools.TLRUCache):
    """TLRUCache whose time-to-use is each entry's own expiry, counting what it drops."""

    def __init__(
        self,
        maxsize: int,
        *,
        clock: Callable[[], float],
        counters: _Counters,
        getsizeof: Callable[[_Entry], int] | None = None,
    ) -> None:
        super().__init__(maxsize, ttu=_entry_expires, timer=clock, getsizeof=getsizeof)
        self._counters = counters

    def expire(self, time: float | None = None) -> list[tuple[str, _Entry]]:
        expired = super().expire(time)
        self._counters.expired += len(expired)
        return list(expired)

    def popitem(self) -> tuple[str, _Entry]:
        item = super().popitem()
        self._counters.evicted += 1
        return cast(tuple[str, _Entry], item)

    def peek(self, key: str) -> _Entry | None:
        with self.timer as now:  # one frozen time for the sweep and the read
            self.expire(now)
            try:
                return cast(_Entry, cachetools.Cache.__getitem__(self, key))
            except KeyError:
                return None

    def lookup(self, key: str) -> _Entry | None:
        with self.timer as now:
            self.expire(now)
            try:
                return cast(_Entry, self[key])
            except KeyError:
                return None


_Store = _LRU | _LFU | _FIFO | _TLRU
_CLASSES: dict[str, type[_LRU] | type[_LFU] | type[_FIFO] | type[_TLRU]] = {
    "lru": _LRU,
    "lfu": _LFU,
    "fifo": _FIFO,
    "ttl": _TLRU,
}


@dataclass(slots=True)
class _Namespace:
    name: str
    config: CacheConfig
    store: _Store
    counters: _Counters

    def entries(self) -> Iterator[tuple[str, _Entry]]:
        """Live entries in the store's own order, after sweeping expired ones."""
        self.store.expire()
        for key in list(cachetools.Cache.__iter__(self.store)):
            yield key, cachetools.Cache.__getitem__(self.store, key)


@dataclass(slots=True)
class _KeyLock:
    lock: threading.RLock = field(default_factory=threading.RLock)
    users: int = 0


@dataclass(slots=True)
class _Flight:
    task: asyncio.Task[Any]
    waiters: int = 0


# --------------------------------------------------------------------------- manager


class CacheManager:
    """Named caches with their own strategy, ttl and capacity, plus a memoize decorator.

    Thread-safe: one lock guards the cachetools structures (they are not thread-safe), and sync
    memoized functions may be called from worker threads. Values are stored as given, not
    copied, so callers must not mutate what they put in or get out.
    """

    def __init__(
        self, config: CacheConfig | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or CacheConfig()
        self._clock = clock
        self._lock = threading.Lock()  # never re-entered; a plain Lock is the cheaper one
        self._namespaces: dict[str, _Namespace] = {}
        self._overrides: dict[str, CacheConfig] = {}
        self._key_locks: dict[tuple[str, str], _KeyLock] = {}
        self._key_locks_guard = threading.Lock()
        self._flights: dict[tuple[asyncio.AbstractEventLoop, str, str], _Flight] = {}

    # ----------------------------------------------------------------- namespaces

    def configure_namespace(
        self,
        name: str,
        *,
        strategy: CacheStrategy | None = None,
        ttl: float | str | None = _KEEP,
        max_items: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        """Override the defaults for one namespace; unset arguments keep the default config.

        `ttl=None` means never expire, which is why "not given" is the `...` sentinel. When the
        namespace already holds entries they move to the new store in their current order,
        keeping their expiry; a smaller capacity evicts (and counts) the overflow.
        """
        changes: dict[str, Any] = {"namespace": name}
        if strategy is not None:
            changes["strategy"] = strategy
        if ttl is not _KEEP:
            changes["ttl"] = ttl
        if max_items is not None:
            changes["max_items"] = max_items
        if max_bytes is not None:
            changes["max_bytes"] = max_bytes
        config = CacheConfig.model_validate({**self.config.model_dump(), **changes})
        with self._lock:
            self._overrides[name] = config
            old = self._namespaces.pop(name, None)
            if old is None:
                return  # built lazily on first use, like every other namespace
            ns = self._namespaces[name] = self._build(name, config, old.counters)
            for key, entry in old.entries():
                self._put(ns, key, entry)

    def namespaces(self) -> list[str]:
        with self._lock:
            return sorted(self._namespaces)

    def _namespace(self, name: str | None) -> _Namespace:
        name = name or self.config.namespace
        ns = self._namespaces.get(name)
        if ns is None:
            config = self._overrides.get(name) or self.config
            ns = self._namespaces[name] = self._build(name, config, _Counters())
        return ns

    def _build(self, name: str, config: CacheConfig, counters: _Counters) -> _Namespace:
        cls = _CLASSES[config.strategy]
        if config.max_bytes is not None:
            store = cls(
                config.max_bytes, clock=self._clock, counters=counters, getsizeof=_entry_size
            )
        else:
            store = cls(config.max_items, clock=self._clock, counters=counters)
        return _Namespace(name, config, store, counters)

    # ----------------------------------------------------------------- entries

    def get(self, key: str, namespace: str | None = None, default: Any = None) -> Any:
        """The live value, or `default`; counts a hit or a miss."""
        with self._lock:
            ns = self._namespaces.get(namespace or self.config.namespace) or self._namespace(
                namespace
            )
            entry = ns.store.lookup(key)
            if entry is None:
                ns.counters.misses += 1
                return default
            ns.counters.hits += 1
            return entry.value

    def set(
        self, key: str, value: Any, namespace: str | None = None, *, ttl: float | None = None
    ) -> None:
        """Store `value`; `ttl` (seconds, `math.inf` = never) overrides the namespace ttl.

        A value bigger than the whole byte budget is not stored (and any older value under the
        key is dropped, so a stale result is never served): a cache must not fail its caller.
        """
        if ttl is not None:
            ttl = parse_duration(ttl)
        name = namespace or self.config.namespace
        config = (self._overrides.get(name) or self.config) if self._overrides else self.config
        # Sizing pickles the value: only a byte-limited namespace needs it, and outside the lock.
        size = _approx_size(key, value) if config.max_bytes is not None else 0
        with self._lock:
            ns = self._namespaces.get(name) or self._namespace(name)
            if ns.config.max_bytes is not None and not size:  # reconfigured meanwhile
                size = _approx_size(key, value)
            lifetime = ttl if ttl is not None else ns.config.ttl
            if lifetime is not None and lifetime <= 0:
                self._remove(ns, key)  # expired on arrival; never serve the older value
                return
            expires = math.inf if lifetime is None else self._clock() + lifetime
            self._put(ns, key, _Entry(value, expires, size))

    def _put(self, ns: _Namespace, key: str, entry: _Entry) -> None:
        try:
            ns.store[key] = entry
        except ValueError:
            self._remove(ns, key)
            log.debug(
                "cache %s: %s not stored, %d bytes exceed max_bytes=%s",
                ns.name,
                key,
                entry.size,
                ns.config.max_bytes,
            )

    @staticmethod
    def _remove(ns: _Namespace, key: str) -> bool:
        if ns.store.peek(key) is None:
            return False
        try:
            del ns.store[key]
        except KeyError:  # TLRU: expired in the instant between peek and delete
            return False
        return True

    def contains(self, key: str, namespace: str | None = None) -> bool:
        """Whether a live value is stored; not a hit or miss, not a use for LRU/LFU."""
        with self._lock:
            return self._namespace(namespace).store.peek(key) is not None

    def delete(self, key: str, namespace: str | None = None) -> bool:
        with self._lock:
            return self._remove(self._namespace(namespace), key)

    def clear(self, namespace: str | None = None) -> None:
        """Drop entries (of every namespace when None); statistics are history and stay."""
        with self._lock:
            if namespace is None:
                targets = list(self._namespaces.values())
            else:
                targets = [ns] if (ns := self._namespaces.get(namespace)) else []
            for target in targets:
                target.store.clear()

    def invalidate_pattern(
        self, pattern: str | re.Pattern[str], namespace: str | None = None
    ) -> int:
        """Remove keys where the regex matches anywhere (`re.search`); None = every namespace.

        Returns how many live entries were removed.
        """
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            msg = f"cache pattern {pattern!r} is not a regular expression: {exc}"
            raise UserError(msg) from exc
        with self._lock:
            targets = (
                list(self._namespaces.values())
                if namespace is None
                else [self._namespace(namespace)]
            )
            removed = 0
            for ns in targets:
                for key, _ in list(ns.entries()):
                    if regex.search(key) and self._remove(ns, key):
                        removed += 1
            return removed

    # ----------------------------------------------------------------- stats

    def namespace_stats(self, namespace: str) -> CacheStats:
        with self._lock:
            return self._stats_of(self._namespace(namespace))

    def _stats_of(self, ns: _Namespace) -> CacheStats:
        """Figures of one namespace; the caller holds the lock. Entries of a namespace without
        a byte budget are sized here, once each, rather than pickled on every `set`."""
        entries = list(ns.entries())
        for key, entry in entries:
            if not entry.size:
                entry.size = _approx_size(key, entry.value)
        c = ns.counters
        return CacheStats(
            namespace=ns.name,
            strategy=ns.config.strategy,
            hits=c.hits,
            misses=c.misses,
            evictions=c.evicted + c.expired,
            size=len(entries),
            max_size=ns.config.max_items if ns.config.max_bytes is None else 0,
            max_bytes=ns.config.max_bytes,
            bytes=sum(entry.size for _, entry in entries),
        )

    def stats(self) -> list[CacheStats]:
        with self._lock:
            return [self._stats_of(self._namespaces[name]) for name in sorted(self._namespaces)]

    # ----------------------------------------------------------------- memoize

    @overload
    def memoize(
        self,
        fn: F,
        *,
        namespace: str = ...,
        ttl: float | None = ...,
        key: Callable[..., str] | None = ...,
    ) -> F: ...

    @overload
    def memoize(
        self,
        fn: None = None,
        *,
        namespace: str = ...,
        ttl: float | None = ...,
        key: Callable[..., str] | None = ...,
    ) -> Callable[[F], F]: ...

    def memoize(
        self,
        fn: F | None = None,
        *,
        namespace: str = "memo",
        ttl: float | None = None,
        key: Callable[..., str] | None = None,
    ) -> F | Callable[[F], F]:
        """Cache a function's results; use as `@cache.memoize` or `@cache.memoize(...)`.

        `key(*args, **kwargs)` replaces the default `module.qualname:<hash of args>` key as is.
        Concurrent calls for one key compute once: async callers share one task (if it raises,
        nothing is cached and every waiter gets the exception; it is cancelled only when every
        waiter is), sync callers queue on a per-key lock. Each call counts one hit or miss; a
        call that joins a computation already running counts as a hit.
        """

        def decorate(func: F) -> F:
            def make_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
                return key(*args, **kwargs) if key else _default_memo_key(func, args, kwargs)

            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    return await self._memo_async(
                        func, args, kwargs, make_key(args, kwargs), namespace, ttl
                    )

                return cast(F, async_wrapper)

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                return self._memo_sync(func, args, kwargs, make_key(args, kwargs), namespace, ttl)

            return cast(F, sync_wrapper)

        return decorate(fn) if fn is not None else decorate

    def _memo_hit(self, key: str, namespace: str) -> _Entry | None:
        """Lookup that counts only hits: whether a miss is one depends on what happens next."""
        with self._lock:
            ns = self._namespace(namespace)
            entry = ns.store.lookup(key)
            if entry is not None:
                ns.counters.hits += 1
            return entry

    def _count(self, namespace: str, *, hit: bool) -> None:
        with self._lock:
            counters = self._namespace(namespace).counters
            if hit:
                counters.hits += 1
            else:
                counters.misses += 1

    def _memo_sync(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: str,
        namespace: str,
        ttl: float | None,
    ) -> Any:
        entry = self._memo_hit(key, namespace)
        if entry is not None:
            return entry.value
        with self._key_lock(namespace, key):
            entry = self._memo_hit(key, namespace)  # computed by the thread we queued behind
            if entry is not None:
                return entry.value
            self._count(namespace, hit=False)
            value = func(*args, **kwargs)
            self.set(key, value, namespace, ttl=ttl)
            return value

    @contextlib.contextmanager
    def _key_lock(self, namespace: str, key: str) -> Iterator[None]:
        """Per-key lock, dropped from the registry when its last user leaves."""
        slot_key = (namespace, key)
        with self._key_locks_guard:
            slot = self._key_locks.get(slot_key)
            if slot is None:
                slot = self._key_locks[slot_key] = _KeyLock()
            slot.users += 1
        try:
            with slot.lock:
                yield
        finally:
            with self._key_locks_guard:
                slot.users -= 1
                if slot.users == 0:
                    del self._key_locks[slot_key]

    async def _memo_async(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: str,
        namespace: str,
        ttl: float | None,
    ) -> Any:
        entry = self._memo_hit(key, namespace)
        if entry is not None:
            return entry.value
        loop = asyncio.get_running_loop()
        flight_key = (loop, namespace, key)
        flight = self._flights.get(flight_key)
        if flight is None or flight.task.done():
            self._count(namespace, hit=False)

            async def compute() -> Any:
                value = await func(*args, **kwargs)
                self.set(key, value, namespace, ttl=ttl)
                return value

            flight = _Flight(loop.create_task(compute(), name=f"memoize {key}"))
            self._flights[flight_key] = flight
            flight.task.add_done_callback(functools.partial(self._flight_done, flight_key, flight))
        else:
            self._count(namespace, hit=True)
        # The computation runs in its own task, so one impatient caller being cancelled does not
        # take the result away from the others; the last one leaving cancels it.
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()

    def _flight_done(
        self,
        flight_key: tuple[asyncio.AbstractEventLoop, str, str],
        flight: _Flight,
        task: asyncio.Task[Any],
    ) -> None:
        if self._flights.get(flight_key) is flight:
            del self._flights[flight_key]
        if not task.cancelled():
            task.exception()  # retrieved here so a failure nobody awaited is not logged as lost
