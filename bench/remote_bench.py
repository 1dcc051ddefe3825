"""What attaching over the socket costs, next to the embedded engine, in the same run.

    python bench/remote_bench.py [--events 50000] [--requests 300] [--line 80]

One `Orchestrator` (SQLite in a temporary folder, one simulated agent, no health watch) serves
both sides: the embedded figures call it directly, the remote ones go through an `EngineServer`
on a Unix socket and a `RemoteEngine`, **in the same process and on the same event loop**. So
the remote figures carry the whole cost of both ends (encode, socket, decode) on one core: a
conservative figure; with `voltui serve` in its own process the two ends use two cores.

Figures:

- events/s delivered: `--events` `step:output`-shaped events (a `--line`-character line each)
  emitted through `dispatcher.emit`, with at most `WINDOW` in flight so neither path is pushed
  into a resync; the clock runs from the first emit to the last event reaching the consumer.
- event latency: one event at a time, from `emit` to the consumer holding it (median, p95).
- request round trip (median, p95) of `get_run` on a finished 20-step run, `list_runs(limit=50)`,
  `snapshot()`, and for the remote side `ping` (the transport alone).
- ratio: remote / embedded (time) or embedded / remote (throughput), so higher = remote costs more.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/remote_bench.py` from a checkout
    sys.path.insert(0, str(ROOT))

from voltui.config import OrchestratorConfig  # noqa: E402
from voltui.engine.api import EngineAPI, StartRequest  # noqa: E402
from voltui.engine.models import AgentSpec, Event  # noqa: E402
from voltui.engine.orchestrator import Orchestrator  # noqa: E402
from voltui.remote.client import RemoteEngine  # noqa: E402
from voltui.remote.server import EngineServer  # noqa: E402

WINDOW = 5000  # events in flight at most during the throughput test
LATENCY_SAMPLES = 300


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Consumer:
    """Counts what a subscription delivers; wakes waiters on a target count or seq."""

    def __init__(self, api: EngineAPI, since: int) -> None:
        self.api = api
        self.since = since
        self.count = 0
        self.last: Event | None = None
        self.arrived_at = 0.0
        self.lagged = 0
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        since = self.since
        while True:
            try:
                async for batch in self.api.subscribe("bench:*", since_seq=since):
                    self.count += len(batch)
                    self.last = batch[-1]
                    self.arrived_at = time.perf_counter()
                    since = batch[-1].seq
                    self.changed.set()
                return
            except Exception as exc:  # SubscriptionLagged: count it and carry on from here
                self.lagged += 1
                print(f"  ! subscription lagged: {exc}", file=sys.stderr)

    async def wait_count(self, n: int) -> None:
        while self.count < n:
            self.changed.clear()
            await self.changed.wait()

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def throughput(orch: Orchestrator, api: EngineAPI, n: int, line: str) -> dict[str, Any]:
    consumer = Consumer(api, orch.dispatcher.last_seq)
    await asyncio.sleep(0.05)  # let the subscription register
    emit = orch.dispatcher.emit
    start = time.perf_counter()
    for i in range(n):
        emit(
            "bench:output",
            "bench",
            {"step": "s", "attempt": 1, "stream": "stdout", "line": line, "i": i},
            correlation_id="bench-run",
        )
        if i % 250 == 249:
            await asyncio.sleep(0)
            if i + 1 - consumer.count > WINDOW:
                await consumer.wait_count(i + 1 - WINDOW // 2)
    await consumer.wait_count(n)
    elapsed = consumer.arrived_at - start
    await consumer.close()
    return {"rate": n / elapsed, "elapsed": elapsed, "lagged": consumer.lagged}


async def event_latency(orch: Orchestrator, api: EngineAPI) -> list[float]:
    consumer = Consumer(api, orch.dispatcher.last_seq)
    await asyncio.sleep(0.05)
    out: list[float] = []
    for i in range(LATENCY_SAMPLES):
        sent = time.perf_counter()
        orch.dispatcher.emit("bench:ping", "bench", {"i": i})
        await consumer.wait_count(i + 1)
        out.append(consumer.arrived_at - sent)
    await consumer.close()
    return out


async def round_trips(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    for _ in range(5):  # warm-up
        await call()
    out: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t0)
    return out


async def main(args: argparse.Namespace) -> None:
    line = "x" * args.line
    with tempfile.TemporaryDirectory(prefix="vrb-", dir="/tmp") as tmp:
        config = OrchestratorConfig(
            db=Path(tmp) / "bench.db",
            workflows_dir=ROOT / "sample-workflows",
            agents=[
                AgentSpec(
                    id="sim",
                    kind="simulated",
                    capabilities=["simulated"],
                    capacity=100,
                    config={"speed": 50, "seed": 1},
                )
            ],
        )
        async with Orchestrator(config) as orch:
            server = EngineServer(orch, socket_path=Path(tmp) / "s.sock")
            await server.start()
            remote = RemoteEngine(socket_path=Path(tmp) / "s.sock", heartbeat=0)
            await remote.connect()
            try:
                run = await orch.start_workflow(StartRequest(workflow="simulated_load"))
                await orch.wait_run(run.id)
                sides: dict[str, EngineAPI] = {"embedded": orch, "remote": remote}

                results: dict[str, dict[str, Any]] = {}
                for name, api in sides.items():
                    r: dict[str, Any] = {}
                    r["throughput"] = await throughput(orch, api, args.events, line)
                    r["event_latency"] = await event_latency(orch, api)
                    r["get_run"] = await round_trips(lambda a=api: a.get_run(run.id), args.requests)
                    r["list_runs"] = await round_trips(lambda a=api: a.list_runs(), args.requests)
                    r["snapshot"] = await round_trips(
                        lambda a=api: a.snapshot(), max(50, args.requests // 3)
                    )
                    results[name] = r
                results["remote"]["ping"] = await round_trips(remote.ping, args.requests)
            finally:
                await remote.close()
                await server.stop()
    report(results, args)


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    emb, rem = results["embedded"], results["remote"]
    print(
        f"remote bench: {args.events} events of a {args.line}-char line, {args.requests} requests"
        " per figure; server and client share one process and one event loop"
    )
    print(f"{'figure':<34}{'embedded':>14}{'remote':>14}{'ratio':>9}")

    def row(label: str, e: float | None, r: float, unit: str, ratio: float | None) -> None:
        es = f"{e:,.{0 if unit == '/s' else 3}f}{unit}" if e is not None else "n/a"
        rs = f"{r:,.{0 if unit == '/s' else 3}f}{unit}"
        rt = f"{ratio:.2f}x" if ratio is not None else ""
        print(f"{label:<34}{es:>14}{rs:>14}{rt:>9}")

    te, tr = emb["throughput"], rem["throughput"]
    row("events delivered /s", te["rate"], tr["rate"], "/s", te["rate"] / tr["rate"])
    for key, label in (("event_latency", "event latency"),):
        for q, qn in ((0.5, "median"), (0.95, "p95")):
            e, r = pct(emb[key], q) * 1e3, pct(rem[key], q) * 1e3
            row(f"{label} {qn}", e, r, " ms", r / e if e else None)
    for key in ("get_run", "list_runs", "snapshot"):
        for q, qn in ((0.5, "median"), (0.95, "p95")):
            e, r = pct(emb[key], q) * 1e3, pct(rem[key], q) * 1e3
            row(f"{key} round trip {qn}", e, r, " ms", r / e if e else None)
    for q, qn in ((0.5, "median"), (0.95, "p95")):
        row(f"ping round trip {qn}", None, pct(rem["ping"], q) * 1e3, " ms", None)
    lagged = te["lagged"] + tr["lagged"]
    print(f"subscription resyncs during the run: {lagged}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--line", type=int, default=80, help="characters per output line")
    asyncio.run(main(parser.parse_args()))
