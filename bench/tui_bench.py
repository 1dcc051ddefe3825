"""How much the dashboard costs while the engine floods it with events.

    python bench/tui_bench.py [--seconds 10] [--rate 5000] [--source workflow|synthetic]
                              [--headless] [--profile FILE] [--only flood|actions]

Three phases run one after the other in this process, each on a fresh embedded `Orchestrator`
(SQLite file in a temporary folder); the first two have one simulated agent with a large capacity:

1. engine only: the flood runs with no app; its CPU use is the baseline.
2. engine + VoltApp at 160x48: the same flood while the dashboard folds and paints it. By
   default the app runs with Textual's real Linux driver on a pseudo-terminal (the bench reads
   the other end), so every frame is encoded and written exactly as in a terminal. `--headless`
   uses `run_test()`'s headless driver instead, which skips the encoding of frames (cheaper, and
   the terminal bytes are then reported as n/a).

The flood (`--source`):

- `workflow` (default): a workflow of `STEPS` parallel simulated steps, each printing output lines
  at an even pace, so the events go the whole real path (agent, run log in SQLite, dispatcher,
  event store) at about `--rate` step:output events per second in total.
- `synthetic`: one long simulated step, plus a task that emits `step:output` events for it through
  `orch.dispatcher.emit` in batches every `TICK` seconds. No run log is written, so it isolates
  the dispatcher -> subscription -> fold -> paint path.

Figures are measured over a window of `--seconds` after a warm-up; then the key latency is
measured by toggling the events pause (`space`) `TOGGLES` times while the flood goes on.

3. actions: the app at 160x48 on an engine with the default agents and the sample workflows,
   no flood. Timed from the key (or the call) to the first frame that shows its effect: opening
   the command palette until it lists the catalogue's "Start workflow" entries; starting a
   workflow (the palette's "Start workflow X") until its row is in the runs table; and keys in
   the DAG panel while a `DAG_STEPS`-step run goes on (cursor down, compact view on and off,
   opening and folding a level of thousands of steps).

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import fcntl
import os
import re
import resource
import select
import statistics
import struct
import sys
import tempfile
import termios
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from textual import events
from textual.content import Content

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/tui_bench.py` from a checkout
    sys.path.insert(0, str(ROOT))

from voltui.config import OrchestratorConfig  # noqa: E402
from voltui.engine.api import StartRequest  # noqa: E402
from voltui.engine.errors import UserError  # noqa: E402
from voltui.engine.models import AgentSpec, Priority, Workflow  # noqa: E402
from voltui.engine.orchestrator import Orchestrator  # noqa: E402

SIZE = (160, 48)
STEPS = 50
"""Parallel steps of the flood workflow: each prints rate/STEPS lines per second."""
TICK = 0.01
"""Seconds between batches of the synthetic flood."""
WARMUP = 1.5
"""Seconds of flood before the measurement window opens (start-up, first snapshot)."""
TOGGLES = 30
LATENCY_LIMIT = 5.0
"""Seconds to wait for one key's effect before counting it as lost."""
SGR = re.compile(rb"\x1b\[[0-9;:]*m")
LATENCY_BUDGET = (TOGGLES + 2) * 0.5 + 10
"""Seconds the flood must outlast the window by, to cover the latency phase."""
ACTION_SAMPLES = 20
"""Samples of each action in the actions phase (palette opening, start-to-row, DAG keys)."""
DAG_STEPS = 5000
"""Steps of the DAG phase's run: one root, a level of 78% of them, a merge level, one report."""
KEYS: dict[str, tuple[str, str | None]] = {
    "ctrl+p": ("\x10", None),
    "escape": ("\x1b", None),
    "down": ("\x1b[B", None),
    "enter": ("\r", None),
    "v": ("v", "v"),
    "j": ("j", "j"),
    "G": ("G", "G"),
    "g": ("g", "g"),
}
"""Keys the actions phase sends: (bytes a terminal sends, the character for a headless Key)."""


# ---------------------------------------------------------------------- the flood


def engine_config(db: Path) -> OrchestratorConfig:
    agent = AgentSpec(
        id="bench-sim", kind="simulated", capabilities=["simulated"], capacity=STEPS * 2
    )
    return OrchestratorConfig(db=db, agents=[agent], max_concurrent_workflows=4)


