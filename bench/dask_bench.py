"""What running steps on Dask costs, next to the engine's own Python agent, in the same run.

    python bench/dask_bench.py [--steps 40] [--repeat 3]

One fan-out workflow (`--steps` independent Python steps that return at once, so every measured
second is overhead) runs on two engines, one after the other, in this process:

- local: one `python` agent with capacity 4 (steps run in the engine's threads);
- dask: a `DaskPool` on a LocalCluster of 2 worker processes x 2 threads (also 4 slots), with
  only the Dask workers as agents. Cluster start-up is not counted.

Each side has one warm-up run (module imports, connections), then `--repeat` measured runs.

Figures, per side (best of the measured runs, so a busy moment on the machine does not count):

- per step (wall): run wall time from `start_workflow` to the run's end, divided by the steps;
- step latency: mean time a step spends in its agent (started -> finished in the run record),
  i.e. one round trip to the worker and back for Dask;
- ratio: dask / local for both.

Needs the voltui[dask] extra (`distributed`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/dask_bench.py` from a checkout
    sys.path.insert(0, str(ROOT))

from voltui.config import OrchestratorConfig  # noqa: E402
from voltui.engine.api import StartRequest  # noqa: E402
from voltui.engine.models import AgentSpec, RunState  # noqa: E402
from voltui.engine.orchestrator import Orchestrator  # noqa: E402

STEP_CODE = "def noop(ctx):\n    return {'step': ctx.step.id}\n"


def write_workflow(folder: Path, steps: int) -> Path:
    (folder / "bench_dask_steps.py").write_text(STEP_CODE)
    lines = [f"id: fanout\nmax_parallel: {steps}\nsteps:"]
    lines += [
        f"  - {{id: s{i:03d}, requires: [python], run: {{python: 'bench_dask_steps:noop'}}}}"
        for i in range(steps)
    ]
    path = folder / "fanout.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def one_run(orch: Orchestrator, path: Path) -> tuple[float, float]:
    """(wall seconds, mean seconds a step spent in its agent)."""
    began = time.perf_counter()
    run = await orch.start_workflow(StartRequest(workflow=str(path)))
    done = await orch.wait_run(run.id)
    wall = time.perf_counter() - began
    if done.state is not RunState.SUCCEEDED:
        raise SystemExit(f"benchmark run failed: {done.error}")
    detail = await orch.get_run(run.id)
    spans = [
        s.finished_at - s.started_at
        for s in detail.steps
        if s.finished_at is not None and s.started_at is not None
    ]
    return wall, statistics.fmean(spans)


async def measure(
    name: str,
    folder: Path,
    path: Path,
    agents: list[AgentSpec],
    repeat: int,
    attach: Callable[[Orchestrator], Awaitable[Callable[[], Awaitable[None]]]] | None = None,
) -> tuple[float, float]:
    config = OrchestratorConfig(db=folder / f"{name}.db", agents=agents)
    orch = Orchestrator(config)
    await orch.start(watch=False)
    detach = await attach(orch) if attach is not None else None
    try:
        await one_run(orch, path)  # warm-up
        results = [await one_run(orch, path) for _ in range(repeat)]
    finally:
        await orch.stop()
        if detach is not None:
            await detach()
    return min(r[0] for r in results), min(r[1] for r in results)


async def attach_dask(orch: Orchestrator) -> Callable[[], Awaitable[None]]:
    from voltui.engine.dask import DaskPool

    pool = DaskPool(
        orch,
        "local",
        local_options={"dashboard_address": ":0", "silence_logs": logging.ERROR},
    )
    began = time.perf_counter()
    await pool.start()
    print(
        f"LocalCluster with {len(pool.agents)} workers up in {time.perf_counter() - began:.1f} s "
        "(not counted)"
    )
    return pool.stop


def ms(seconds: float) -> str:
    return f"{seconds * 1000:9.2f} ms"


async def main(steps: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="voltui-dask-bench-") as tmp:
        folder = Path(tmp)
        path = write_workflow(folder, steps)
        local = await measure(
            "local",
            folder,
            path,
            [AgentSpec(id="py", kind="python", capabilities=["python"], capacity=4)],
            repeat,
        )
        dask = await measure("dask", folder, path, [], repeat, attach=attach_dask)
    print()
    print(f"fan-out of {steps} trivial python steps, 4 slots each side, best of {repeat} runs")
    print(f"{'':14}{'per step (wall)':>18}{'step latency':>16}")
    print(f"{'local agent':14}{ms(local[0] / steps):>18}{ms(local[1]):>16}")
    print(f"{'dask cluster':14}{ms(dask[0] / steps):>18}{ms(dask[1]):>16}")
    print(
        f"{'ratio dask/local':14}{dask[0] / local[0]:>16.1f}x{dask[1] / local[1]:>15.1f}x"
        if local[0] and local[1]
        else "ratio: local figures too small to divide by"
    )


if __name__ == "__main__":  # LocalCluster starts worker processes by spawning this interpreter
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.steps, args.repeat))
