"""SystemWatcher: real probes (TCP server, HTTP server, subprocesses), aggregation and events."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import socket
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from pydantic import ValidationError

from voltui.engine.errors import NotFoundError, UserError
from voltui.engine.models import HealthStatus, Priority, SystemMetrics
from voltui.engine.watcher import HealthCheckSpec, SystemWatcher, Thresholds

FIXED_TS = 1_700_000_000.0


@dataclass
class Emitted:
    type: str
    source: str
    data: dict[str, Any]
    priority: Priority


@dataclass
class Recorder:
    """Stands in for EventDispatcher: same `emit` signature, keeps everything it is given."""

    events: list[Emitted] = field(default_factory=list)
    _signal: asyncio.Event = field(default_factory=asyncio.Event)

    def emit(
        self,
        type: str,
        source: str,
        data: dict[str, Any] | None = None,
        *,
        priority: Priority = Priority.NORMAL,
        correlation_id: str | None = None,
    ) -> None:
        self.events.append(Emitted(type, source, dict(data or {}), priority))
        self._signal.set()

    def of(self, type_: str) -> list[Emitted]:
        return [e for e in self.events if e.type == type_]

    async def wait_until(self, predicate: Callable[[], bool], limit: float = 10.0) -> None:
        async with asyncio.timeout(limit):
            while not predicate():
                self._signal.clear()
                await self._signal.wait()


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def watcher(rec: Recorder) -> Iterator[SystemWatcher]:
    yield SystemWatcher(rec, health_interval=60.0, clock=lambda: FIXED_TS)


def fixed(status: HealthStatus | str, message: str = "") -> Any:
    async def check() -> tuple[HealthStatus, str]:
        return HealthStatus(status), message

    return check


class Switch:
    """A check whose answer the test flips, and that counts how often it ran."""

    def __init__(self, status: HealthStatus = HealthStatus.HEALTHY) -> None:
        self.status = status
        self.calls = 0

    async def __call__(self) -> tuple[HealthStatus, str]:
        self.calls += 1
        return self.status, f"call {self.calls}"


# --------------------------------------------------------------------------- python checks


@pytest.fixture
def check_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"hc_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import asyncio

            def ok():
                return True

            def bad():
                return False

            async def slow_but_fine():
                return ("degraded", "replica lag 4s")

            def boom():
                raise RuntimeError("database is on fire")

            async def hang():
                await asyncio.sleep(60)

            def weird():
                return 42
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def py_spec(cid: str, target: str, **kw: Any) -> HealthCheckSpec:
    return HealthCheckSpec(id=cid, kind="python", target=target, **kw)


async def test_python_checks_from_module(
    watcher: SystemWatcher, check_module: str, rec: Recorder
) -> None:
    watcher.register_spec(py_spec("ok", f"{check_module}:ok"))
    watcher.register_spec(py_spec("bad", f"{check_module}:bad"))
    watcher.register_spec(py_spec("slow", f"{check_module}:slow_but_fine"))
    watcher.register_spec(py_spec("boom", f"{check_module}:boom"))
    watcher.register_spec(py_spec("weird", f"{check_module}:weird"))
    watcher.register_spec(py_spec("missing", "no_such_module_xyz:check"))

    results = {s.id: s for s in await watcher.check_now()}

    assert [s.id for s in watcher.components()] == sorted(results)
    assert results["ok"].status == HealthStatus.HEALTHY
    assert results["bad"].status == HealthStatus.UNHEALTHY
    assert results["slow"].status == HealthStatus.DEGRADED
    assert results["slow"].message == "replica lag 4s"
    assert results["boom"].status == HealthStatus.UNHEALTHY
    assert "RuntimeError: database is on fire" in results["boom"].message
    assert results["weird"].status == HealthStatus.UNHEALTHY
    assert "42" in results["weird"].message
    assert results["missing"].status == HealthStatus.UNHEALTHY
    assert "ModuleNotFoundError" in results["missing"].message
    for s in results.values():
        assert s.last_check == FIXED_TS
        assert s.latency is not None and s.latency >= 0
        assert s.kind == "python"


async def test_python_check_timeout(watcher: SystemWatcher, check_module: str) -> None:
    watcher.register_spec(py_spec("hang", f"{check_module}:hang", timeout="200ms"))
    began = time.monotonic()
    [status] = await watcher.check_now("hang")
    assert time.monotonic() - began < 5
    assert status.status == HealthStatus.UNHEALTHY
    assert "timed out" in status.message


async def test_in_process_check_raising_and_timing_out(watcher: SystemWatcher) -> None:
    async def raises() -> tuple[HealthStatus, str]:
        raise ConnectionError("store closed")

    async def sleeps() -> tuple[HealthStatus, str]:
        await asyncio.sleep(30)
        return HealthStatus.HEALTHY, ""

    watcher.register_component("store", "Run store", "store", raises)
    watcher.register_component("agents", "Agents", "agents", sleeps, timeout=0.1)
    watcher.register_component("events", "Dispatcher", "events", fixed("healthy", "ok"))
    res = {s.id: s for s in await watcher.check_now()}
    assert res["store"].status == HealthStatus.UNHEALTHY
    assert res["store"].message == "ConnectionError: store closed"
    assert res["agents"].status == HealthStatus.UNHEALTHY
    assert "timed out" in res["agents"].message
    assert res["events"].status == HealthStatus.HEALTHY


# --------------------------------------------------------------------------- tcp / http


async def test_tcp_check_open_and_closed_port(watcher: SystemWatcher) -> None:
    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with socket.socket() as s:  # a port that was free a moment ago and is closed now
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    try:
        watcher.register_spec(HealthCheckSpec(id="db", kind="tcp", target=f"127.0.0.1:{port}"))
        watcher.register_spec(
            HealthCheckSpec(id="gone", kind="tcp", target=f"127.0.0.1:{closed_port}")
        )
        res = {s.id: s for s in await watcher.check_now()}
    finally:
        server.close()
        await server.wait_closed()
    assert res["db"].status == HealthStatus.HEALTHY
    assert res["gone"].status == HealthStatus.UNHEALTHY
    assert res["gone"].message  # the OS error, shown to the operator


@contextlib.contextmanager
def http_server(codes: list[int]) -> Iterator[int]:
    answers = iter(codes)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = next(answers)
            self.send_response(code)
            if 300 <= code < 400:
                self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_http_check_200_redirect_then_500(
    watcher: SystemWatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with http_server([200, 302, 500]) as port:
        watcher.register_spec(
            HealthCheckSpec(id="api", kind="http", target=f"http://127.0.0.1:{port}/health")
        )
        [first] = await watcher.check_now("api")
        [second] = await watcher.check_now("api")
        [third] = await watcher.check_now("api")
    assert (first.status, first.message) == (HealthStatus.HEALTHY, "HTTP 200")
    # the redirect is not followed (its target is a dead port): 3xx itself counts as healthy
    assert (second.status, second.message) == (HealthStatus.HEALTHY, "HTTP 302")
    assert (third.status, third.message) == (HealthStatus.UNHEALTHY, "HTTP 500")


# --------------------------------------------------------------------------- command checks


def cmd_spec(cid: str, code: str, **kw: Any) -> HealthCheckSpec:
    return HealthCheckSpec(id=cid, kind="command", target=[sys.executable, "-c", code], **kw)


def children_with(marker: str) -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if any(marker in part for part in child.cmdline()):
                found.append(child)
    return found


async def wait_for_child(marker: str, limit: float = 10.0) -> psutil.Process:
    async with asyncio.timeout(limit):
        # nothing signals a fork, so polling the process table is the only way to see it
        while not (found := children_with(marker)):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    return found[0]


def gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_command_check_exit_codes(watcher: SystemWatcher) -> None:
    watcher.register_spec(cmd_spec("fails", "raise SystemExit(1)"))
    watcher.register_spec(cmd_spec("works", "print('pong')"))
    watcher.register_spec(
        HealthCheckSpec(id="absent", kind="command", target=["/nonexistent/voltui-probe"])
    )
    res = {s.id: s for s in await watcher.check_now()}
    assert res["fails"].status == HealthStatus.UNHEALTHY
    assert res["fails"].message.startswith("exit code 1")
    assert (res["works"].status, res["works"].message) == (HealthStatus.HEALTHY, "pong")
    assert res["absent"].status == HealthStatus.UNHEALTHY
    assert "FileNotFoundError" in res["absent"].message


async def test_hanging_command_is_killed_on_timeout(watcher: SystemWatcher) -> None:
    marker = f"watcher-hang-{uuid.uuid4().hex}"
    watcher.register_spec(cmd_spec("hang", f"import time; time.sleep(60)  # {marker}", timeout=1.5))
    check = asyncio.create_task(watcher.check_now("hang"))
    child = await wait_for_child(marker)
    [status] = await check
    assert status.status == HealthStatus.UNHEALTHY
    assert "timed out" in status.message
    assert gone(child)
    assert children_with(marker) == []


async def test_stop_kills_running_check_subprocess(rec: Recorder) -> None:
    watcher = SystemWatcher(rec, metrics_interval=60.0)
    marker = f"watcher-stop-{uuid.uuid4().hex}"
    watcher.register_spec(cmd_spec("hang", f"import time; time.sleep(60)  # {marker}", timeout=60))
    await watcher.start()
    child = await wait_for_child(marker)
    await watcher.stop()
    assert gone(child)
    assert children_with(marker) == []


# --------------------------------------------------------------------------- aggregation


async def test_aggregate_unknown_until_something_is_checked(watcher: SystemWatcher) -> None:
    watcher.register_component("a", "A", "x", fixed("healthy"))
    assert watcher.health() == HealthStatus.UNKNOWN
    assert watcher.components()[0].status == HealthStatus.UNKNOWN
    await watcher.check_now()
    assert watcher.health() == HealthStatus.HEALTHY
    assert watcher.health_reasons() == []


@pytest.mark.parametrize(
    ("critical", "expected"),
    [(True, HealthStatus.UNHEALTHY), (False, HealthStatus.DEGRADED)],
)
async def test_aggregate_critical_vs_non_critical(
    watcher: SystemWatcher, critical: bool, expected: HealthStatus
) -> None:
    watcher.register_component("ok", "Fine", "x", fixed("healthy"))
    watcher.register_component("db", "Database", "x", fixed("unhealthy", "down"), critical=critical)
    await watcher.check_now()
    assert watcher.health() == expected
    [reason] = watcher.health_reasons()
    assert "Database" in reason and "down" in reason


async def test_aggregate_degraded_component_and_spec_critical(
    watcher: SystemWatcher, check_module: str
) -> None:
    watcher.register_component("slow", "Slow", "x", fixed("degraded", "lagging"))
    await watcher.check_now()
    assert watcher.health() == HealthStatus.DEGRADED
    # a spec's own `critical` decides: a failing non-critical spec only degrades
    watcher.register_spec(py_spec("opt", f"{check_module}:bad", critical=False))
    await watcher.check_now("opt")
    assert watcher.health() == HealthStatus.DEGRADED
    watcher.register_spec(py_spec("must", f"{check_module}:bad"))
    await watcher.check_now("must")
    assert watcher.health() == HealthStatus.UNHEALTHY
    watcher.unregister_component("must")
    assert watcher.health() == HealthStatus.DEGRADED


# --------------------------------------------------------------------------- events


async def test_events_only_on_change(watcher: SystemWatcher, rec: Recorder) -> None:
    sw = Switch()
    watcher.register_component("store", "Run store", "store", sw)

    await watcher.check_now("store")
    [first] = rec.of("health:changed")
    assert first.source == "watcher"
    assert first.priority == Priority.NORMAL
    assert first.data["component"] == "store"
    assert first.data["name"] == "Run store"
    assert (first.data["previous"], first.data["status"]) == ("unknown", "healthy")
    assert first.data["message"] == "call 1"
    assert first.data["latency"] >= 0
    [sys1] = rec.of("health:system")
    assert sys1.data == {"previous": "unknown", "status": "healthy", "reasons": []}

    await watcher.check_now("store")
    await watcher.check_now("store")
    assert len(rec.of("health:changed")) == 1  # same status, new message: no event
    assert len(rec.of("health:system")) == 1

    sw.status = HealthStatus.UNHEALTHY
    await watcher.check_now("store")
    worse = rec.of("health:changed")[-1]
    assert (worse.data["previous"], worse.data["status"]) == ("healthy", "unhealthy")
    assert worse.priority == Priority.HIGH
    sys2 = rec.of("health:system")[-1]
    assert (sys2.data["previous"], sys2.data["status"]) == ("healthy", "unhealthy")
    assert sys2.priority == Priority.HIGH
    assert sys2.data["reasons"] == ["Run store: unhealthy (call 4)"]

    await watcher.check_now("store")
    assert len(rec.of("health:changed")) == 2

    sw.status = HealthStatus.HEALTHY
    await watcher.check_now("store")
    better = rec.of("health:changed")[-1]
    assert (better.data["previous"], better.data["status"]) == ("unhealthy", "healthy")
    assert better.priority == Priority.NORMAL
    assert rec.of("health:system")[-1].priority == Priority.NORMAL
    assert len(rec.of("health:changed")) == 3
    assert len(rec.of("health:system")) == 3


async def test_every_check_emits_health_checked(watcher: SystemWatcher, rec: Recorder) -> None:
    """A check that changes nothing still reports its time and latency (low priority), so a
    dashboard's health panel is live rather than frozen at the last change of status."""
    sw = Switch()
    watcher.register_component("store", "Run store", "store", sw)
    for _ in range(3):
        await watcher.check_now("store")
    checks = rec.of("health:checked")
    assert len(checks) == 3 and len(rec.of("health:changed")) == 1
    assert [c.data["message"] for c in checks] == ["call 1", "call 2", "call 3"]
    last = checks[-1]
    assert last.priority == Priority.LOW
    assert last.data["component"] == "store" and last.data["name"] == "Run store"
    assert last.data["kind"] == "store" and last.data["status"] == "healthy"
    assert last.data["latency"] >= 0
    [status] = watcher.components()
    assert last.data["checked_at"] == status.last_check