def flood_workflow(lines: int, duration: float, steps: int) -> Workflow:
    """`steps` parallel simulated steps, each printing `lines` lines evenly over `duration`."""
    return Workflow.model_validate(
        {
            "id": "bench_flood",
            "name": "[bench] event flood",
            "max_parallel": max(steps, 1),
            "steps": [
                {
                    "id": f"s{i:03d}",
                    "type": "simulated",
                    "requires": ["simulated"],
                    "run": {"simulated": {"duration": duration, "output_lines": lines}},
                }
                for i in range(steps)
            ],
        }
    )


class Flood:
    """Starts the event flood on an engine and stops it (cancelling its run)."""

    def __init__(self, orch: Orchestrator, source: str, rate: float, duration: float) -> None:
        self.orch = orch
        self.source = source
        self.rate = rate
        self.duration = duration
        self.run_id: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.source == "workflow":
            lines = max(1, round(self.rate * self.duration / STEPS))
            wf = flood_workflow(lines, self.duration, STEPS)
            self.run_id = (await self.orch.run_workflow(wf)).id
            return
        # synthetic: a real run with one quiet step gives the events a real run and step
        wf = flood_workflow(0, self.duration, 1)
        self.run_id = (await self.orch.run_workflow(wf)).id
        self._task = asyncio.create_task(self._emit())

    async def _emit(self) -> None:
        emit = self.orch.dispatcher.emit
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        n = 0
        while True:
            await asyncio.sleep(TICK)
            due = int((loop.time() - start) * self.rate)  # catch up after a slow tick
            for _ in range(due - sent):
                n += 1
                emit(
                    "step:output",
                    "bench",
                    {"step": "s000", "attempt": 1, "stream": "stdout", "line": f"line {n}"},
                    priority=Priority.LOW,
                    correlation_id=self.run_id,
                )
            sent = due

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.run_id is not None:
            with contextlib.suppress(UserError):
                await self.orch.cancel_run(self.run_id)


# ---------------------------------------------------------------------- measuring


class RssSampler:
    """Peak resident memory of this process during one phase (a thread, so that a busy event
    loop does not skip samples)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def _run(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Window:
    """CPU time and wall time between `open` and `close`."""

    wall: float = 0.0
    cpu: float = 0.0
    _t0: float = 0.0
    _c0: float = 0.0

    @staticmethod
    def _cpu() -> float:
        t = psutil.Process().cpu_times()
        return t.user + t.system

    def open(self) -> None:
        self._t0, self._c0 = time.perf_counter(), self._cpu()

    def close(self) -> None:
        self.wall, self.cpu = time.perf_counter() - self._t0, self._cpu() - self._c0

    @property
    def cpu_percent(self) -> float:
        return 100.0 * self.cpu / self.wall if self.wall else 0.0


@dataclass
class Result:
    name: str
    window: Window = field(default_factory=Window)
    engine_events: int = 0
    rss_peak: int = 0
    app_events: int | None = None
    fold_ticks: int | None = None
    repaints: dict[str, int] | None = None
    frames: int | None = None
    term_bytes: int | None = None
    resyncs: int | None = None
    latency_state: list[float] = field(default_factory=list)
    latency_screen: list[float] = field(default_factory=list)
    lost_keys: int = 0
    notes: list[str] = field(default_factory=list)

    def per_second(self, value: int | None) -> float | None:
        return None if value is None or not self.window.wall else value / self.window.wall


class Frames:
    """Counts the frames Textual hands to its driver, by wrapping `textual.App._display` on the
    app instance (the class is untouched). That is Textual's private name: if it is renamed,
    the figure shows n/a. Everything else comes from the public `VoltApp.stats`."""

    def __init__(self) -> None:
        self.count = 0
        self.available = False
        self.probe: Callable[[], bool] | None = None
        """Checked at every frame until true; `hit` is then when that frame was handed over
        (perf_counter) and `hit_cpu` the event loop thread's CPU time then (thread_time)."""
        self.hit: float | None = None
        self.hit_cpu: float | None = None

    def instrument(self, app: Any) -> None:
        original = getattr(app, "_display", None)
        if original is None:
            return
        self.available = True

        def display(screen: Any, renderable: Any = None) -> Any:
            if renderable is not None and not app._batch_count:
                self.count += 1
                probe = self.probe
                if probe is not None and probe():
                    self.hit = time.perf_counter()
                    self.hit_cpu = time.thread_time()
                    self.probe = None
            return original(screen, renderable)

        app._display = display


