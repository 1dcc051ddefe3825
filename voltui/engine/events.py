"""EventDispatcher: the engine's one event bus (numbering, history, handlers, subscribers, sinks).

Design notes, because the obvious versions of this are slow or lossy:

- `emit` is synchronous and does no awaiting: it numbers the event, records it and appends it to
  plain lists. Delivery to async consumers happens later, in batches, so a flood of events costs a
  few wake-ups rather than one task or one context switch per event.
- Subscribers each own a buffer that `emit` appends to; the consumer drains the whole buffer in one
  go. A consumer that falls more than `subscriber_queue` events behind is cut off with
  `SubscriptionLagged` instead of letting memory grow without limit; it resyncs from a snapshot.
- Handlers run in one background task, taking work from a priority heap, so a burst of low
  priority chatter (`step:output`) cannot delay a `workflow:failed` handler. A handler that raises
  becomes a `dispatcher:handler_error` event; it never stops dispatch.
- Everything runs on the event loop's thread; nothing here is thread-safe, by design.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
import logging
import re
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from fnmatch import translate
from typing import Any, Protocol

from voltui.engine.api import SubscriptionLagged
from voltui.engine.models import Event, EventQuery, EventStats, Priority

__all__ = ["HANDLER_ERROR", "EventDispatcher", "EventEmitter", "EventHandler", "EventSink"]

logger = logging.getLogger(__name__)

HANDLER_ERROR = "dispatcher:handler_error"
"""Type of the event emitted when a handler raises."""

EventHandler = Callable[[Event], Awaitable[None] | None]
EventSink = Callable[[Event], None]
BACKFILL_PAGE = 5_000
"""Sequence numbers read from the store per backfill call when a subscriber resumes."""


class EventEmitter(Protocol):
    """The one method components use to report; tests pass a recorder with the same `emit`."""

    def emit(
        self,
        type: str,
        source: str,
        data: dict[str, Any] | None = None,
        *,
        priority: Priority = Priority.NORMAL,
        correlation_id: str | None = None,
    ) -> Any: ...


Backfill = Callable[[int, int], Awaitable[list[Event]]]

# `Priority.rank` builds a dict on every call; emit is hot, so look ranks up once.
_RANK: dict[Priority, int] = {p: p.rank for p in Priority}
# Handlers get a chance to let the loop breathe after this many events in a row.
_YIELD_EVERY = 256
# Pattern match results are cached per event type; types are few, but cap it in case they are not.
_MATCH_CACHE_MAX = 4096


_new = object.__new__
_set = object.__setattr__
_EVENT_FIELDS = frozenset(Event.model_fields)


def _trusted_event(
    seq: int,
    ts: float,
    type_: str,
    source: str,
    priority: Priority,
    correlation_id: str | None,
    data: dict[str, Any],
    foreign: bool,
) -> Event:
    """An Event built without validation, for the engine's own emits (types already right).

    Validation is the largest part of `emit` (half of its cost at 500,000 events/s) and buys
    nothing for values the engine made itself; `emit` falls back to the validating
    constructor whenever an argument is not of the exact expected type.
    """
    event = _new(Event)
    _set(
        event,
        "__dict__",
        {
            "seq": seq,
            "ts": ts,
            "type": type_,
            "source": source,
            "priority": priority,
            "correlation_id": correlation_id,
            "data": data,
            "foreign": foreign,
        },
    )
    _set(event, "__pydantic_fields_set__", _EVENT_FIELDS)
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


class _Pattern:
    """An fnmatch pattern with a per-type result cache, since the same few types repeat forever."""

    __slots__ = ("_cache", "_regex", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._regex = re.compile(translate(pattern))
        self._cache: dict[str, bool] = {}

    def __call__(self, event_type: str) -> bool:
        hit = self._cache.get(event_type)
        if hit is None:
            if len(self._cache) >= _MATCH_CACHE_MAX:
                self._cache.clear()
            hit = self._cache[event_type] = self._regex.match(event_type) is not None
        return hit


class _Handler:
    __slots__ = ("active", "func", "matches", "name")

    def __init__(self, pattern: str, func: EventHandler, name: str) -> None:
        self.matches = _Pattern(pattern)
        self.func = func
        self.name = name
        self.active = True


class _Subscription:
    """One live consumer: `emit` appends to `buffer` and sets `wake`; the generator drains it."""

    __slots__ = ("buffer", "closed", "everything", "lagged", "matches", "wake")

    def __init__(self, pattern: str) -> None:
        self.matches = _Pattern(pattern)
        self.everything = pattern == "*"
        self.buffer: list[Event] = []
        self.wake = asyncio.Event()
        self.lagged = False
        self.closed = False


class EventDispatcher:
    """Numbers, records and distributes engine events; see the module docstring for the design."""

    def __init__(
        self,
        *,
        history_size: int = 10_000,
        subscriber_queue: int = 20_000,
        start_seq: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        if subscriber_queue < 1:
            raise ValueError("subscriber_queue must be at least 1")
        self._clock = clock
        self._subscriber_queue = subscriber_queue
        self._seq = start_seq
        self._blocks: list[tuple[int, int]] = [(start_seq, 2**62)]
        self._seq_limit: int | None = None
        self._seq_renew: Callable[[], tuple[int, int]] | None = None
        # The last seq handed to history, sinks and subscribers; lags `_seq` only inside a
        # re-entrant emit (a sink emitting), when the inner event waits in `_pending`.
        self._delivered_seq = start_seq
        self._released_seq = start_seq
        self._gate = False
        self._held: deque[Event] = deque()
        self._history: deque[Event] = deque(maxlen=history_size)
        self._by_type: dict[str, int] = {}
        self._total = 0
        self._sinks: list[EventSink] = []
        self._sink_errors = 0
        self._subs: tuple[_Subscription, ...] = ()
        self._handlers: tuple[_Handler, ...] = ()
        self._handler_errors = 0
        self._heap: list[tuple[int, int, Event]] = []
        self._work = asyncio.Event()
        self._state = "new"  # new -> running -> stopped (-> running again on start)
        self._stopping = False
        self._runner: asyncio.Task[None] | None = None
        self._emitting = False
        self._pending: deque[Event] = deque()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start running handlers; work queued before now is processed in priority order."""
        if self._runner is not None and not self._runner.done():
            return
        self._state = "running"
        self._stopping = False
        self._runner = asyncio.create_task(self._run(), name="voltui-event-dispatcher")
        self._work.set()

    async def stop(self, *, drain_timeout: float = 5.0) -> None:
        """Let handlers finish queued work (up to `drain_timeout` s), then end every subscription.

        Subscribers get what is already in their buffers, then their iterators end normally.
        Events emitted after this are still numbered, recorded and given to sinks, but no
        handler runs for them until `start()` is called again.
        """
        runner = self._runner
        if runner is not None and not runner.done():
            self._stopping = True
            self._work.set()
            done, _ = await asyncio.wait({runner}, timeout=drain_timeout)
            if not done:
                logger.warning(
                    "event handlers did not drain within %.1fs; %d item(s) dropped",
                    drain_timeout,
                    len(self._heap),
                )
                runner.cancel()
                try:
                    await runner
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise
        # Only now: while draining, handler errors and handlers' own events still queue up.
        self._state = "stopped"
        self._heap.clear()
        self._runner = None
        for sub in self._subs:
            sub.closed = True
            sub.wake.set()

    # ------------------------------------------------------------------ emitting

    def reset_seq(
        self,
        start_seq: int,
        *,
        limit: int | None = None,
        renew: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        """Number events from `start_seq + 1`, optionally inside a leased block.

        Several engine processes may share one SQLite file (a dashboard and a `voltui run`), so
        the Orchestrator leases disjoint blocks of numbers from the store: `limit` is the last
        number of the block and `renew()` returns the next `(start, limit)` when it runs out.
        Only allowed before the first event, since renumbering would break resumption.
        """
        if self._seq != self._delivered_seq or self._history:
            raise RuntimeError("reset_seq is only allowed before the first event")
        self._seq = self._delivered_seq = self._released_seq = start_seq
        self._seq_limit = limit
        self._seq_renew = renew
        self._blocks = [(start_seq, limit if limit is not None else 2**62)]

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def blocks(self) -> list[tuple[int, int]]:
        """The seq ranges `(lo, hi]` this dispatcher numbers events from."""
        return list(self._blocks)

    def owns_seq(self, seq: int) -> bool:
        """Whether `seq` was numbered by this dispatcher (its leased blocks since start)."""
        return any(lo < seq <= hi for lo, hi in self._blocks)

    @property
    def sink_errors(self) -> int:
        """Exceptions raised by sinks so far (they are swallowed so emit never fails)."""
        return self._sink_errors

    def emit(
        self,
        type: str,
        source: str,
        data: dict[str, Any] | None = None,
        *,
        priority: Priority = Priority.NORMAL,
        correlation_id: str | None = None,
        foreign: bool = False,
    ) -> Event:
        """Record an event and hand it to sinks, subscribers and (later) handlers.

        Synchronous so that any code on the loop thread can report without awaiting. A sink that
        emits while being called gets its event numbered at once but delivered after the current
        one, so every consumer still sees strict seq order.
        """
        if self._seq_limit is not None and self._seq >= self._seq_limit and self._seq_renew:
            self._seq, self._seq_limit = self._seq_renew()
            self._blocks.append((self._seq, self._seq_limit))
        self._seq += 1
        if data is None:
            data = {}
        if (
            data.__class__ is dict
            and priority.__class__ is Priority
            and type.__class__ is str
            and source.__class__ is str
            and (correlation_id is None or correlation_id.__class__ is str)
        ):
            # A shallow copy, as validation made: the caller may reuse or mutate its dict.
            event = _trusted_event(
                self._seq,
                self._clock(),
                type,
                source,
                priority,
                correlation_id,
                dict(data),
                foreign,
            )
        else:
            event = Event(
                seq=self._seq,
                ts=self._clock(),
                type=type,
                source=source,
                priority=priority,
                correlation_id=correlation_id,
                data=data,
                foreign=foreign,
            )
        if self._emitting:
            self._pending.append(event)
            return event
        self._emitting = True
        try:
            self._deliver(event)
            while self._pending:
                self._deliver(self._pending.popleft())
        finally:
            self._emitting = False
        return event

    def _deliver(self, event: Event) -> None:
        etype = event.type
        self._delivered_seq = event.seq
        self._history.append(event)
        self._total += 1
        by_type = self._by_type
        by_type[etype] = by_type.get(etype, 0) + 1
        for sink in self._sinks:
            try:
                sink(event)
            except Exception:
                self._sink_errors += 1
                # Log the 1st, 10th, 100th... failure: a broken sink must not flood the log.
                n = self._sink_errors
                if n & (n - 1) == 0 or n < 4:
                    logger.exception("event sink %r failed (%d failure(s) so far)", sink, n)
        if self._gate:
            self._held.append(event)
        else:
            self._released_seq = event.seq
            self._to_subscribers(event)
        if self._state == "new" or (self._state == "running" and self._handlers):
            heapq.heappush(self._heap, (-_RANK[event.priority], event.seq, event))
            self._work.set()

    def hold_until_durable(self) -> None:
        """Give subscribers only events the store has committed (`release` says which).

        Durable before reported applies to the event stream too: a dashboard or a remote
        client must never have seen an event that a crash then loses. Sinks, history and
        handlers still get every event at once.
        """
        self._gate = True

    def release(self, upto_seq: int) -> None:
        """Every event up to `upto_seq` is committed: hand them to subscribers, in order."""
        held = self._held
        while held and held[0].seq <= upto_seq:
            event = held.popleft()
            self._released_seq = event.seq
            self._to_subscribers(event)

    @property
    def released_seq(self) -> int:
        """The newest event subscribers may have; a snapshot is consistent as of this."""
        return self._released_seq

    def _to_subscribers(self, event: Event) -> None:
        etype = event.type
        for sub in self._subs:
            if sub.everything or sub.matches(etype):
                buf = sub.buffer
                buf.append(event)
                n = len(buf)
                if n == 1:  # the consumer only sleeps on an empty buffer
                    sub.wake.set()
                elif n > self._subscriber_queue:
                    sub.lagged = True
                    sub.buffer = []
                    self._remove_sub(sub)
                    sub.wake.set()

    # ------------------------------------------------------------------ handlers and sinks

    def register_handler(
        self, pattern: str, handler: EventHandler, *, name: str | None = None
    ) -> Callable[[], None]:
        """Call `handler` for each event whose type matches `pattern`; returns an unregister.

        Handlers run one at a time in the dispatcher's task: keep them short, and start your own
        task for slow work, or every other handler waits behind it.
        """
        entry = _Handler(
            pattern,
            handler,
            name or getattr(handler, "__qualname__", None) or repr(handler),
        )
        self._handlers = (*self._handlers, entry)

        def unregister() -> None:
            entry.active = False
            self._handlers = tuple(h for h in self._handlers if h is not entry)

        return unregister

    def add_sink(self, sink: EventSink) -> None:
        """Call `sink` inline from emit for every event, in seq order (e.g. batch persistence)."""
        self._sinks.append(sink)

    async def _run(self) -> None:
        heap = self._heap
        since_yield = 0
        while True:
            if not heap:
                if self._stopping:
                    return
                self._work.clear()
                await self._work.wait()
                continue
            _, _, event = heapq.heappop(heap)
            await self._dispatch(event)
            since_yield += 1
            if since_yield >= _YIELD_EVERY:
                since_yield = 0
                await asyncio.sleep(0)

    async def _dispatch(self, event: Event) -> None:
        for entry in self._handlers:
            if not entry.active or not entry.matches(event.type):
                continue
            try:
                result = entry.func(event)
                if result is not None and inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError as exc:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                self._handler_failed(entry, event, exc)
            except Exception as exc:
                self._handler_failed(entry, event, exc)

    def _handler_failed(self, entry: _Handler, event: Event, exc: BaseException) -> None:
        self._handler_errors += 1
        if event.type == HANDLER_ERROR:
            # Reporting this one would feed the same handler again, possibly forever.
            logger.debug("handler %s failed on a handler_error event", entry.name, exc_info=exc)
            return
        logger.debug("handler %s failed on %s #%d", entry.name, event.type, event.seq, exc_info=exc)
        self.emit(
            HANDLER_ERROR,
            "dispatcher",
            {
                "handler": entry.name,
                "event_type": event.type,
                "event_seq": event.seq,
                "error": f"{type(exc).__name__}: {exc}",
            },
            priority=Priority.HIGH,
            correlation_id=event.correlation_id,
        )

    # ------------------------------------------------------------------ queries

    def history(self, query: EventQuery | None = None) -> list[Event]:
        """Events still in memory matching `query`, oldest first (`limit` keeps the newest)."""
        if query is None:
            return list(self._history)
        matches = _Pattern(query.type) if query.type is not None else None
        since, since_seq, cid = query.since, query.since_seq, query.correlation_id
        limit = query.limit
        out: list[Event] = []
        # Newest first, so `limit` and `since_seq` can stop the scan early.
        for event in reversed(self._history):
            if since_seq is not None and event.seq <= since_seq:
                break
            if matches is not None and not matches(event.type):
                continue
            if since is not None and event.ts < since:
                continue
            if cid is not None and event.correlation_id != cid:
                continue
            out.append(event)
            if limit is not None and len(out) >= limit:
                break
        out.reverse()
        return out

    def correlated(self, correlation_id: str) -> list[Event]:
        """Every in-memory event of one correlation id (a run), oldest first."""
        return self.history(EventQuery(correlation_id=correlation_id))

    def stats(self) -> EventStats:
        return EventStats(
            total=self._total,
            by_type=dict(self._by_type),
            queue_size=len(self._heap),
            subscribers=len(self._subs),
            handler_errors=self._handler_errors,
            last_seq=self._seq,
        )

    # ------------------------------------------------------------------ subscriptions

    def subscribe(
        self,
        pattern: str = "*",
        since_seq: int | None = None,
        *,
        backfill: Backfill | None = None,
        max_batch: int = 1000,
    ) -> AsyncGenerator[list[Event], None]:
        """Batches of events matching `pattern`, in seq order, resumable by `since_seq`.

        Without `since_seq` the stream starts after the last event emitted before this call, so
        nothing emitted between the call and the first iteration is lost. If `since_seq` is older
        than the in-memory history, `backfill(since_seq, upto)` supplies the missing events;
        without one, `SubscriptionLagged(since_seq)` is raised since the gap cannot be filled.
        Close the iterator (break, `aclose()`, cancel) and its buffer is dropped.
        """
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        start = self._seq if since_seq is None else since_seq
        return self._subscription(pattern, start, backfill, max_batch)

    async def _subscription(
        self, pattern: str, since_seq: int, backfill: Backfill | None, max_batch: int
    ) -> AsyncGenerator[list[Event], None]:
        sub = _Subscription(pattern)
        # Register the live buffer before reading the backlog, so nothing falls between them.
        self._subs = (*self._subs, sub)
        if self._state == "stopped":
            sub.closed = True
        last = since_seq
        try:
            # Only what subscribers may see: with the durability gate, what is committed.
            upto = self._released_seq
            backlog: list[Event] = []
            missing_upto: int | None = None
            if since_seq < upto:
                history = self._history
                oldest = history[0].seq if history else upto + 1
                if since_seq + 1 < oldest:
                    missing_upto = oldest - 1
                # Seqs are contiguous within a leased block, so the wanted slice usually starts
                # at a known index; across a block boundary (numbers jump) it is searched for.
                first = max(0, since_seq + 1 - oldest)
                if history and history[-1].seq - oldest != len(history) - 1:
                    first = next(
                        (i for i, e in enumerate(history) if e.seq > since_seq), len(history)
                    )
                backlog = [
                    e
                    for e in itertools.islice(history, first, None)
                    if since_seq < e.seq <= upto and sub.matches(e.type)
                ]
            if missing_upto is not None:
                if backfill is None:
                    raise SubscriptionLagged(since_seq)
                # Page through the store so a long disconnect does not load it all at once.
                cursor = since_seq
                while cursor < missing_upto:
                    page_end = min(cursor + BACKFILL_PAGE, missing_upto)
                    older = sorted(
                        (
                            e
                            for e in await backfill(cursor, page_end)
                            if cursor < e.seq <= page_end and sub.matches(e.type)
                        ),
                        key=lambda e: e.seq,
                    )
                    cursor = page_end
                    for i in range(0, len(older), max_batch):
                        batch = older[i : i + max_batch]
                        last = batch[-1].seq
                        yield batch
                        if sub.lagged:
                            raise SubscriptionLagged(last)
            for i in range(0, len(backlog), max_batch):
                batch = backlog[i : i + max_batch]
                last = batch[-1].seq
                yield batch
                if sub.lagged:
                    raise SubscriptionLagged(last)

            while True:
                if sub.lagged:
                    raise SubscriptionLagged(last)
                buf = sub.buffer
                if buf:
                    sub.buffer = []
                    if buf[0].seq <= last:
                        buf = [e for e in buf if e.seq > last]
                    for i in range(0, len(buf), max_batch):
                        batch = buf if len(buf) <= max_batch else buf[i : i + max_batch]
                        last = batch[-1].seq
                        yield batch
                        if sub.lagged:
                            raise SubscriptionLagged(last)
                    continue
                if sub.closed:
                    return
                sub.wake.clear()
                await sub.wake.wait()
        finally:
            self._remove_sub(sub)

    def _remove_sub(self, sub: _Subscription) -> None:
        if sub in self._subs:
            self._subs = tuple(s for s in self._subs if s is not sub)

    # ------------------------------------------------------------------ replay

    async def replay(
        self,
        events: Iterable[Event],
        handler: EventHandler,
        *,
        speed: float | None = None,
    ) -> int:
        """Feed recorded events to `handler` in seq order; returns how many were fed.

        `speed` None replays as fast as possible; otherwise the recorded time between events is
        divided by `speed` (2.0 = twice as fast). Handler exceptions propagate: a replay is
        driven by its caller, who should see what went wrong.
        """
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive (or None for as fast as possible)")
        count = 0
        prev_ts: float | None = None
        for event in sorted(events, key=lambda e: e.seq):
            if speed is not None and prev_ts is not None:
                gap = (event.ts - prev_ts) / speed
                if gap > 0:
                    await asyncio.sleep(gap)
            elif count and count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            prev_ts = event.ts
            result = handler(event)
            if result is not None and inspect.isawaitable(result):
                await result
            count += 1
        return count
