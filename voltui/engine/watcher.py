"""SystemWatcher: periodic health checks of components plus process and host metrics.

The Orchestrator registers its own parts as in-process check functions; operators add external
dependencies (a database port, an HTTP endpoint, a probe command) as `[[watch]]` tables in the
config file. Every status change becomes an event, so the dashboard learns about trouble from the
event stream instead of polling, and the aggregate status gives the header one word to show.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import inspect
import logging
import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from urllib.parse import urlsplit

import psutil
from pydantic import BaseModel, ConfigDict, Field, model_validator

from voltui.engine.durations import format_duration
from voltui.engine.errors import NotFoundError, UserError
from voltui.engine.events import EventEmitter
from voltui.engine.models import (
    ComponentStatus,
    Duration,
    HealthStatus,
    Ident,
    Priority,
    SystemMetrics,
)

__all__ = [
    "CheckFn",
    "HealthCheckSpec",
    "SystemWatcher",
    "Thresholds",
]

log = logging.getLogger(__name__)

SOURCE = "watcher"
_MESSAGE_LIMIT = 500

CheckFn = Callable[[], Awaitable[tuple[HealthStatus, str]]]
"""An in-process check: returns (status, message). A bare bool is tolerated too."""

_SEVERITY = {
    HealthStatus.HEALTHY: 0,
    HealthStatus.UNKNOWN: 1,
    HealthStatus.DEGRADED: 2,
    HealthStatus.UNHEALTHY: 3,
}
"""Order used to decide whether a change is a worsening (HIGH priority) or a recovery."""


# --------------------------------------------------------------------------- config models


class HealthCheckSpec(BaseModel):
    """An external health check as written in the config file's `[[watch]]` tables.

    `target` depends on `kind`: python `pkg.mod:func` (sync or async, returning a bool or
    `(status, message)`), tcp `host:port`, http a URL (GET; 2xx/3xx healthy), command an argv
    list (exit 0 healthy; never run through a shell).
    """

    model_config = ConfigDict(extra="forbid")

    id: Ident
    name: str | None = None
    kind: Literal["python", "tcp", "http", "command"]
    target: str | list[str]
    interval: Duration = 30.0
    timeout: Duration = 5.0
    critical: bool = True

    @model_validator(mode="after")
    def _target_fits_kind(self) -> HealthCheckSpec:
        target = self.target
        if self.kind == "command":
            if not isinstance(target, list) or not target:
                raise ValueError(
                    'a command check\'s target is an argv list like ["pg_isready", "-q"] '
                    "(no shell is used)"
                )
        elif not isinstance(target, str):
            raise ValueError(f"a {self.kind} check's target is a string, not a list")
        elif self.kind == "python":
            if not re.fullmatch(r"[\w.]+:[\w.]+", target):
                raise ValueError(
                    f"python check target {target!r} should look like pkg.module:function"
                )
        elif self.kind == "tcp":
            _parse_host_port(target)
        elif self.kind == "http":
            parts = urlsplit(target)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(
                    f"http check target {target!r} should be a URL like http://host:8080/health"
                )
        if self.interval <= 0:
            raise ValueError("interval must be more than 0, e.g. 30s")
        if self.timeout <= 0:
            raise ValueError("timeout must be more than 0, e.g. 5s")
        return self

    @property
    def title(self) -> str:
        return self.name or self.id


class Thresholds(BaseModel):
    """Metric limits; exceeding any makes the system at least degraded. None disables one."""

    model_config = ConfigDict(extra="forbid")

    process_cpu_percent: float | None = 90.0
    cpu_samples: int = Field(
        3, ge=1, description="CPU counts once this many samples in a row average above the limit"
    )
    process_rss_bytes: int | None = 2 * 1024**3
    host_memory_percent: float | None = 95.0
    open_files: int | None = 1000


# --------------------------------------------------------------------------- check builders


def _parse_host_port(target: str) -> tuple[str, int]:
    host, sep, port_text = target.rpartition(":")
    host = host.strip("[]")  # [::1]:5432
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"tcp check target {target!r} should look like host:port, e.g. db:5432")
    return host, int(port_text)


def _normalize(result: object) -> tuple[HealthStatus, str]:
    """Accept the result shapes checks are allowed to return, reject anything else loudly."""
    if isinstance(result, bool):
        return (HealthStatus.HEALTHY, "ok") if result else (HealthStatus.UNHEALTHY, "check failed")
    if isinstance(result, HealthStatus | str):
        return HealthStatus(result), ""
    if isinstance(result, tuple) and len(result) == 2:
        status, message = result
        try:
            return HealthStatus(status), str(message)
        except ValueError:
            pass
    raise TypeError(f"check returned {result!r}; expected a bool or (status, message)")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _resolve_callable(target: str) -> Callable[[], Any]:
    module_name, _, attr_path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    if not callable(obj):
        raise TypeError(f"{target} is not callable")
    return obj  # type: ignore[no-any-return]


def _python_check(target: str) -> CheckFn:
    """Import lazily, at the first check, so a broken module shows as unhealthy, not a crash."""
    resolved: list[Callable[[], Any]] = []

    async def check() -> tuple[HealthStatus, str]:
        if not resolved:
            resolved.append(_resolve_callable(target))
        fn = resolved[0]
        if inspect.iscoroutinefunction(fn):
            result = await fn()
        else:
            # A sync check is usually blocking I/O; a thread keeps the loop and timeouts alive.
            result = await asyncio.to_thread(fn)
            if inspect.isawaitable(result):
                result = await result
        return _normalize(result)

    return check


def _tcp_check(target: str) -> CheckFn:
    host, port = _parse_host_port(target)

    async def check() -> tuple[HealthStatus, str]:
        _reader, writer = await asyncio.open_connection(host, port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return HealthStatus.HEALTHY, f"connected to {target}"

    return check


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect answer is itself the health signal (3xx healthy); do not follow it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _http_status(url: str, timeout: float) -> int:
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, method="GET", headers={"User-Agent": "voltui-watcher"})
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def _http_check(url: str, timeout: float) -> CheckFn:
    async def check() -> tuple[HealthStatus, str]:
        # urllib's own timeout bounds the worker thread even after the check is abandoned.
        code = await asyncio.to_thread(_http_status, url, timeout)
        status = HealthStatus.HEALTHY if 200 <= code < 400 else HealthStatus.UNHEALTHY
        return status, f"HTTP {code}"

    return check


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the check's whole process group, so helpers it forked die with it."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()


def _last_line(output: bytes) -> str:
    lines = [ln.strip() for ln in output.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


# --------------------------------------------------------------------------- the watcher


@dataclasses.dataclass(eq=False)
class _Component:
    id: str
    name: str
    kind: str
    check: CheckFn
    interval: float
    timeout: float
    critical: bool
    status: ComponentStatus
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None


class SystemWatcher:
    """Runs each component's check on its own interval and samples metrics on another.

    A check that raises or exceeds its timeout counts as unhealthy with the reason as message;
    the watcher itself never stops because a check misbehaved.
    """

    def __init__(
        self,
        dispatcher: EventEmitter,
        *,
        health_interval: float = 30.0,
        metrics_interval: float = 5.0,
        thresholds: Thresholds | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._dispatcher = dispatcher
        self._health_interval = health_interval
        self._metrics_interval = metrics_interval
        self._thresholds = thresholds or Thresholds()
        self._cpu_recent: deque[float] = deque(maxlen=self._thresholds.cpu_samples)
        self._clock = clock
        self._components: dict[str, _Component] = {}
        self._metrics: SystemMetrics | None = None
        self._metrics_task: asyncio.Task[None] | None = None
        self._metrics_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._procs: set[asyncio.subprocess.Process] = set()
        self._running = False
        self._last_health = HealthStatus.UNKNOWN
        # cpu_percent(None) measures since the previous call: prime both so the first sample
        # covers the time since construction instead of reading 0.0.
        self._process = psutil.Process()
        self._process.cpu_percent(None)
        psutil.cpu_percent(interval=None)

    # ------------------------------------------------------------------ registration

    def register_component(
        self,
        id: str,
        name: str,
        kind: str,
        check: CheckFn | HealthCheckSpec,
        *,
        interval: float | None = None,
        timeout: float | None = None,
        critical: bool = True,
    ) -> None:
        """Watch a component. With a HealthCheckSpec, its interval/timeout/critical apply
        unless `interval`/`timeout` are passed here; `critical` comes from the spec."""
        if id in self._components:
            raise UserError(f"health check id {id!r} is registered twice; give each a unique id")
        if isinstance(check, HealthCheckSpec):
            spec = check
            interval = spec.interval if interval is None else interval
            timeout = spec.timeout if timeout is None else timeout
            critical = spec.critical
            fn = self._build_check(spec, timeout)
        else:
            fn = check
            interval = self._health_interval if interval is None else interval
            timeout = 5.0 if timeout is None else timeout
        if interval <= 0 or timeout <= 0:
            raise ValueError("interval and timeout must be more than 0")
        comp = _Component(
            id=id,
            name=name,
            kind=kind,
            check=fn,
            interval=interval,
            timeout=timeout,
            critical=critical,
            status=ComponentStatus(id=id, name=name, kind=kind),
        )
        self._components[id] = comp
        if self._running:
            self._start_loop(comp)

    def register_spec(self, spec: HealthCheckSpec) -> None:
        """Shorthand for a `[[watch]]` entry: id, name and kind come from the spec."""
        self.register_component(spec.id, spec.title, spec.kind, spec)

    def unregister_component(self, id: str) -> None:
        comp = self._components.pop(id, None)
        if comp is None:
            raise NotFoundError(f"no health check with id {id!r}")
        if comp.task is not None:
            comp.task.cancel()
            # stop() awaits it, so a check subprocess it owned is reaped before we return.
            self._retiring.add(comp.task)
            comp.task.add_done_callback(self._retiring.discard)
            comp.task = None
        self._refresh_health()

    def _build_check(self, spec: HealthCheckSpec, timeout: float) -> CheckFn:
        target = spec.target
        if spec.kind == "python":
            assert isinstance(target, str)
            return _python_check(target)
        if spec.kind == "tcp":
            assert isinstance(target, str)
            return _tcp_check(target)
        if spec.kind == "http":
            assert isinstance(target, str)
            return _http_check(target, timeout)
        assert isinstance(target, list)
        return self._command_check(list(target))

    def _command_check(self, argv: list[str]) -> CheckFn:
        async def check() -> tuple[HealthStatus, str]:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=os.name == "posix",
            )
            self._procs.add(proc)
            try:
                output, _ = await proc.communicate()
            finally:
                # Timeout and stop() arrive as cancellation: never leave the probe running.
                if proc.returncode is None:
                    _kill_group(proc)
                    await proc.wait()
                self._procs.discard(proc)
            code = proc.returncode
            detail = _last_line(output)
            if code == 0:
                return HealthStatus.HEALTHY, detail or "exit code 0"
            return HealthStatus.UNHEALTHY, f"exit code {code}" + (f": {detail}" if detail else "")

        return check

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start one loop per component and the metrics loop; each runs its first round now."""
        if self._running:
            return
        self._running = True
        for comp in self._components.values():
            self._start_loop(comp)
        self._metrics_task = asyncio.create_task(self._metrics_loop(), name="watcher:metrics")

    async def stop(self) -> None:
        """Cancel every loop, kill any check subprocess, and wait until all of it is gone."""
        self._running = False
        tasks: list[asyncio.Task[None]] = list(self._retiring)
        for comp in self._components.values():
            if comp.task is not None:
                tasks.append(comp.task)
                comp.task = None
        if self._metrics_task is not None:
            tasks.append(self._metrics_task)
            self._metrics_task = None
        for task in tasks:
            task.cancel()
        # Probes started by check_now() belong to callers' tasks; kill them directly.
        for proc in list(self._procs):
            _kill_group(proc)
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start_loop(self, comp: _Component) -> None:
        comp.task = asyncio.create_task(self._component_loop(comp), name=f"watcher:{comp.id}")

    async def _component_loop(self, comp: _Component) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                await self._run_check(comp)
            except Exception:  # a bug here must not end health checking for good
                log.exception("health check loop for %s failed", comp.id)
            await asyncio.sleep(max(0.0, comp.interval - (loop.time() - began)))

    async def _metrics_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                await self.collect_metrics()
            except Exception:
                log.exception("metrics sample failed")
            await asyncio.sleep(max(0.0, self._metrics_interval - (loop.time() - began)))

    # ------------------------------------------------------------------ checks

    async def check_now(self, id: str | None = None) -> list[ComponentStatus]:
        """Run one component's check (or all of them) now and return the fresh statuses."""
        if id is None:
            comps = list(self._components.values())
        else:
            comp = self._components.get(id)
            if comp is None:
                raise NotFoundError(f"no health check with id {id!r}")
            comps = [comp]
        results = await asyncio.gather(*(self._run_check(c) for c in comps))
        return sorted(results, key=lambda s: s.id)

    async def _run_check(self, comp: _Component) -> ComponentStatus:
        # One check per component at a time: check_now() and the loop never race on a probe.
        async with comp.lock:
            began = time.perf_counter()
            timeout_cm = asyncio.timeout(comp.timeout)
            try:
                async with timeout_cm:
                    status, message = _normalize(await comp.check())
            except TimeoutError as exc:
                status = HealthStatus.UNHEALTHY
                if timeout_cm.expired():
                    message = f"timed out after {format_duration(comp.timeout)}"
                else:
                    message = _describe(exc)
            except Exception as exc:
                status, message = HealthStatus.UNHEALTHY, _describe(exc)
            latency = time.perf_counter() - began
            previous = comp.status.status
            comp.status = ComponentStatus(
                id=comp.id,
                name=comp.name,
                kind=comp.kind,
                status=status,
                last_check=self._clock(),
                latency=latency,
                message=message[:_MESSAGE_LIMIT],
            )
            if self._components.get(comp.id) is not comp:
                return comp.status.model_copy()  # unregistered meanwhile: report nothing
            # Every check, changed or not, so a dashboard shows when each component was last
            # checked and how long it took (low priority: it is a heartbeat, not news).
            self._emit(
                "health:checked",
                {
                    "component": comp.id,
                    "name": comp.name,
                    "kind": comp.kind,
                    "status": status.value,
                    "message": comp.status.message,
                    "latency": latency,
                    "checked_at": comp.status.last_check,
                },
                Priority.LOW,
            )
            if status != previous:
                worse = _SEVERITY[status] > _SEVERITY[previous]
                self._emit(
                    "health:changed",
                    {
                        "component": comp.id,
                        "name": comp.name,
                        "previous": previous.value,
                        "status": status.value,
                        "message": comp.status.message,
                        "latency": latency,
                    },
                    Priority.HIGH if worse else Priority.NORMAL,
                )
            self._refresh_health()
            return comp.status.model_copy()

    # ------------------------------------------------------------------ views

    def components(self) -> list[ComponentStatus]:
        return [self._components[k].status.model_copy() for k in sorted(self._components)]

    def health(self) -> HealthStatus:
        """Aggregate status; `unknown` only until the first check or metrics sample."""
        return self._evaluate()[0]

    def health_reasons(self) -> list[str]:
        """Why the aggregate is not healthy, one short line per cause."""
        return self._evaluate()[1]

    def metrics(self) -> SystemMetrics | None:
        return self._metrics

    def _evaluate(self) -> tuple[HealthStatus, list[str]]:
        worst = HealthStatus.HEALTHY
        reasons: list[str] = []
        observed = self._metrics is not None

        def worsen(level: HealthStatus) -> None:
            nonlocal worst
            if _SEVERITY[level] > _SEVERITY[worst]:
                worst = level

        for key in sorted(self._components):
            comp = self._components[key]
            st = comp.status
            if st.last_check is None:
                continue
            observed = True
            detail = f" ({st.message})" if st.message else ""
            if st.status == HealthStatus.UNHEALTHY:
                if comp.critical:
                    worsen(HealthStatus.UNHEALTHY)
                    reasons.append(f"{comp.name}: unhealthy{detail}")
                else:
                    worsen(HealthStatus.DEGRADED)
                    reasons.append(f"{comp.name}: unhealthy, not critical{detail}")
            elif st.status in (HealthStatus.DEGRADED, HealthStatus.UNKNOWN):
                # A check that cannot tell is a warning, not a pass.
                worsen(HealthStatus.DEGRADED)
                reasons.append(f"{comp.name}: {st.status.value}{detail}")
        if self._metrics is not None:
            breaches = self._breaches(self._metrics)
            if breaches:
                worsen(HealthStatus.DEGRADED)
                reasons.extend(breaches)
        if not observed:
            return HealthStatus.UNKNOWN, []
        return worst, reasons

    def _breaches(self, m: SystemMetrics) -> list[str]:
        t = self._thresholds
        out: list[str] = []
        full = len(self._cpu_recent) == self._cpu_recent.maxlen  # sustained, not a spike
        cpu = sum(self._cpu_recent) / len(self._cpu_recent) if full else 0.0
        if t.process_cpu_percent is not None and cpu > t.process_cpu_percent:
            n = len(self._cpu_recent)
            out.append(f"process CPU {cpu:.0f}% > {t.process_cpu_percent:g}% (mean of {n} samples)")
        if t.process_rss_bytes is not None and m.process_rss_bytes > t.process_rss_bytes:
            out.append(
                f"process memory {_fmt_bytes(m.process_rss_bytes)} > "
                f"{_fmt_bytes(t.process_rss_bytes)}"
            )
        if t.host_memory_percent is not None and m.host_memory_percent > t.host_memory_percent:
            out.append(f"host memory {m.host_memory_percent:.0f}% > {t.host_memory_percent:g}%")
        if t.open_files is not None and m.process_open_files > t.open_files:
            out.append(f"open files {m.process_open_files} > {t.open_files}")
        return out

    def _refresh_health(self) -> None:
        status, reasons = self._evaluate()
        previous = self._last_health
        if status == previous:
            return
        self._last_health = status
        worse = _SEVERITY[status] > _SEVERITY[previous]
        self._emit(
            "health:system",
            {"previous": previous.value, "status": status.value, "reasons": reasons},
            Priority.HIGH if worse else Priority.NORMAL,
        )

    def _emit(self, type_: str, data: dict[str, Any], priority: Priority) -> None:
        try:
            self._dispatcher.emit(type_, SOURCE, data, priority=priority)
        except Exception:  # a failing subscriber must not stop health checks
            log.exception("emitting %s failed", type_)

    # ------------------------------------------------------------------ metrics

    async def collect_metrics(self) -> SystemMetrics:
        """Take a sample now: store it, emit `metrics:system`, and re-evaluate health."""
        async with self._metrics_lock:  # cpu_percent deltas assume one sampler at a time
            ts = self._clock()
            sample = await asyncio.to_thread(self._sample, ts)
            self._metrics = sample
            self._cpu_recent.append(sample.process_cpu_percent)
        self._emit("metrics:system", sample.model_dump(), Priority.LOW)
        self._refresh_health()
        return sample

    def _sample(self, ts: float) -> SystemMetrics:
        proc = self._process
        with proc.oneshot():
            cpu = proc.cpu_percent(None)
            rss = proc.memory_info().rss
            try:
                if hasattr(proc, "num_fds"):
                    files = proc.num_fds()
                else:
                    files = len(proc.open_files())
            except psutil.AccessDenied:
                files = 0
        try:
            load = os.getloadavg()
        except (AttributeError, OSError):  # Windows, or no /proc/loadavg
            load = (0.0, 0.0, 0.0)
        return SystemMetrics(
            ts=ts,
            process_cpu_percent=cpu,
            process_rss_bytes=rss,
            process_open_files=files,
            host_cpu_percent=psutil.cpu_percent(interval=None),
            host_memory_percent=psutil.virtual_memory().percent,
            load_avg=(load[0], load[1], load[2]),
        )


def _fmt_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"