class PtyTerminal:
    """A pseudo-terminal standing in for the user's terminal: fds 0 and 2 of this process (where
    Textual's Linux driver reads keys and writes frames) point at its slave end while the app
    runs, and a thread drains the master end, counting bytes and keeping a timestamped copy
    while `recording`."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size
        self.bytes = 0
        self.recording = False
        self.buffer = bytearray()
        self.marks: list[tuple[int, float]] = []
        """(buffer length after a chunk, perf_counter when it arrived)"""
        self.lock = threading.Lock()
        self._stop = threading.Event()

    def __enter__(self) -> PtyTerminal:
        self.master, self.slave = os.openpty()
        cols, rows = self.size
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        sys.stderr.flush()
        self._saved = {fd: os.dup(fd) for fd in (0, 2)}
        for fd in (0, 2):
            os.dup2(self.slave, fd)
        self._thread = threading.Thread(target=self._drain, daemon=True, name="pty-reader")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stderr.flush()
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)
            os.close(saved)
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.slave)
        os.close(self.master)

    def _drain(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self.master, 1 << 16)
            except OSError:
                return
            now = time.perf_counter()
            with self.lock:
                self.bytes += len(data)
                if self.recording:
                    self.buffer += data
                    self.marks.append((len(self.buffer), now))

    def type(self, text: str) -> float:
        """Send keys as a user's terminal would; returns when they were sent."""
        now = time.perf_counter()
        os.write(self.master, text.encode())
        return now

    def offset(self) -> int:
        with self.lock:
            return len(self.buffer)

    def find(self, start: int, found: Callable[[bytes], int]) -> float | None:
        """When the output from `start` on first satisfied `found`, or None if it has not yet.

        `found` gets the output with its SGR (colour and style) sequences removed, since a title
        in two styles arrives as two runs of text with a style change between them, and returns
        the end offset of its match, or -1."""
        with self.lock:
            data = bytes(self.buffer[start:])
            marks = [(length - start, ts) for length, ts in self.marks if length > start]
        end = found(SGR.sub(b"", data))
        if end < 0:
            return None
        # Map the offset in the stripped text back to the chunk that completed the match.
        stripped = previous = 0
        for length, ts in marks:
            stripped += len(SGR.sub(b"", data[previous:length]))
            previous = length
            if stripped >= end:
                return ts
        return marks[-1][1] if marks else None


# ---------------------------------------------------------------------- phases


async def engine_phase(args: argparse.Namespace, folder: Path) -> Result:
    result = Result("engine only")
    orch = Orchestrator(engine_config(folder / "engine.db"))
    await orch.start(watch=False)
    flood = Flood(orch, args.source, args.rate, WARMUP + args.seconds + 5)
    try:
        with RssSampler() as rss:
            await flood.start()
            await asyncio.sleep(WARMUP)
            seq0 = orch.dispatcher.stats().last_seq
            result.window.open()
            await asyncio.sleep(args.seconds)
            result.window.close()
            result.engine_events = orch.dispatcher.stats().last_seq - seq0
            await flood.stop()
        result.rss_peak = rss.peak
    finally:
        await orch.stop()
    return result


@contextlib.contextmanager
def terminal_env(size: tuple[int, int]) -> Iterator[None]:
    """The environment of a modern terminal, for Textual's colour and size detection."""
    wanted = {
        "TERM": "xterm-256color",
        "COLORTERM": "truecolor",
        "COLUMNS": str(size[0]),
        "LINES": str(size[1]),
    }
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.asynccontextmanager
async def running_app(app: Any, headless: bool) -> AsyncIterator[tuple[Any, PtyTerminal | None]]:
    if headless:
        async with app.run_test(size=SIZE) as pilot:
            yield pilot, None
        return
    with terminal_env(SIZE), PtyTerminal(SIZE) as term:
        async with app.run_test(headless=False, size=SIZE) as pilot:
            yield pilot, term


