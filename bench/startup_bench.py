"""How long `voltui` takes to answer, timed as a user meets it: the whole process, median of runs.

    python bench/startup_bench.py [--runs 15] [--frames 5] [--program "python other/cli.py"]

Each figure is the wall time from spawning a new process to its answer, so interpreter start,
imports and set-up are all in it. Printed for each case: median, min and max, and the median
over the bare interpreter (`python -c pass`, measured in the same run) as the floor no command
can go below. Targets (issue 8, "fast start"): `voltui --help` under 0.3 s, the first dashboard
frame under 1 s.

- `voltui --help`, an argument mistake, `voltui completion bash` and `voltui __complete`: the
  paths that must not import Rich, pydantic-settings, the engine or the server.
- `voltui list --json`: a one-shot command with the embedded engine on a fresh state file.
`--program` times another build of the command (say an older checkout's `voltui/cli.py`) the
same way, for a before/after comparison.

- first dashboard frame: plain `voltui` on a pseudo-terminal (120x40) the bench opens itself,
  timed until the panel titles of the first full frame have been written; then the app is
  asked to quit (`q`) and, failing that, killed.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import select
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
VOLTUI = [PYTHON, "-m", "voltui"]
ESCAPES = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-B]")
FRAME_MARKERS = (b"1 Runs", b"3 Agents")
"""Border titles of two panels: both written means the first full frame is on the screen."""
FRAME_TIMEOUT = 30.0
TARGETS = {"voltui --help": 0.3, "first dashboard frame": 1.0}


def _env(state: Path) -> dict[str, str]:
    env = {**os.environ, "VOLTUI_DB": str(state / "voltui.db")}
    env.pop("VOLTUI_CONFIG", None)
    return env


def time_process(argv: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def first_frame(env: dict[str, str], size: tuple[int, int] = (120, 40)) -> float:
    """Seconds from spawning plain `voltui` on a pty until its first full frame is written."""
    master, slave = os.openpty()
    cols, rows = size
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    term_env = {**env, "TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows)}
    began = time.perf_counter()
    proc = subprocess.Popen(
        list(VOLTUI),
        cwd=ROOT,
        env=term_env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    seen = b""
    took = float("nan")
    try:
        while time.perf_counter() - began < FRAME_TIMEOUT:
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:
                break
            seen += ESCAPES.sub(b"", chunk)
            if all(marker in seen for marker in FRAME_MARKERS):
                took = time.perf_counter() - began
                break
        os.write(master, b"q")
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    finally:
        os.close(master)
    return took


def measure(name: str, runs: int, once: Callable[[], float]) -> tuple[str, list[float]]:
    once()  # warm the file cache: the figure is for a user's second start, not a cold disk
    return name, [once() for _ in range(runs)]


def report(rows: list[tuple[str, list[float]]], floor: float) -> None:
    print(f"{'case':<34} {'median':>8} {'min':>8} {'max':>8} {'/ python':>9}  target")
    for name, times in rows:
        good = [t for t in times if t == t]  # drop NaN (no frame within the timeout)
        if not good:
            print(f"{name:<34} {'no frame within ' + str(FRAME_TIMEOUT) + ' s':>35}")
            continue
        median = statistics.median(good)
        target = TARGETS.get(name)
        verdict = "" if target is None else f"< {target:g} s: {'yes' if median < target else 'NO'}"
        print(
            f"{name:<34} {median * 1000:>6.0f}ms {min(good) * 1000:>6.0f}ms "
            f"{max(good) * 1000:>6.0f}ms {median / floor:>8.1f}x  {verdict}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per command (median of them)")
    parser.add_argument("--frames", type=int, default=5, help="dashboard starts to time")
    parser.add_argument("--program", help="command line to time instead of `python -m voltui`")
    args = parser.parse_args()
    if args.program:
        VOLTUI[:] = shlex.split(args.program)
    state = Path(tempfile.mkdtemp(prefix="voltui-startup-"))
    try:
        env = _env(state)
        _name, bare = measure(
            "python -c pass", args.runs, lambda: time_process([PYTHON, "-c", "pass"], env)
        )
        floor = statistics.median(bare)
        cases: list[tuple[str, list[str]]] = [
            ("voltui --help", ["--help"]),
            ("voltui list --limit 0 (refused)", ["list", "--limit", "0"]),
            ("voltui completion bash", ["completion", "bash"]),
            ("voltui __complete watch ''", ["__complete", "watch", ""]),
            ("voltui list --json (engine)", ["list", "--json"]),
        ]
        rows = [("python -c pass", bare)]
        for name, argv in cases:
            rows.append(measure(name, args.runs, lambda a=argv: time_process(VOLTUI + a, env)))
        rows.append(measure("first dashboard frame", args.frames, lambda: first_frame(env)))
        print(
            f"voltui start-up, whole process, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
        )
        report(rows, floor)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
