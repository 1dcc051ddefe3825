"""Engine benchmark: per-step cost through the whole engine against a bare asyncio scheduler.

Every figure is printed beside a baseline measured in the same process, so the ratios mean
something on a busy 2-core machine where absolute times do not:

* steps: N no-op steps (N = 1,000, 10,000, 50,000 by default) in a layered DAG, each step
  depending on about 3 steps of the layer above, run (a) through the whole Orchestrator (real
  SQLite store in a temp folder, real events, real agents: a python step calling an async
  no-op function, and separately zero-duration simulated steps) and (b) through a bare asyncio
  scheduler of the same DAG with the same parallelism. Prints µs per step, the ratio, and the
  growth of µs per step from the smallest N to the largest.
* events: events dispatched per second to one subscriber (EventDispatcher alone, and through the
  Orchestrator with its store sink) against a bare `asyncio.Queue`; events persisted per second
  by the RunStore against raw `sqlite3.executemany` of the same rows.
* cache: CacheManager get (hit, miss) and set against raw `cachetools.LRUCache`.
* memory (in a fresh subprocess): 100 concurrent runs of 100 simulated steps; peak RSS and RSS
  after they finish.

`BENCH_HISTORY=N` sets the in-memory event history (default 10,000) to see what it retains.

Usage: `python bench/engine_bench.py [--sizes 1000,10000,50000] [--only steps,events,cache,memory]
[--profile N]` (`--profile N` prints a cProfile of one engine run of N steps instead).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cachetools
import psutil

from voltui.config import OrchestratorConfig
from voltui.engine.cache import CacheConfig, CacheManager
from voltui.engine.events import EventDispatcher
from voltui.engine.models import AgentSpec, Event, Workflow
from voltui.engine.orchestrator import Orchestrator
from voltui.engine.store import RunStore

WIDTH = 100
"""Steps per layer: constant, so concurrency is the same at every N and only size changes."""
DEPS = 3
PARALLEL = 64
NOOP_MODULE = "async def noop():\n    return None\n"


# --------------------------------------------------------------------------- the DAG


def layered_dag(n: int, *, seed: int = 7) -> list[tuple[str, list[str]]]:
    """`n` step ids in layers of WIDTH, each depending on DEPS random steps of the layer above."""
    rng = random.Random(seed)
    steps: list[tuple[str, list[str]]] = []
    previous: list[str] = []
    for start in range(0, n, WIDTH):
        layer = [f"s{i}" for i in range(start, min(n, start + WIDTH))]
        for sid in layer:
            deps = rng.sample(previous, min(DEPS, len(previous))) if previous else []
            steps.append((sid, deps))
        previous = layer
    return steps


def workflow_for(dag: list[tuple[str, list[str]]], kind: str, source: Path) -> Workflow:
    run = {"python": "bench_noop:noop"} if kind == "python" else {"simulated": {"duration": 0}}
    wf = Workflow.model_validate(
        {
            "id": f"bench_{kind}",
            "max_parallel": PARALLEL,
            "timeout": None,
            "steps": [{"id": sid, "depends_on": deps, "run": run} for sid, deps in dag],
        }
    )
    wf._source = str(source)
    return wf


# --------------------------------------------------------------------------- bare scheduler


async def bare_run(dag: list[tuple[str, list[str]]]) -> float:
    """The same DAG with in-degrees, a ready queue and one task per step: the floor."""
    t0 = time.perf_counter()
    indeg = {sid: len(deps) for sid, deps in dag}
    dependents: dict[str, list[str]] = {sid: [] for sid, _ in dag}
    for sid, deps in dag:
        for d in deps:
            dependents[d].append(sid)
    ready = deque(sid for sid, deps in dag if not deps)
    done = asyncio.get_running_loop().create_future()
    state = {"running": 0, "left": len(dag)}

    async def noop() -> None:
        return None

    def finished(sid: str) -> None:
        state["running"] -= 1
        state["left"] -= 1
        for child in dependents[sid]:
            indeg[child] -= 1
            if indeg[child] == 0:
                ready.append(child)
        if state["left"] == 0:
            done.set_result(None)
        else:
            launch()

    def launch() -> None:
        while ready and state["running"] < PARALLEL:
            sid = ready.popleft()
            state["running"] += 1
            task = asyncio.ensure_future(noop())
            task.add_done_callback(lambda _t, sid=sid: finished(sid))

    launch()
    await done
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- engine run


def engine_config(folder: Path) -> OrchestratorConfig:
    return OrchestratorConfig(
        db=folder / "bench.db",
        workflows_dir=None,
        workflow_timeout=None,
        max_stored_events=10_000_000,
        event_history=int(os.environ.get("BENCH_HISTORY", "10000")),
        agents=[
            AgentSpec(id="py", kind="python", capabilities=[], capacity=PARALLEL),
            AgentSpec(id="sim", kind="simulated", capabilities=[], capacity=PARALLEL),
        ],
    )


async def engine_run(dag: list[tuple[str, list[str]]], kind: str, folder: Path) -> float:
    """Submit to finish (store flushed) through a fresh Orchestrator; returns seconds."""
    (folder / "bench_noop.py").write_text(NOOP_MODULE)
    wf = workflow_for(dag, kind, folder / "bench.yaml")
    async with Orchestrator(engine_config(folder)) as engine:
        engine.dispatcher.stats()
        t0 = time.perf_counter()
        run = await engine.run_workflow(wf)
        final = await engine.wait_run(run.id)
        await engine.store.flush()
        elapsed = time.perf_counter() - t0
        if final.state.value != "succeeded":
            raise SystemExit(f"bench run ended {final.state.value}: {final.error}")
    return elapsed


def fresh_folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="voltui-bench-"))


def bench_steps(sizes: list[int]) -> None:
    print(f"== steps: layered DAG, width {WIDTH}, {DEPS} deps/step, max_parallel {PARALLEL}")
    print(
        f"{'N':>7} {'bare µs/step':>13} {'python µs':>10} {'ratio':>6} {'sim µs':>8} {'ratio':>6}"
    )
    per_step: dict[str, dict[int, float]] = {"bare": {}, "python": {}, "simulated": {}}
    for n in sizes:
        dag = layered_dag(n)
        bare = min(asyncio.run(bare_run(dag)) for _ in range(3)) / n * 1e6
        py = asyncio.run(engine_run(dag, "python", fresh_folder())) / n * 1e6
        sim = asyncio.run(engine_run(dag, "simulated", fresh_folder())) / n * 1e6
        per_step["bare"][n], per_step["python"][n], per_step["simulated"][n] = bare, py, sim
        print(f"{n:>7} {bare:>13.1f} {py:>10.1f} {py / bare:>6.1f} {sim:>8.1f} {sim / bare:>6.1f}")
        gc.collect()
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        for name, figures in per_step.items():
            growth = figures[hi] / figures[lo]
            print(f"growth of µs/step {lo} -> {hi} ({name}): {growth:.2f}x (target <= 1.5)")
    if 10_000 in sizes:
        ratio = per_step["python"][10_000] / per_step["bare"][10_000]
        print(f"ratio at N=10,000 (python steps): {ratio:.1f} (target < 5)")


# --------------------------------------------------------------------------- events


async def _dispatch_rate(n: int) -> tuple[float, float]:
    dispatcher = EventDispatcher(history_size=10_000, subscriber_queue=n + 10)
    await dispatcher.start()
    received = 0
    sub = dispatcher.subscribe("*")

    async def consume() -> None:
        nonlocal received
        async for batch in sub:
            received += len(batch)
            if received >= n:
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    t0 = time.perf_counter()
    data = {"step": "s1", "state": "running"}
    for i in range(n):
        dispatcher.emit("step:output", "bench", data, correlation_id="run")
        if i % 1000 == 999:
            await asyncio.sleep(0)
    await task
    elapsed = time.perf_counter() - t0
    await dispatcher.stop()

    queue: asyncio.Queue[Any] = asyncio.Queue()
    got = 0

    async def drain() -> None:
        nonlocal got
        while got < n:
            await queue.get()
            got += 1

    consumer = asyncio.create_task(drain())
    t1 = time.perf_counter()
    for i in range(n):
        queue.put_nowait(("step:output", data))
        if i % 1000 == 999:
            await asyncio.sleep(0)
    await consumer
    return n / elapsed, n / (time.perf_counter() - t1)


async def _orchestrator_dispatch_rate(n: int, folder: Path) -> float:
    config = engine_config(folder)
    async with Orchestrator(config) as engine:
        received = 0
        sub = engine.subscribe("bench:*")

        async def consume() -> None:
            nonlocal received
            async for batch in sub:
                received += len(batch)
                if received >= n:
                    return

        task = asyncio.create_task(consume())
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        data = {"step": "s1", "line": "x" * 40}
        for i in range(n):
            engine.dispatcher.emit("bench:event", "bench", data, correlation_id="run")
            if i % 1000 == 999:
                await asyncio.sleep(0)
                # Sustained rate, not a burst: a subscriber more than a buffer behind is told
                # to resync (SubscriptionLagged), as a slow dashboard would be.
                while i - received > 4000:
                    await asyncio.sleep(0.001)
        await task
        await engine.store.flush()
        return n / (time.perf_counter() - t0)


async def _persist_rate(n: int, folder: Path) -> tuple[float, float]:
    events = [
        Event(
            seq=i + 1,
            ts=time.time(),
            type="step:output",
            source="bench",
            correlation_id="run",
            data={"step": "s1", "line": "x" * 40},
        )
        for i in range(n)
    ]
    store = RunStore(folder / "persist.db")
    await store.open()
    t0 = time.perf_counter()
    for i in range(0, n, 100):
        store.append_events(events[i : i + 100])
    await store.flush()
    rate = n / (time.perf_counter() - t0)
    await store.close()

    conn = sqlite3.connect(folder / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, ts REAL, type TEXT, correlation_id TEXT,"
        " data TEXT)"
    )
    t1 = time.perf_counter()
    for i in range(0, n, 1000):
        chunk = events[i : i + 1000]
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
            [(e.seq, e.ts, e.type, e.correlation_id, e.model_dump_json()) for e in chunk],
        )
        conn.execute("COMMIT")
    raw = n / (time.perf_counter() - t1)
    conn.close()
    return rate, raw


def bench_events(n: int = 200_000) -> None:
    print(f"== events ({n:,} each)")
    disp, queue = asyncio.run(_dispatch_rate(n))
    print(
        f"dispatcher -> 1 subscriber: {disp:>11,.0f}/s   asyncio.Queue: {queue:>11,.0f}/s"
        f"   ratio {queue / disp:.2f}   (target >= 500,000/s)"
    )
    orch = asyncio.run(_orchestrator_dispatch_rate(n, fresh_folder()))
    print(
        f"Orchestrator (store sink) -> 1 subscriber: {orch:>11,.0f}/s   ratio vs queue "
        f"{queue / orch:.2f}"
    )
    persisted, raw = asyncio.run(_persist_rate(n, fresh_folder()))
    print(
        f"RunStore persisted: {persisted:>11,.0f}/s   raw sqlite3 executemany: {raw:>11,.0f}/s"
        f"   ratio {raw / persisted:.2f}   (target >= 100,000/s)"
    )


# --------------------------------------------------------------------------- cache


def _per_op(fn: Callable[[int], Any], n: int) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e9


def bench_cache(n: int = 100_000) -> None:
    print(f"== cache ({n:,} operations, best of 5, ns/op)")
    keys = [f"key-{i}" for i in range(n)]
    manager = CacheManager(CacheConfig(max_items=n * 2))
    raw: cachetools.LRUCache[str, Any] = cachetools.LRUCache(maxsize=n * 2)
    value = {"x": 1}
    set_m = _per_op(lambda i: manager.set(keys[i], value), n)
    set_r = _per_op(lambda i: raw.__setitem__(keys[i], value), n)
    hit_m = _per_op(lambda i: manager.get(keys[i]), n)
    hit_r = _per_op(lambda i: raw.get(keys[i]), n)
    miss_m = _per_op(lambda i: manager.get("absent"), n)
    miss_r = _per_op(lambda i: raw.get("absent"), n)
    for name, mine, base in (
        ("set", set_m, set_r),
        ("get hit", hit_m, hit_r),
        ("get miss", miss_m, miss_r),
    ):
        print(
            f"{name:>9}: CacheManager {mine:>7.0f} ns   cachetools {base:>7.0f} ns   "
            f"ratio {mine / base:.2f} (target <= 1.5)"
        )


# --------------------------------------------------------------------------- memory


def _rss() -> int:
    return psutil.Process().memory_info().rss


async def _memory_runs(runs: int, steps: int, folder: Path) -> dict[str, float]:
    peak = [_rss()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.02)

    config = engine_config(folder)
    config = config.model_copy(update={"max_concurrent_workflows": runs})
    sampler = threading.Thread(target=sample, daemon=True)
    async with Orchestrator(config) as engine:
        gc.collect()
        start = _rss()
        blocks_start = sys.getallocatedblocks()
        sampler.start()
        dag = layered_dag(steps)
        wfs = [workflow_for(dag, "simulated", folder / "mem.yaml") for _ in range(runs)]
        t0 = time.perf_counter()
        started = [await engine.run_workflow(wf) for wf in wfs]
        for run in started:
            final = await engine.wait_run(run.id)
            assert final.state.value == "succeeded", final.error
        elapsed = time.perf_counter() - t0
        del wfs, started
        await engine.store.flush()
        gc.collect()
        await asyncio.sleep(0.5)
        end = _rss()
        blocks_end = sys.getallocatedblocks()
        history = len(engine.dispatcher.history())
    stop.set()
    sampler.join()
    return {
        "start": start,
        "peak": peak[0],
        "end": end,
        "seconds": elapsed,
        "blocks_start": blocks_start,
        "blocks_end": blocks_end,
        "history": history,
    }


def bench_memory(runs: int = 100, steps: int = 100) -> None:
    print(f"== memory: {runs} concurrent runs x {steps} simulated steps (fresh process)")
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", f"{runs},{steps}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        print(out.stdout + out.stderr)
        raise SystemExit("memory child failed")
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    mb = 1024 * 1024
    print(
        f"RSS start {figures['start'] / mb:.0f} MB, peak {figures['peak'] / mb:.0f} MB "
        f"(target < 300 MB), after {figures['end'] / mb:.0f} MB; "
        f"{runs * steps:,} steps in {figures['seconds']:.1f} s"
    )
    print(
        f"Python objects (allocated blocks) start {figures['blocks_start']:,}, after "
        f"{figures['blocks_end']:,}; the dispatcher's in-memory history holds "
        f"{figures['history']:,} events (event_history); the rest of RSS is allocator arenas"
    )


# --------------------------------------------------------------------------- main


def profile(n: int) -> None:
    import cProfile
    import pstats

    dag = layered_dag(n)
    folder = fresh_folder()
    prof = cProfile.Profile()
    prof.enable()
    asyncio.run(engine_run(dag, "python", folder))
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--only", default="steps,events,cache,memory")
    parser.add_argument("--profile", type=int, default=0)
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        runs, steps = (int(x) for x in args.memory_child.split(","))
        figures = asyncio.run(_memory_runs(runs, steps, fresh_folder()))
        print(json.dumps(figures))
        return
    if args.profile:
        profile(args.profile)
        return
    only = set(args.only.split(","))
    print(
        f"voltui engine bench; python {sys.version.split()[0]}, {os.cpu_count()} cpus, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    if "steps" in only:
        bench_steps([int(s) for s in args.sizes.split(",")])
    if "events" in only:
        bench_events()
    if "cache" in only:
        bench_cache()
    if "memory" in only:
        bench_memory()
    _ = statistics  # median helpers may be used by later sections


if __name__ == "__main__":
    main()
