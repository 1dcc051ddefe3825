"""Python steps of the `fan_out` sample: `split` before the branches, `merge` after them."""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path
from typing import Any, Protocol

from fanout.measure import tree_digest

SKIP_DIRS = {"__pycache__", ".git", ".venv", "node_modules", ".pytest_cache", ".ruff_cache"}


class Context(Protocol):
    """The part of voltui's StepContext these steps use."""

    run_id: str
    inputs: dict[str, Any]
    upstream: dict[str, Any]
    base_dir: Path
    run_dir: Path

    @property
    def params(self) -> dict[str, Any]: ...

    def log(self, line: str) -> None: ...


def find_files(root: Path, patterns: list[str]) -> list[Path]:
    """Files under root matching any pattern, skipping caches and virtualenvs, sorted."""
    found: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in names:
            if any(fnmatch.fnmatch(name, p) for p in patterns):
                found.append(Path(folder) / name)
    return sorted(found)


def split(ctx: Context) -> dict[str, Any]:
    """Deal the source files into `params.shards` shards of similar total size.

    Largest file first onto the lightest shard keeps the branches' work even, so the fan-out
    finishes when the slowest of equals does, not when one unlucky branch does.
    """
    count = int(ctx.params.get("shards", 8))
    root = Path(str(ctx.inputs.get("source") or "."))
    root = (root if root.is_absolute() else ctx.base_dir / root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"source folder {root} not found; set the `source` input")
    patterns = [p.strip() for p in str(ctx.inputs.get("patterns") or "*").split(",") if p.strip()]
    files = find_files(root, patterns)
    if not files:
        raise FileNotFoundError(f"no files matching {patterns} under {root}")
    shards: list[list[str]] = [[] for _ in range(count)]
    weight = [0] * count
    for path in sorted(files, key=lambda p: (-p.stat().st_size, str(p))):
        lightest = min(range(count), key=lambda i: (weight[i], i))
        shards[lightest].append(str(path.relative_to(root)))
        weight[lightest] += path.stat().st_size
    for i, shard in enumerate(shards):
        shard.sort()
        ctx.log(f"shard {i}: {len(shard)} files, {weight[i]} bytes")
    return {"root": str(root), "patterns": patterns, "files": len(files), "shards": shards}


def merge(ctx: Context) -> dict[str, Any]:
    """Combine the shard results into run_dir/fan_out_report.json, checking none went missing."""
    plan = ctx.upstream["split"]
    results = sorted(
        (out for step, out in ctx.upstream.items() if step != "split"), key=lambda r: r["index"]
    )
    indexes = [r["index"] for r in results]
    if indexes != list(range(len(plan["shards"]))):
        raise ValueError(f"expected shards 0..{len(plan['shards']) - 1}, got {indexes}")
    files = [item for r in results for item in r["per_file"]]
    measured = sorted(f["path"] for f in files)
    expected = sorted(p for shard in plan["shards"] for p in shard)
    if measured != expected:
        missing = sorted(set(expected) - set(measured))
        raise ValueError(f"shards measured {len(measured)} of {len(expected)} files: {missing}")
    totals = {k: sum(r[k] for r in results) for k in ("files", "lines", "words", "bytes")}
    report = {
        "run_id": ctx.run_id,
        "root": plan["root"],
        "patterns": plan["patterns"],
        "totals": totals,
        "digest": tree_digest(files),
        "shards": [
            {k: r[k] for k in ("index", "files", "lines", "bytes", "digest")} for r in results
        ],
        "largest": sorted(files, key=lambda f: (-f["lines"], f["path"]))[:5],
        "files": sorted(files, key=lambda f: f["path"]),
    }
    path = ctx.run_dir / "fan_out_report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    ctx.log(
        f"{totals['files']} files, {totals['lines']} lines, {totals['words']} words, "
        f"{totals['bytes']} bytes in {len(results)} shards"
    )
    return {"report": str(path), **totals, "digest": report["digest"]}
