"""EventDispatcher: numbering, handlers, history, subscriptions (gap-free resume), replay."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable

import pytest

from voltui.engine.api import SubscriptionLagged
from voltui.engine.events import HANDLER_ERROR, EventDispatcher
from voltui.engine.models import Event, EventQuery, Priority


def fake_clock(start: float = 1000.0, step: float = 1.0) -> Callable[[], float]:
    counter = itertools.count()
    return lambda: start + step * next(counter)


async def until(predicate: Callable[[], bool], rounds: int = 2000) -> None:
    """Let the loop run until `predicate` holds; fail (not hang) if it never does."""
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def collect(agen, upto_seq: int, *, slow: bool = False) -> list[int]:
    seqs: list[int] = []
    async for batch in agen:
        assert batch, "batches are never empty"
        seqs.extend(e.seq for e in batch)
        if slow:
            await asyncio.sleep(0)
        if seqs[-1] >= upto_seq:
            break
    return seqs


# --------------------------------------------------------------------------- numbering


async def test_seq_is_monotonic_from_start_seq_and_uses_clock() -> None:
    d = EventDispatcher(start_seq=41, clock=fake_clock(500.0))
    assert d.last_seq == 41
    first = d.emit("a:b", "test", {"x": 1}, priority="high", correlation_id="run-1")
    second = d.emit("a:c", "test")
    assert (first.seq, second.seq) == (42, 43)
    assert (first.ts, second.ts) == (500.0, 501.0)
    assert first.priority is Priority.HIGH
    assert first.data == {"x": 1} and second.data == {}
    assert first.correlation_id == "run-1"
    assert d.last_seq == 43
    assert [e.seq for e in d.history()] == [42, 43]


async def test_emit_copies_data() -> None:
    d = EventDispatcher()
    data = {"k": 1}
    event = d.emit("t", "s", data)
    data["k"] = 2
    assert event.data == {"k": 1}


# --------------------------------------------------------------------------- handlers


async def test_wildcard_handler_matching() -> None:
    d = EventDispatcher()
    seen: dict[str, list[str]] = {"all": [], "step": [], "exact": [], "failed": []}
    d.register_handler("*", lambda e: seen["all"].append(e.type))
    d.register_handler("step:*", lambda e: seen["step"].append(e.type))
    d.register_handler("workflow:started", lambda e: seen["exact"].append(e.type))
    d.register_handler("*:failed", lambda e: seen["failed"].append(e.type))
    await d.start()
    for t in ("workflow:started", "step:started", "step:failed", "workflow:failed", "stepx"):
        d.emit(t, "test")
    await d.stop()
    assert seen["all"] == [
        "workflow:started",
        "step:started",
        "step:failed",
        "workflow:failed",
        "stepx",
    ]
    assert seen["step"] == ["step:started", "step:failed"]
    assert seen["exact"] == ["workflow:started"]
    assert seen["failed"] == ["step:failed", "workflow:failed"]


async def test_async_and_sync_handlers_both_run_and_unregister_stops_calls() -> None:
    d = EventDispatcher()
    sync_seen: list[int] = []
    async_seen: list[int] = []
    done = asyncio.Event()

    async def slow(e: Event) -> None:
        await asyncio.sleep(0)
        async_seen.append(e.seq)
        if e.seq == 3:
            done.set()

    d.register_handler("*", lambda e: sync_seen.append(e.seq))
    unregister = d.register_handler("*", slow)
    await d.start()
    for _ in range(3):
        d.emit("x", "test")
    await asyncio.wait_for(done.wait(), 5)
    unregister()
    unregister()  # idempotent
    d.emit("x", "test")
    await d.stop()
    assert async_seen == [1, 2, 3]
    assert sync_seen == [1, 2, 3, 4]


async def test_raising_handler_becomes_error_event_and_others_still_run() -> None:
    d = EventDispatcher()
    good: list[str] = []

    def bad(e: Event) -> None:
        if e.type == "boom":
            raise RuntimeError("kaput")

    d.register_handler("*", bad, name="bad-handler")
    d.register_handler("*", lambda e: good.append(e.type))
    await d.start()
    d.emit("boom", "test", correlation_id="run-9")
    d.emit("fine", "test")
    await d.stop()

    errors = d.history(EventQuery(type=HANDLER_ERROR))
    assert len(errors) == 1
    err = errors[0]
    assert err.source == "dispatcher"
    assert err.priority is Priority.HIGH
    assert err.correlation_id == "run-9"
    assert err.data == {
        "handler": "bad-handler",
        "event_type": "boom",
        "event_seq": 1,
        "error": "RuntimeError: kaput",
    }
    # The good handler saw everything, including the error event (HIGH runs before "fine").
    assert good == ["boom", HANDLER_ERROR, "fine"]
    assert d.stats().handler_errors == 1


async def test_errors_on_handler_error_events_are_only_counted() -> None:
    d = EventDispatcher()

    async def always_fails(e: Event) -> None:
        raise ValueError(e.type)

    d.register_handler("*", always_fails)
    await d.start()
    d.emit("x", "test")
    await d.stop()
    # One error event for "x"; the failure on that error event is counted, not re-emitted.
    assert [e.type for e in d.history()] == ["x", HANDLER_ERROR]
    assert d.stats().handler_errors == 2


async def test_priority_orders_work_queued_before_start() -> None:
    d = EventDispatcher()
    order: list[tuple[str, int]] = []
    d.register_handler("*", lambda e: order.append((e.priority.value, e.seq)))
    d.emit("e", "t", priority=Priority.LOW)
    d.emit("e", "t", priority=Priority.NORMAL)
    d.emit("e", "t", priority=Priority.CRITICAL)
    d.emit("e", "t", priority=Priority.HIGH)
    d.emit("e", "t", priority=Priority.NORMAL)
    d.emit("e", "t", priority=Priority.CRITICAL)
    assert d.stats().queue_size == 6
    assert order == []  # nothing runs before start()
    await d.start()
    await d.stop()
    assert order == [
        ("critical", 3),
        ("critical", 6),
        ("high", 4),
        ("normal", 2),
        ("normal", 5),
        ("low", 1),
    ]
    assert d.stats().queue_size == 0


async def test_stop_bounds_the_wait_for_a_stuck_handler() -> None:
    d = EventDispatcher()
    started = asyncio.Event()

    async def stuck(e: Event) -> None:
        started.set()
        await asyncio.Event().wait()

    d.register_handler("*", stuck)
    await d.start()
    d.emit("x", "t")
    d.emit("y", "t")
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.wait_for(d.stop(drain_timeout=0.05), 5)
    assert d.stats().queue_size == 0


# --------------------------------------------------------------------------- sinks


async def test_sinks_see_every_event_in_order_and_errors_are_swallowed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    d = EventDispatcher()
    seen: list[int] = []

    def broken(e: Event) -> None:
        raise OSError("disk full")

    d.add_sink(broken)
    d.add_sink(lambda e: seen.append(e.seq))
    for _ in range(5):
        d.emit("x", "t")
    assert seen == [1, 2, 3, 4, 5]
    assert d.sink_errors == 5
    assert "disk full" in caplog.text


async def test_emit_from_a_sink_keeps_seq_order_everywhere() -> None:
    d = EventDispatcher()
    sink_seen: list[int] = []

    def echoing(e: Event) -> None:
        sink_seen.append(e.seq)
        if e.type == "ping":
            inner = d.emit("pong", "sink")
            assert inner.seq == e.seq + 1

    d.add_sink(echoing)
    d.add_sink(lambda e: sink_seen.append(-e.seq))
    agen = d.subscribe()
    d.emit("ping", "t")
    d.emit("other", "t")
    assert sink_seen == [1, -1, 2, -2, 3, -3]
    assert [e.seq for e in d.history()] == [1, 2, 3]
    batch = await anext(agen)
    assert [(e.seq, e.type) for e in batch] == [(1, "ping"), (2, "pong"), (3, "other")]
    await agen.aclose()


# --------------------------------------------------------------------------- history & stats


async def test_history_filters() -> None:
    d = EventDispatcher(clock=fake_clock(100.0))  # ts = 100, 101, 102, ...
    d.emit("step:started", "t", correlation_id="r1")  # 1 ts 100
    d.emit("step:output", "t", correlation_id="r1")  # 2 ts 101
    d.emit("workflow:started", "t", correlation_id="r2")  # 3 ts 102
    d.emit("step:finished", "t", correlation_id="r1")  # 4 ts 103
    d.emit("step:started", "t", correlation_id="r2")  # 5 ts 104

    def seqs(**kw: object) -> list[int]:
        return [e.seq for e in d.history(EventQuery(**kw))]

    assert seqs() == [1, 2, 3, 4, 5]
    assert seqs(type="step:*") == [1, 2, 4, 5]
    assert seqs(type="workflow:started") == [3]
    assert seqs(since=102.0) == [3, 4, 5]  # inclusive
    assert seqs(since_seq=3) == [4, 5]
    assert seqs(correlation_id="r1") == [1, 2, 4]
    assert seqs(limit=2) == [4, 5]  # newest two, oldest first
    assert seqs(type="step:*", correlation_id="r2", since_seq=0, limit=5) == [5]
    assert seqs(type="step:*", limit=3, since=100.5) == [2, 4, 5]
    assert [e.seq for e in d.correlated("r2")] == [3, 5]
    assert d.correlated("nope") == []


async def test_history_is_bounded() -> None:
    d = EventDispatcher(history_size=5)
    for _ in range(12):
        d.emit("x", "t")
    assert [e.seq for e in d.history()] == [8, 9, 10, 11, 12]
    assert d.stats().total == 12


async def test_stats() -> None:
    d = EventDispatcher(start_seq=10)
    d.register_handler("*", lambda e: None)
    d.emit("a", "t")
    d.emit("a", "t")
    d.emit("b", "t")
    agen = d.subscribe()
    task = asyncio.create_task(anext(agen))
    await until(lambda: d.stats().subscribers == 1)
    stats = d.stats()
    assert stats.total == 3
    assert stats.by_type == {"a": 2, "b": 1}
    assert stats.queue_size == 3  # not started yet
    assert stats.subscribers == 1
    assert stats.handler_errors == 0
    assert stats.last_seq == 13
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await d.start()
    await d.stop()
    stats = d.stats()
    assert stats.queue_size == 0 and stats.subscribers == 0


# --------------------------------------------------------------------------- subscribe


async def test_subscribe_live_with_pattern() -> None:
    d = EventDispatcher()
    d.emit("step:old", "t")  # before subscribe(): not delivered
    got: list[Event] = []

    async def consume() -> None:
        async for batch in d.subscribe("step:*"):
            got.extend(batch)
            if got[-1].type == "step:last":
                return

    task = asyncio.create_task(consume())
    await until(lambda: d.stats().subscribers == 1)
    d.emit("step:a", "t")
    d.emit("workflow:x", "t")
    await asyncio.sleep(0)
    d.emit("step:b", "t")
    d.emit("step:last", "t")
    await asyncio.wait_for(task, 5)
    assert [(e.seq, e.type) for e in got] == [(2, "step:a"), (4, "step:b"), (5, "step:last")]
    await until(lambda: d.stats().subscribers == 0)


async def test_subscribe_includes_events_emitted_before_first_iteration() -> None:
    d = EventDispatcher()
    d.emit("x", "t")
    agen = d.subscribe()
    d.emit("x", "t")  # after subscribe(), before iterating
    batch = await anext(agen)
    assert [e.seq for e in batch] == [2]
    await agen.aclose()


async def test_subscribe_since_seq_while_emitting_has_no_gap_or_duplicate() -> None:
    d = EventDispatcher(history_size=5000)
    for _ in range(300):
        d.emit("x", "t")
    final = 300 + 3000

    async def produce() -> None:
        for _ in range(300):
            for _ in range(10):
                d.emit("x", "t")
            await asyncio.sleep(0)

    # Small batches: the backlog is yielded in many pieces while the producer keeps emitting.
    consumer = asyncio.create_task(collect(d.subscribe("*", 120, max_batch=7), final, slow=True))
    producer = asyncio.create_task(produce())
    seqs = await asyncio.wait_for(consumer, 10)
    await producer
    assert seqs == list(range(121, final + 1))


async def test_subscribe_backfills_older_than_history() -> None:
    d = EventDispatcher(history_size=10)
    store: list[Event] = []
    d.add_sink(store.append)  # plays the RunStore: keeps every event
    for i in range(30):
        d.emit("step:x" if i % 2 else "run:y", "t")
    calls: list[tuple[int, int]] = []

    async def backfill(since: int, upto: int) -> list[Event]:
        calls.append((since, upto))
        # Events keep coming while the "database" is read.
        for _ in range(25):
            d.emit("step:x", "t")
            await asyncio.sleep(0)
        # Unsorted and unfiltered on purpose: the dispatcher filters by pattern and range.
        return [e for e in reversed(store) if since < e.seq <= upto + 3]

    got = await asyncio.wait_for(collect(d.subscribe("step:*", 5, backfill=backfill), 55), 5)
    assert calls == [(5, 20)]  # history holds 21..30 when the subscription starts
    expected = [e.seq for e in store if e.seq > 5 and e.type == "step:x"]
    assert got == expected
    assert expected[-1] == 55


async def test_backfill_from_before_start_seq() -> None:
    d = EventDispatcher(start_seq=100)
    old = [Event(seq=s, ts=float(s), type="x", source="db") for s in range(1, 101)]

    async def backfill(since: int, upto: int) -> list[Event]:
        return [e for e in old if since < e.seq <= upto]

    d.emit("x", "t")
    got = await asyncio.wait_for(collect(d.subscribe("*", 90, backfill=backfill), 101), 5)
    assert got == list(range(91, 102))


async def test_gap_without_backfill_raises_lagged() -> None:
    d = EventDispatcher(history_size=3)
    for _ in range(10):
        d.emit("x", "t")
    agen = d.subscribe("*", 2)
    with pytest.raises(SubscriptionLagged) as info:
        await anext(agen)
    assert info.value.last_seq == 2
    assert d.stats().subscribers == 0


async def test_lagging_subscriber_raises_subscription_lagged() -> None:
    d = EventDispatcher(subscriber_queue=10)
    agen = d.subscribe()
    d.emit("x", "t")
    d.emit("x", "t")
    first = await anext(agen)
    assert [e.seq for e in first] == [1, 2]
    for _ in range(50):  # the consumer does not run meanwhile
        d.emit("x", "t")
    assert d.stats().subscribers == 0  # cut off at once, not buffering any more
    with pytest.raises(SubscriptionLagged) as info:
        await anext(agen)
    assert info.value.last_seq == 2


async def test_subscriber_cleanup_on_break_and_cancel() -> None:
    d = EventDispatcher()

    async def take_one() -> None:
        async for _batch in d.subscribe():
            break

    task = asyncio.create_task(take_one())
    await until(lambda: d.stats().subscribers == 1)
    d.emit("x", "t")
    await asyncio.wait_for(task, 5)
    await until(lambda: d.stats().subscribers == 0)

    async def forever() -> None:
        async with contextlib.aclosing(d.subscribe()) as agen:
            async for _batch in agen:
                pass

    task = asyncio.create_task(forever())
    await until(lambda: d.stats().subscribers == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert d.stats().subscribers == 0
    d.emit("x", "t")  # nothing left to buffer into


async def test_stop_ends_subscribers_after_buffered_events() -> None:
    d = EventDispatcher()
    await d.start()
    got: list[int] = []

    async def consume() -> None:
        async for batch in d.subscribe():
            got.extend(e.seq for e in batch)

    task = asyncio.create_task(consume())
    await until(lambda: d.stats().subscribers == 1)
    d.emit("x", "t")
    d.emit("x", "t")
    await d.stop()
    await asyncio.wait_for(task, 5)  # ends normally, no exception
    assert got == [1, 2]


async def test_fifty_thousand_events_arrive_once_in_order() -> None:
    d = EventDispatcher()
    total = 50_000
    consumer = asyncio.create_task(collect(d.subscribe(), total))
    await until(lambda: d.stats().subscribers == 1)
    for _ in range(total // 1000):
        for _ in range(1000):
            d.emit("step:output", "load", {"line": "x"})
        await asyncio.sleep(0)
    seqs = await asyncio.wait_for(consumer, 10)
    assert seqs == list(range(1, total + 1))


# --------------------------------------------------------------------------- replay


async def test_replay_in_seq_order_with_async_handler() -> None:
    d = EventDispatcher()
    recorded = [Event(seq=s, ts=10.0 + s, type="x", source="db") for s in (3, 1, 2, 5, 4)]
    seen: list[int] = []

    async def handler(e: Event) -> None:
        await asyncio.sleep(0)
        seen.append(e.seq)

    assert await d.replay(recorded, handler) == 5
    assert seen == [1, 2, 3, 4, 5]

    seen_sync: list[int] = []
    # 1 s recorded gaps at 1000x: a few ms in total.
    assert await d.replay(recorded, lambda e: seen_sync.append(e.seq), speed=1000) == 5
    assert seen_sync == [1, 2, 3, 4, 5]
    assert await d.replay([], handler) == 0
    with pytest.raises(ValueError):
        await d.replay(recorded, handler, speed=0)
    # Replay does not go through the live bus.
    assert d.last_seq == 0


async def test_backfill_is_read_in_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """A resume far behind the in-memory history reads the store page by page, in order."""
    import voltui.engine.events as events_module

    monkeypatch.setattr(events_module, "BACKFILL_PAGE", 100)
    d = EventDispatcher(history_size=50)
    stored = [Event(seq=i, ts=float(i), type="step:output", source="old") for i in range(1, 1001)]
    d.reset_seq(1000)
    d.add_sink(stored.append)  # the store keeps what memory drops
    for _ in range(60):
        d.emit("step:output", "new")
    calls: list[tuple[int, int]] = []

    async def backfill(since: int, upto: int) -> list[Event]:
        calls.append((since, upto))
        return [e for e in stored if since < e.seq <= upto]

    stream = d.subscribe("*", 0, backfill=backfill, max_batch=1000)
    got: list[int] = []
    async for batch in stream:
        got.extend(e.seq for e in batch)
        if got[-1] >= 1060:
            break
    await stream.aclose()
    assert got == list(range(1, 1061))
    assert all(hi - lo <= 100 for lo, hi in calls) and len(calls) == 11


async def test_resuming_across_a_leased_block_boundary_misses_nothing() -> None:
    # Numbers jump where a new block of seqs was leased (another engine took the ones between).
    blocks = iter([(1000, 2000)])
    dispatcher = EventDispatcher(history_size=100)
    dispatcher.reset_seq(0, limit=5, renew=lambda: next(blocks))
    for i in range(10):
        dispatcher.emit("t:x", "test", {"i": i})
    seqs = [e.seq for e in dispatcher.history()]
    assert seqs == [1, 2, 3, 4, 5, 1001, 1002, 1003, 1004, 1005]
    for since, wanted in ((3, [4, 5, 1001, 1002, 1003, 1004, 1005]), (1002, [1003, 1004, 1005])):
        sub = dispatcher.subscribe("*", since_seq=since)
        batch = await anext(sub)
        await sub.aclose()
        assert [e.seq for e in batch] == wanted