async def test_failing_dispatcher_does_not_break_checks() -> None:
    class Broken:
        def emit(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("subscriber exploded")

    watcher = SystemWatcher(Broken())
    watcher.register_component("a", "A", "x", fixed("unhealthy", "no"))
    [status] = await watcher.check_now()
    assert status.status == HealthStatus.UNHEALTHY
    assert watcher.health() == HealthStatus.UNHEALTHY


# --------------------------------------------------------------------------- metrics


async def test_collect_metrics_sane_values(watcher: SystemWatcher, rec: Recorder) -> None:
    cpu_start = time.process_time()
    while time.process_time() - cpu_start < 0.3:  # burn CPU so our cpu% has something to show
        sum(range(10_000))
    m = await watcher.collect_metrics()
    assert m.ts == FIXED_TS
    assert m.process_cpu_percent > 0
    assert m.process_rss_bytes > 1024 * 1024
    assert m.process_open_files > 0
    assert 0 <= m.host_cpu_percent <= 100
    assert 0 < m.host_memory_percent <= 100
    assert len(m.load_avg) == 3 and all(x >= 0 for x in m.load_avg)
    assert watcher.metrics() == m
    [ev] = rec.of("metrics:system")
    assert ev.priority == Priority.LOW
    assert ev.source == "watcher"
    assert ev.data == m.model_dump()
    # the CPU we just burned may cross the 90% line; nothing else is near a default threshold
    assert all(r.startswith("process CPU") for r in watcher.health_reasons())


async def test_thresholds_make_health_degraded(rec: Recorder) -> None:
    # CPU off: a busy test machine can push this process over 90% within one short window
    watcher = SystemWatcher(
        rec, thresholds=Thresholds(process_rss_bytes=1, process_cpu_percent=None)
    )
    watcher.register_component("a", "A", "x", fixed("healthy"))
    await watcher.check_now()
    assert watcher.health() == HealthStatus.HEALTHY
    await watcher.collect_metrics()
    assert watcher.health() == HealthStatus.DEGRADED
    [reason] = watcher.health_reasons()
    assert "process memory" in reason and "> 1 B" in reason
    last = rec.of("health:system")[-1]
    assert (last.data["previous"], last.data["status"]) == ("healthy", "degraded")
    assert last.priority == Priority.HIGH
    # a critical failure still wins over a mere threshold
    watcher.register_component("b", "B", "x", fixed("unhealthy"))
    await watcher.check_now("b")
    assert watcher.health() == HealthStatus.UNHEALTHY


async def test_disabled_thresholds_are_ignored(rec: Recorder) -> None:
    watcher = SystemWatcher(
        rec,
        thresholds=Thresholds(
            process_cpu_percent=None,
            process_rss_bytes=None,
            host_memory_percent=None,
            open_files=0,
        ),
    )
    await watcher.collect_metrics()
    assert watcher.health() == HealthStatus.DEGRADED
    assert [r for r in watcher.health_reasons() if "open files" in r]
    assert len(watcher.health_reasons()) == 1


# --------------------------------------------------------------------------- lifecycle


async def test_start_stop_runs_loops_and_leaves_no_tasks(rec: Recorder) -> None:
    before = asyncio.all_tasks()
    watcher = SystemWatcher(rec, health_interval=0.02, metrics_interval=0.02)
    a, b, late = Switch(), Switch(), Switch()
    watcher.register_component("a", "A", "x", a)
    watcher.register_component("b", "B", "x", b, critical=False)
    await watcher.start()
    await watcher.start()  # idempotent
    await rec.wait_until(lambda: a.calls >= 3 and b.calls >= 3)
    await rec.wait_until(lambda: len(rec.of("metrics:system")) >= 2)
    assert watcher.metrics() is not None

    watcher.register_component("late", "Late", "x", late)  # joins the running watcher
    await rec.wait_until(lambda: late.calls >= 2)
    watcher.unregister_component("b")
    frozen = b.calls
    target = a.calls + 3
    await rec.wait_until(lambda: a.calls >= target)
    assert b.calls <= frozen + 1  # at most the check already in flight
    assert [s.id for s in watcher.components()] == ["a", "late"]

    await watcher.stop()
    await watcher.stop()  # idempotent
    assert asyncio.all_tasks() - before == set()

    calls = a.calls
    await asyncio.sleep(0.1)
    assert a.calls == calls  # nothing keeps polling after stop

    await watcher.start()  # and it can start again
    await rec.wait_until(lambda: a.calls > calls)
    await watcher.stop()
    assert asyncio.all_tasks() - before == set()


async def test_first_check_runs_at_once(rec: Recorder) -> None:
    watcher = SystemWatcher(
        rec,
        health_interval=3600,
        metrics_interval=3600,
        thresholds=Thresholds(process_cpu_percent=None),
    )
    sw = Switch()
    watcher.register_component("a", "A", "x", sw)
    await watcher.start()
    try:
        await rec.wait_until(lambda: sw.calls == 1 and watcher.metrics() is not None)
        assert watcher.health() == HealthStatus.HEALTHY
    finally:
        await watcher.stop()


# --------------------------------------------------------------------------- registration


async def test_registration_errors(watcher: SystemWatcher) -> None:
    watcher.register_component("a", "A", "x", fixed("healthy"))
    with pytest.raises(UserError, match="twice"):
        watcher.register_component("a", "A again", "x", fixed("healthy"))
    with pytest.raises(NotFoundError):
        await watcher.check_now("nope")
    with pytest.raises(NotFoundError):
        watcher.unregister_component("nope")
    with pytest.raises(ValueError):
        watcher.register_component("z", "Z", "x", fixed("healthy"), interval=0)


def test_spec_parses_durations_and_names() -> None:
    spec = HealthCheckSpec.model_validate(
        {"id": "db", "kind": "tcp", "target": "[::1]:5432", "interval": "1m", "timeout": "250ms"}
    )
    assert (spec.interval, spec.timeout, spec.critical) == (60.0, 0.25, True)
    assert spec.title == "db"


@pytest.mark.parametrize(
    "raw",
    [
        {"id": "a", "kind": "tcp", "target": "localhost"},
        {"id": "a", "kind": "tcp", "target": "localhost:99999"},
        {"id": "a", "kind": "http", "target": "ftp://example.com/"},
        {"id": "a", "kind": "python", "target": "not a target"},
        {"id": "a", "kind": "command", "target": "pg_isready -q"},
        {"id": "a", "kind": "command", "target": []},
        {"id": "a", "kind": "python", "target": ["m:f"]},
        {"id": "a", "kind": "tcp", "target": "h:1", "interval": 0},
        {"id": "a", "kind": "tcp", "target": "h:1", "bogus": 1},
        {"id": "a", "kind": "smtp", "target": "h:25"},
    ],
)
def test_spec_rejects_bad_entries(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        HealthCheckSpec.model_validate(raw)


def test_thresholds_forbid_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        Thresholds.model_validate({"cpu": 50})


async def test_cpu_threshold_needs_a_sustained_mean_not_one_spike(rec: Recorder) -> None:
    watcher = SystemWatcher(
        rec,
        thresholds=Thresholds(process_cpu_percent=90, cpu_samples=3, process_rss_bytes=None),
    )
    readings = iter([99.0, 20.0, 30.0, 95.0, 95.0, 95.0])

    def fake_sample(ts: float) -> SystemMetrics:
        return SystemMetrics(ts=ts, process_cpu_percent=next(readings))

    watcher._sample = fake_sample  # type: ignore[method-assign]
    healths = []
    for _ in range(6):
        await watcher.collect_metrics()
        healths.append(watcher.health())
    assert healths[:5] == [HealthStatus.HEALTHY] * 5  # 99 alone, then means 49.7, 48.3, 73.3
    assert healths[5] == HealthStatus.DEGRADED  # 95, 95, 95
    assert "mean of 3 samples" in watcher.health_reasons()[0]
