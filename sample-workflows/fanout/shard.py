"""One fan_out branch as a command step: `python -m fanout.shard [--index N]`.

Reads the step's JSON document on stdin, takes shard `params.index` (or VOLTUI_PARAM_INDEX) of
the `split` output, measures each file and prints the shard's totals as the last stdout line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from fanout.measure import measure, tree_digest


def run_shard(split: dict[str, Any], index: int) -> dict[str, Any]:
    """Measure every file of one shard; a missing file fails the shard rather than skewing it."""
    shards = split["shards"]
    if not 0 <= index < len(shards):
        raise SystemExit(f"error: shard index {index} outside 0..{len(shards) - 1}")
    root = Path(split["root"])
    files = []
    for relative in shards[index]:
        path = root / relative
        if not path.is_file():
            raise SystemExit(f"error: {relative} vanished from {root} after the split")
        files.append({"path": relative, **measure(path)})
    return {
        "index": index,
        "files": len(files),
        "lines": sum(f["lines"] for f in files),
        "words": sum(f["words"] for f in files),
        "bytes": sum(f["bytes"] for f in files),
        "digest": tree_digest(files),
        "per_file": files,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fanout.shard", description=__doc__)
    parser.add_argument("--index", type=int, default=None)
    args = parser.parse_args(argv)
    text = sys.stdin.read() if sys.stdin is not None and not sys.stdin.isatty() else ""
    payload: dict[str, Any] = json.loads(text) if text.strip() else {}
    index = args.index
    if index is None:
        raw = (payload.get("params") or {}).get("index", os.environ.get("VOLTUI_PARAM_INDEX"))
        if raw is None:
            print("error: no shard index (params.index or --index)", file=sys.stderr)
            return 2
        index = int(raw)
    split = (payload.get("upstream") or {}).get("split")
    if not split:
        print("error: no split output upstream; run this as a step after `split`", file=sys.stderr)
        return 2
    result = run_shard(split, index)
    for item in result["per_file"]:
        print(f"{item['lines']:>6} {item['words']:>7} {item['bytes']:>8} {item['path']}")
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