async def app_phase(args: argparse.Namespace, folder: Path) -> Result:
    from voltui.tui.app import VoltApp
    from voltui.tui.widgets import EventsLog

    result = Result("engine + app")
    orch = Orchestrator(engine_config(folder / "app.db"))
    await orch.start(watch=False)
    flood = Flood(orch, args.source, args.rate, WARMUP + args.seconds + LATENCY_BUDGET)
    frames = Frames()
    try:
        with terminal_env(SIZE):
            app = VoltApp(orch)  # its console reads TERM/COLORTERM when it is built
        frames.instrument(app)
        with RssSampler() as rss:
            async with running_app(app, args.headless) as (pilot, term):
                deadline = time.monotonic() + 20
                while app.state is None and time.monotonic() < deadline:
                    await pilot.pause(0.05)
                await flood.start()
                await asyncio.sleep(WARMUP)

                seq0 = orch.dispatcher.stats().last_seq
                bytes0 = term.bytes if term else 0
                before = app.stats.copy()
                frames.count = 0
                profiler = cProfile.Profile() if args.profile else None
                result.window.open()
                if profiler is not None:
                    profiler.enable()
                await asyncio.sleep(args.seconds)
                if profiler is not None:
                    profiler.disable()
                    profiler.dump_stats(args.profile)
                    result.notes.append(
                        f"profile of the event loop thread in {args.profile} (the figures are "
                        "inflated by the profiler)"
                    )
                result.window.close()
                after = app.stats.copy()
                result.engine_events = orch.dispatcher.stats().last_seq - seq0
                result.app_events = after.events_folded - before.events_folded
                result.fold_ticks = after.ticks - before.ticks
                result.repaints = {
                    panel: n - before.repaints.get(panel, 0)
                    for panel, n in sorted(after.repaints.items())
                }
                result.resyncs = after.resyncs - before.resyncs
                result.frames = frames.count if frames.available else None
                if term is not None:
                    result.term_bytes = term.bytes - bytes0
                else:
                    result.notes.append(
                        "terminal bytes n/a: the headless driver never encodes frames "
                        "(App._display returns early when headless)"
                    )
                if not frames.available:
                    result.notes.append("frames n/a: textual.App._display not found (renamed?)")

                await measure_latency(app, app.query_one(EventsLog), term, result)
                await flood.stop()
        result.rss_peak = rss.peak
    finally:
        await orch.stop()
    return result


def _plain(title: object) -> str:
    """A border title as shown: it may be Content, rich Text, or a string of Textual markup."""
    plain = getattr(title, "plain", None)
    if plain is not None:
        return str(plain)
    try:
        return Content.from_markup(str(title or "")).plain
    except Exception:
        return str(title or "")


async def measure_latency(app: Any, log: Any, term: PtyTerminal | None, result: Result) -> None:
    """Toggle the events pause with `space` and time its effect, polling every millisecond:
    on the app's state (the log's `paused` flag) and, with a terminal, on the screen (the first
    frame whose bytes carry the new panel title)."""
    if term is not None:
        with term.lock:
            term.recording = True
    titles: dict[bool, str] = {}
    for toggle in range(TOGGLES + 2):  # the first two learn both titles and are not counted
        target = not log.paused
        start_offset = term.offset() if term else 0
        if term is not None:
            sent = term.type(" ")
        else:
            # What the driver does with a key it read; Pilot.press would also wait for the app
            # to go idle, which under a flood is much later than the effect.
            sent = time.perf_counter()
            app._driver.send_message(events.Key("space", " "))
        state_at = screen_at = None
        deadline = sent + LATENCY_LIMIT
        while time.perf_counter() < deadline:
            if state_at is None and log.paused == target:
                state_at = time.perf_counter()
                titles[target] = _plain(log.border_title)
            if state_at is not None and (term is None or len(titles) < 2):
                break  # the screen effect is timed once both titles are known
            if state_at is not None and term is not None:
                screen_at = term.find(start_offset, title_matcher(titles, target))
                if screen_at is not None:
                    break
            await asyncio.sleep(0.001)
        if state_at is None:
            result.lost_keys += 1
            continue
        if toggle >= 2:
            result.latency_state.append(state_at - sent)
            if screen_at is not None:
                result.latency_screen.append(screen_at - sent)
        await asyncio.sleep(0.02)
    if log.paused:
        app.action_toggle_pause()
    if term is not None:
        with term.lock:
            term.recording = False
            term.buffer.clear()
            term.marks.clear()


