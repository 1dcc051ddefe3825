"""How long reading and checking workflow files takes, and what a catalogue re-list costs.

    python bench/loader_bench.py [--sizes 1000,5000,50000] [--chain 50000] [--repeat 3]
                                 [--profile FILE]

Each file is generated into a temporary folder and loaded with `voltui.engine.loader.
load_workflow`, which is exactly what `voltui validate` does (read, YAML parse, schema, DAG
checks). Shapes:

- layered: layers of `WIDTH` steps; each step depends on up to 3 steps of the layer before
  (seeded random choice), like the engine benchmark's DAG. Every step is a no-op python step
  with a name, a type, a timeout and params, so each carries a realistic handful of fields.
- chain: step i depends on step i-1; the deepest possible DAG, which trips any recursive check.

Per file: the size, the best of `--repeat` load times (wall and CPU), CPU µs per step, and the
baseline measured in the same process: libyaml only composing the file's node tree (the floor
any YAML loader with positions pays), with the ratio of the whole check to it.
The growth line compares CPU µs per step at the largest layered size with that at the smallest:
close to 1 means linear. CPU time is used there because on a shared machine wall time mostly
measures the neighbours.

The catalogue lines list a folder of the sample workflows plus twenty 250-step files through
`voltui.engine.catalogue.Catalogue`: the first listing parses every file, a re-list with nothing
changed only `stat`s them, and a re-list after one file changed parses that file alone.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/loader_bench.py` from a checkout
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from voltui.engine.loader import load_workflow  # noqa: E402

WIDTH = 50
DEPS = 3


def _step(lines: list[str], i: int, deps: list[int]) -> None:
    lines.append(f"  - id: s{i}")
    lines.append(f"    name: Step number {i}")
    lines.append("    type: execution")
    if deps:
        lines.append(f"    depends_on: [{', '.join(f's{d}' for d in deps)}]")
    lines.append('    run: {python: "pkg.mod:noop"}')
    lines.append("    timeout: 30s")
    lines.append(f"    params: {{index: {i}}}")


def layered_yaml(n: int, seed: int = 1) -> str:
    """`n` steps in layers of WIDTH, each depending on up to DEPS steps of the layer above."""
    rng = random.Random(seed)
    lines = [f"id: layered_{n}", "max_parallel: 64", "steps:"]
    for i in range(n):
        layer = i // WIDTH
        if layer == 0:
            deps: list[int] = []
        else:
            above = range((layer - 1) * WIDTH, layer * WIDTH)
            deps = sorted(rng.sample(above, DEPS))
        _step(lines, i, deps)
    return "\n".join(lines) + "\n"


def chain_yaml(n: int) -> str:
    """`n` steps, each depending on the one before."""
    lines = [f"id: chain_{n}", "steps:"]
    for i in range(n):
        _step(lines, i, [i - 1] if i else [])
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def gc_off() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def best_of(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best wall time and best CPU time of `repeat` calls (CPU time is what other processes on
    a shared machine disturb least, so the per-step figures and the growth use it)."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def compose_only(path: Path) -> None:
    """The baseline: libyaml composing the same file's node tree and nothing else."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(path.read_text(encoding="utf-8"))
    try:
        loader.get_single_node()
    finally:
        loader.dispose()


def bench_files(folder: Path, sizes: list[int], chain: int, repeat: int) -> None:
    print(
        f"{'file':<22}{'size':>10}{'wall (s)':>10}{'CPU (s)':>10}{'CPU µs/step':>13}"
        f"{'compose CPU (s)':>17}{'ratio':>7}"
    )
    per_step: dict[int, float] = {}
    cases: list[tuple[str, int, str]] = [(f"layered {n:,}", n, layered_yaml(n)) for n in sizes]
    if chain:
        cases.append((f"chain {chain:,}", chain, chain_yaml(chain)))
    for label, n, text in cases:
        path = folder / f"{label.replace(' ', '_').replace(',', '')}.yaml"
        path.write_text(text)
        times = repeat if n <= 5000 else 1
        wall, cpu = best_of(lambda p=path: load_workflow(p), times)
        with gc_off():  # as the loader does, so the ratio compares like with like
            _wall, floor = best_of(lambda p=path: compose_only(p), times)
        if label.startswith("layered"):
            per_step[n] = cpu / n * 1e6
        size = f"{len(text) / 1e6:.1f} MB"
        print(
            f"{label:<22}{size:>10}{wall:>10.3f}{cpu:>10.3f}{cpu / n * 1e6:>13.1f}"
            f"{floor:>17.3f}{cpu / floor:>7.1f}"
        )
    if len(per_step) > 1:
        small, large = min(per_step), max(per_step)
        print(
            f"growth of CPU µs/step from {small:,} to {large:,} layered steps: "
            f"{per_step[large] / per_step[small]:.2f}x (1.0 = linear)"
        )


def bench_catalogue(folder: Path, repeat: int) -> None:
    try:
        from voltui.engine.catalogue import Catalogue
    except ImportError:
        print("catalogue: voltui.engine.catalogue not available in this checkout")
        return
    cat_dir = folder / "catalogue"
    cat_dir.mkdir()
    for sample in (ROOT / "sample-workflows").glob("*.yaml"):
        shutil.copy(sample, cat_dir / sample.name)
    for k in range(20):
        (cat_dir / f"big_{k}.yaml").write_text(
            layered_yaml(250, seed=k).replace("layered_250", f"big_{k}")
        )
    settled = time.time() - 3600  # an hour old: past the catalogue's "just written" window
    for path in cat_dir.iterdir():
        os.utime(path, (settled, settled))
    files = len(list(cat_dir.iterdir()))
    catalogue = Catalogue(cat_dir)
    start = time.perf_counter()
    workflows, errors = catalogue.list()
    first = time.perf_counter() - start
    again = [0.0] * repeat
    for r in range(repeat):
        start = time.perf_counter()
        catalogue.list()
        again[r] = time.perf_counter() - start
    unchanged = statistics.median(again)
    print(
        f"catalogue of {files} files ({len(workflows)} workflows, {len(errors)} errors): "
        f"first list {first * 1000:.1f} ms, re-list unchanged {unchanged * 1000:.2f} ms "
        f"(median of {repeat}), ratio {first / max(unchanged, 1e-9):.0f}x; "
        f"files parsed: {catalogue.parses}"
    )
    touched = cat_dir / "big_0.yaml"
    touched.write_text(touched.read_text() + "# touched\n")
    start = time.perf_counter()
    catalogue.list()
    print(
        f"catalogue re-list after changing one 250-step file: "
        f"{(time.perf_counter() - start) * 1000:.1f} ms; files parsed: {catalogue.parses}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,5000,50000", help="layered step counts")
    parser.add_argument("--chain", type=int, default=50_000, help="chain length (0: skip)")
    parser.add_argument("--repeat", type=int, default=3, help="loads per file up to 5,000 steps")
    parser.add_argument("--profile", help="write a cProfile of the whole bench to this file")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    profiler = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory(prefix="voltui-loader-bench-") as tmp:
        if profiler:
            profiler.enable()
        bench_files(Path(tmp), sizes, args.chain, args.repeat)
        bench_catalogue(Path(tmp), args.repeat)
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
            print(f"profile written to {args.profile}")


if __name__ == "__main__":
    main()
