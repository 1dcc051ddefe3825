"""Soak: N runs back to back against a real `voltui serve`, watching what grows.

Every `--every` runs it prints the server's RSS, open files, threads and the database size (file
plus -wal), and at the end the slope of each per 100 runs over the second half (after the
retention window has filled), so a leak shows as a slope well above zero while a bounded engine
shows a flat line. The server runs with a retention policy of `--keep` runs applied every
second, so the database must stay flat once the window is full.

Usage: `python bench/soak.py [--runs 1000] [--every 100] [--keep 200] [--steps 5]`
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from voltui.engine.api import StartRequest
from voltui.remote.client import RemoteEngine

WORKFLOW = """id: soak
steps:
{steps}
"""


def _workflow(folder: Path, steps: int) -> Path:
    lines = []
    for i in range(steps):
        dep = f"\n    depends_on: [s{i - 1}]" if i else ""
        lines.append(f"  - id: s{i}{dep}\n    run: {{simulated: {{duration: 0, output_lines: 3}}}}")
    path = folder / "soak.yaml"
    path.write_text(WORKFLOW.format(steps="\n".join(lines)))
    return path


def _db_size(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())


def _slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of value per 100 runs."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    num = sum((x - mx) * (y - my) for x, y in points)
    den = sum((x - mx) ** 2 for x, _ in points) or 1.0
    return num / den * 100


async def soak(runs: int, every: int, keep: int, steps: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="voltui-soak-"))
    os.chmod(folder, 0o700)
    db = folder / "soak.db"
    sock = folder / "run" / "voltui.sock"
    config = folder / "voltui.toml"
    config.write_text(
        f'[retention]\nkeep_runs = {keep}\nmax_age = "365d"\ninterval = "1s"\n'
        "[[agents]]\nid = 'sim'\nkind = 'simulated'\ncapacity = 8\n"
    )
    wf = _workflow(folder, steps)
    env = {**os.environ, "VOLTUI_CONFIG": str(config), "VOLTUI_DB": str(db)}
    server = subprocess.Popen(  # noqa: ASYNC220 - started once, reaped at the end
        [sys.executable, "-m", "voltui", "serve", "--socket", str(sock)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("voltui serve did not start")
            await asyncio.sleep(0.1)
        proc = psutil.Process(server.pid)
        samples: dict[str, list[tuple[int, float]]] = {
            "rss_mb": [],
            "open_files": [],
            "threads": [],
            "db_mb": [],
        }
        print(f"{'runs':>6} {'RSS MB':>8} {'files':>6} {'threads':>8} {'DB MB':>7} {'s/run':>7}")
        async with RemoteEngine(socket_path=sock) as engine:
            t0 = last = time.monotonic()
            for i in range(1, runs + 1):
                run = await engine.start_workflow(StartRequest(workflow=str(wf)))
                final = await engine.wait_run(run.id)
                if final.state.value != "succeeded":
                    raise SystemExit(f"run {run.id} ended {final.state.value}: {final.error}")
                if i % every == 0:
                    now = time.monotonic()
                    figures = {
                        "rss_mb": proc.memory_info().rss / 2**20,
                        "open_files": float(len(proc.open_files())),
                        "threads": float(proc.num_threads()),
                        "db_mb": _db_size(db) / 2**20,
                    }
                    for key, value in figures.items():
                        samples[key].append((i, value))
                    print(
                        f"{i:>6} {figures['rss_mb']:>8.1f} {figures['open_files']:>6.0f} "
                        f"{figures['threads']:>8.0f} {figures['db_mb']:>7.2f} "
                        f"{(now - last) / every:>7.3f}"
                    )
                    last = now
            total = time.monotonic() - t0
        half = [(k, v[len(v) // 2 :]) for k, v in samples.items()]
        print(f"{runs} runs of {steps} steps in {total:.1f} s ({total / runs * 1000:.0f} ms/run)")
        print(
            "slope per 100 runs over the second half: "
            + ", ".join(f"{k} {_slope(points):+.3f}" for k, points in half)
        )
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--keep", type=int, default=200)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(soak(args.runs, args.every, args.keep, args.steps))


if __name__ == "__main__":
    main()