def title_matcher(titles: dict[bool, str], paused: bool) -> Callable[[bytes], int]:
    """Finds the events panel title as it reads when `paused`: the paused title contains the
    running one (`4 Events` vs `4 Events — PAUSED`), so a running title only counts when what
    follows it is not the rest of the paused one."""
    on, off = titles[True].encode(), titles[False].encode()
    if paused:

        def find_on(data: bytes) -> int:
            at = data.find(on)
            return -1 if at < 0 else at + len(on)

        return find_on
    rest = on[len(off) :] if on.startswith(off) else b""

    def find_off(data: bytes) -> int:
        at = data.find(off)
        while at >= 0:
            tail = data[at + len(off) : at + len(on)]
            if len(tail) < len(rest):
                return -1  # not enough bytes yet to tell
            if not rest or tail != rest:
                return at + len(off)
            at = data.find(off, at + 1)
        return -1

    return find_off


# ---------------------------------------------------------------------- actions


@dataclass
class Actions:
    """Latencies (seconds) of the actions phase, by action; `lost` counts the samples whose
    effect never showed within `LATENCY_LIMIT`."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    """CPU time of the event loop thread over the same spans: what the action cost, apart
    from waiting for a core on a busy machine."""
    lost: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: tuple[float, float] | None) -> None:
        if value is None:
            self.lost[name] = self.lost.get(name, 0) + 1
        else:
            self.samples.setdefault(name, []).append(value[0])
            self.cpu.setdefault(name, []).append(value[1])


def actions_config(db: Path) -> OrchestratorConfig:
    """The default agents (shell, python, three simulated) and the sample workflows."""
    return OrchestratorConfig(db=db, workflows_dir=ROOT / "sample-workflows")


def dag_workflow(steps: int, *, quiet: bool = False) -> Workflow:
    """A wide run: `prepare`, then 78% of the steps in one level (2% of them fail), a level of
    merges each fed by four shards, and a `report` fed by every 50th merge. `quiet`: every step
    takes ten minutes and none fails, so once 16 run nothing changes (the keys' own cost)."""
    wide = int(steps * 0.78)
    merges = max(1, steps - wide - 2)
    duration = 600.0 if quiet else 0.3
    sim: dict[str, Any] = {"simulated": {"duration": duration, "jitter": 0.3}}
    flaky: dict[str, Any] = {
        "simulated": {"duration": duration, "jitter": 0.3, "failure_rate": 0.0 if quiet else 0.02}
    }
    body: list[dict[str, Any]] = [{"id": "prepare", "requires": ["simulated"], "run": sim}]
    body += [
        {"id": f"shard_{i:04d}", "depends_on": ["prepare"], "requires": ["simulated"], "run": flaky}
        for i in range(wide)
    ]
    body += [
        {
            "id": f"merge_{i:04d}",
            "depends_on": [f"shard_{(4 * i + k) % wide:04d}" for k in range(4)],
            "requires": ["simulated"],
            "run": sim,
        }
        for i in range(merges)
    ]
    body.append(
        {
            "id": "report",
            "depends_on": [f"merge_{i:04d}" for i in range(0, merges, 50)],
            "requires": ["simulated"],
            "run": sim,
        }
    )
    return Workflow.model_validate(
        {
            "id": "bench_dag",
            "name": f"[bench] {steps} steps",
            "max_parallel": 16,
            "retry": {"max_attempts": 1},
            "steps": body,
        }
    )


def press(app: Any, term: PtyTerminal | None, key: str) -> float:
    """Send `key` as the user's terminal would (or to the headless driver); when it was sent."""
    data, char = KEYS[key]
    if term is not None:
        return term.type(data)
    sent = time.perf_counter()
    app._driver.send_message(events.Key(key, char))
    return sent


async def timed(
    frames: Frames, act: Callable[[], float], shown: Callable[[], bool]
) -> tuple[float, float] | None:
    """Seconds from `act()` (which returns when it acted) to the first frame for which
    `shown()` holds, and the event loop thread's CPU seconds over that span; None if no such
    frame came within `LATENCY_LIMIT`."""
    frames.hit = frames.hit_cpu = None
    frames.probe = shown
    cpu = time.thread_time()
    sent = act()
    deadline = sent + LATENCY_LIMIT
    while time.perf_counter() < deadline:
        if frames.hit is not None and frames.hit_cpu is not None:
            return frames.hit - sent, frames.hit_cpu - cpu
        await asyncio.sleep(0.001)
    frames.probe = None
    return None


async def settle(condition: Callable[[], bool], limit: float = 10.0) -> bool:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def measure_palette(
    app: Any, term: PtyTerminal | None, frames: Frames, out: Actions, workflow: str
) -> None:
    """`ctrl+p` until the palette lists "Start workflow <workflow>", then `escape`."""
    from textual.command import CommandList, CommandPalette

    wanted = f"Start workflow {workflow}"

    def listed() -> bool:
        screen = app.screen
        if not isinstance(screen, CommandPalette):
            return False
        try:
            options = screen.query_one(CommandList)
        except Exception:
            return False
        return any(
            wanted in _plain(options.get_option_at_index(i).prompt)
            for i in range(options.option_count)
        )

    for _ in range(ACTION_SAMPLES):
        out.add("palette", await timed(frames, lambda: press(app, term, "ctrl+p"), listed))
        await settle(lambda: isinstance(app.screen, CommandPalette))
        press(app, term, "escape")
        await settle(lambda: not isinstance(app.screen, CommandPalette))
        await asyncio.sleep(0.2)


async def measure_start(app: Any, orch: Orchestrator, frames: Frames, out: Actions) -> None:
    """The palette's "Start workflow simulated_load" until the run's row is in the runs table;
    each run is cancelled once measured."""
    from voltui.tui.widgets import RunsTable

    runs = app.query_one(RunsTable)
    for _ in range(ACTION_SAMPLES):
        before = set(runs.rows)

        def start() -> float:
            sent = time.perf_counter()
            app.start_workflow("simulated_load")
            return sent

        def appeared(before: set[Any] = before) -> bool:
            return any(k not in before for k in runs.rows)

        out.add("start", await timed(frames, start, appeared))
        for key in [k for k in runs.rows if k not in before]:
            with contextlib.suppress(UserError):
                await orch.cancel_run(str(key.value))
        await asyncio.sleep(0.3)
    # The engine's share: the same start through the API alone, no dashboard involved.
    for _ in range(ACTION_SAMPLES // 2):
        cpu, sent = time.thread_time(), time.perf_counter()
        run = await orch.start_workflow(StartRequest(workflow="simulated_load"))
        out.add("start api", (time.perf_counter() - sent, time.thread_time() - cpu))
        with contextlib.suppress(UserError):
            await orch.cancel_run(run.id)
        await asyncio.sleep(0.3)


async def measure_dag(
    app: Any,
    orch: Orchestrator,
    term: PtyTerminal | None,
    frames: Frames,
    out: Actions,
    *,
    quiet: bool,
) -> None:
    """Keys in the DAG panel while a `DAG_STEPS`-step run goes on: a busy one (steps finishing
    all the time, so the embedded engine works on the same event loop and the panel repaints
    4 times a second) or a quiet one (the keys' own cost)."""
    from voltui.tui.widgets import DagView, RunsTable

    kind = "quiet" if quiet else "busy"
    run = await orch.run_workflow(dag_workflow(DAG_STEPS, quiet=quiet))
    try:
        runs = app.query_one(RunsTable)
        dag = app.query_one(DagView)
        if not await settle(lambda: run.id in runs.rows, 30):
            out.notes.append("DAG: the run never showed in the runs table")
            return
        runs.move_cursor(row=runs.get_row_index(run.id))
        loaded = await settle(
            lambda: (
                app.state is not None
                and run.id in app.state.runs
                and len(app.state.runs[run.id].steps) == DAG_STEPS
            ),
            30,
        )
        if not loaded:
            out.notes.append("DAG: the run's steps never loaded")
            return
        dag.focus()
        await asyncio.sleep(1.0)

        def look() -> tuple[Any, ...]:
            return (
                dag.scroll_offset,
                dag.compact,
                getattr(dag, "cursor", None),
                getattr(dag, "fold_version", None),
            )

        async def key(name: str, key: str) -> None:
            seen = look()
            out.add(
                f"{name} {kind}",
                await timed(frames, lambda: press(app, term, key), lambda: look() != seen),
            )
            await asyncio.sleep(0.05)

        levels = app.state.runs[run.id].levels
        largest = max(range(len(levels)), key=lambda d: len(levels[d]))
        foldable = hasattr(dag, "fold_version")

        def level() -> None:
            dag.move_cursor(("level", largest))

        async def toggle_largest() -> None:  # not timed
            level()
            await asyncio.sleep(0.05)
            press(app, term, "enter")
            await asyncio.sleep(0.3)

        # `down` within the largest level, open (a folded one has a few rows only, and `down`
        # on the last row does nothing); a version without levels scrolls its whole body.
        if foldable:
            await toggle_largest()
        for _ in range(ACTION_SAMPLES):
            await key("dag down", "down")
        if foldable:
            await toggle_largest()
        for _ in range(ACTION_SAMPLES // 2):
            await key("dag v", "v")  # compact on
            await key("dag v", "v")  # and off
        if foldable:
            for _ in range(ACTION_SAMPLES // 2):
                level()
                await asyncio.sleep(0.05)
                await key("dag enter (level)", "enter")  # open it
                for _ in range(3):
                    await key("dag down", "down")
                await key("dag G", "G")
                await key("dag g", "g")
                level()
                await asyncio.sleep(0.05)
                await key("dag enter (level)", "enter")  # and fold it again
        else:
            out.notes.append("DAG: no foldable levels in this version (enter/G/g not timed)")
    finally:
        with contextlib.suppress(UserError):
            await orch.cancel_run(run.id)


async def actions_phase(args: argparse.Namespace, folder: Path) -> Actions:
    from voltui.tui.app import VoltApp

    out = Actions()
    orch = Orchestrator(actions_config(folder / "actions.db"))
    await orch.start(watch=False)
    frames = Frames()
    try:
        catalogue = await orch.list_workflows()
        workflow = sorted(wf.id for wf in catalogue)[-1]
        with terminal_env(SIZE):
            app = VoltApp(orch)
        frames.instrument(app)
        if not frames.available:
            out.notes.append("actions n/a: textual.App._display not found (renamed?)")
            return out
        async with running_app(app, args.headless) as (_pilot, term):
            await settle(lambda: app.state is not None, 20)
            await asyncio.sleep(1.0)
            await measure_palette(app, term, frames, out, workflow)
            await measure_start(app, orch, frames, out)
            await measure_dag(app, orch, term, frames, out, quiet=False)
            await measure_dag(app, orch, term, frames, out, quiet=True)
    finally:
        await orch.stop()
    return out


def report_actions(args: argparse.Namespace, actions: Actions) -> str:
    names = {
        "palette": "palette open (ctrl+p -> catalogue listed)",
        "start": "start -> run row shown",
        "start api": "start_workflow() alone (engine API)",
    }
    for kind in ("busy", "quiet"):
        where = f"DAG {DAG_STEPS:,} steps, {kind} run:"
        names |= {
            f"dag down {kind}": f"{where} down",
            f"dag v {kind}": f"{where} v (compact on/off)",
            f"dag enter (level) {kind}": f"{where} enter (open/fold a level)",
            f"dag G {kind}": f"{where} G (last row)",
            f"dag g {kind}": f"{where} g (first row)",
        }
    rows = [
        (
            label,
            _ms(actions.samples.get(name, []), 0.5),
            _ms(actions.samples.get(name, []), 0.95),
            _ms(actions.cpu.get(name, []), 0.5),
            f"{len(actions.samples.get(name, []))}/{actions.lost.get(name, 0)}",
        )
        for name, label in names.items()
        if name in actions.samples or name in actions.lost
    ]
    mode = "headless driver" if args.headless else "Linux driver on a pty"
    out = [f"actions, no flood, {SIZE[0]}x{SIZE[1]}, {mode} (time to the first frame showing it)"]
    if rows:
        w0 = max(len(r[0]) for r in rows)
        out.append(f"{'':<{w0}}  {'median':>9}  {'p95':>9}  {'CPU med.':>9}  {'ok/lost':>7}")
        out += [f"{a:<{w0}}  {b:>9}  {c:>9}  {d:>9}  {e:>7}" for a, b, c, d, e in rows]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    cores = os.cpu_count()
    out.append(
        f"CPU med. = event loop thread CPU over the same span; load average {load:.1f} on "
        f"{cores} cores during the bench"
        if load is not None
        else "CPU med.: event loop thread"
    )
    out += [f"note: {n}" for n in actions.notes]
    return "\n".join(out)


# ---------------------------------------------------------------------- report


def _fmt(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{unit}"


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "n/a"
    if q == 0.5:
        return f"{statistics.median(values) * 1000:.1f} ms"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f} ms"


def report(args: argparse.Namespace, engine: Result, app: Result) -> str:
    mb = 1024 * 1024
    rows: list[tuple[str, str, str]] = [
        ("window (s)", _fmt(engine.window.wall, digits=1), _fmt(app.window.wall, digits=1)),
        (
            "events emitted by the engine /s",
            _fmt(engine.per_second(engine.engine_events)),
            _fmt(app.per_second(app.engine_events)),
        ),
        ("events folded by the app /s", "-", _fmt(app.per_second(app.app_events))),
        ("fold timer ticks /s", "-", _fmt(app.per_second(app.fold_ticks), digits=1)),
        (
            "panel repaints /s (all panels)",
            "-",
            _fmt(app.per_second(sum(app.repaints.values()) if app.repaints else None), digits=1),
        ),
        ("frames written /s", "-", _fmt(app.per_second(app.frames), digits=1)),
        (
            "terminal bytes /s",
            "-",
            "n/a"
            if app.term_bytes is None
            else _fmt(app.term_bytes / 1024 / app.window.wall, " KiB"),
        ),
        ("resyncs (snapshot reloads)", "-", _fmt(app.resyncs)),
        ("process CPU", _fmt(engine.window.cpu_percent, " %"), _fmt(app.window.cpu_percent, " %")),
        ("peak RSS", _fmt(engine.rss_peak / mb, " MiB", 1), _fmt(app.rss_peak / mb, " MiB", 1)),
        ("key->state latency median", "-", _ms(app.latency_state, 0.5)),
        ("key->state latency p95", "-", _ms(app.latency_state, 0.95)),
        ("key->screen latency median", "-", _ms(app.latency_screen, 0.5)),
        ("key->screen latency p95", "-", _ms(app.latency_screen, 0.95)),
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len("engine only"), *(len(r[1]) for r in rows))
    w2 = max(len("engine + app"), *(len(r[2]) for r in rows))
    mode = "headless driver" if args.headless else "Linux driver on a pty"
    out = [
        f"voltui TUI bench: --source {args.source}, target {args.rate:,.0f} events/s, "
        f"{args.seconds:g} s window, {SIZE[0]}x{SIZE[1]}, {mode}",
        "",
        f"{'':<{w0}}  {'engine only':>{w1}}  {'engine + app':>{w2}}",
    ]
    out += [f"{a:<{w0}}  {b:>{w1}}  {c:>{w2}}" for a, b, c in rows]
    ratio = app.window.cpu / engine.window.cpu if engine.window.cpu else None
    out.append("")
    if app.repaints:
        by_panel = ", ".join(
            f"{panel} {_fmt(app.per_second(n), digits=1)}" for panel, n in app.repaints.items()
        )
        out.append(f"repaints /s by panel: {by_panel}")
    out.append(f"CPU ratio (engine + app) / engine only: {_fmt(ratio, 'x', 2)}")
    out.append(
        f"key samples: {len(app.latency_state)} state, {len(app.latency_screen)} screen, "
        f"{app.lost_keys} lost (no effect within {LATENCY_LIMIT:g} s)"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.append(f"ru_maxrss of the whole bench process: {peak:.1f} MiB")
    out += [f"note: {n}" for n in app.notes]
    return "\n".join(out)


async def main_async(args: argparse.Namespace) -> str:
    parts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="voltui-bench-") as tmp:
        folder = Path(tmp)
        if args.only in (None, "flood"):
            engine = await engine_phase(args, folder)
            app = await app_phase(args, folder)
            parts.append(report(args, engine, app))
        if args.only in (None, "actions"):
            parts.append(report_actions(args, await actions_phase(args, folder)))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window")
    parser.add_argument("--rate", type=float, default=5000.0, help="target events per second")
    parser.add_argument(
        "--source",
        choices=("workflow", "synthetic"),
        default="workflow",
        help="flood from parallel simulated steps, or from direct dispatcher emits",
    )
    parser.add_argument(
        "--headless", action="store_true", help="headless driver (no terminal encoding)"
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="cProfile the event loop thread during the app window and write the stats to FILE",
    )
    parser.add_argument(
        "--only",
        choices=("flood", "actions"),
        help="run only the flood phases (engine only, engine + app) or only the actions phase",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rate <= 0:
        parser.error("--seconds and --rate must be above 0")
    print(asyncio.run(main_async(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
