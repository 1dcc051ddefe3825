"""A step that fails its first attempts on purpose, to show retries: `python scripts/flaky.py`.

Reads the attempt number from VOLTUI_ATTEMPT (1-based) and fails with a clear message on stderr
until attempt `succeed_on` (VOLTUI_PARAM_SUCCEED_ON, default 3). When it succeeds it does the
small real job of the step: it reads sample_project/requirements.md and reports its sha256.
With `--report` it is the follow-up step: it reads that result from stdin and reports it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
DATA = HERE / "sample_project" / "requirements.md"


def fetch(attempt: int, succeed_on: int) -> int:
    print(f"attempt {attempt}: reading {DATA.name} (succeeds on attempt {succeed_on})", flush=True)
    if attempt < succeed_on:
        print(
            f"error: transient failure on attempt {attempt} of the flaky demo step; "
            f"it succeeds on attempt {succeed_on}, so a retry policy will get it through",
            file=sys.stderr,
            flush=True,
        )
        return 1
    data = DATA.read_bytes()
    result = {
        "attempt": attempt,
        "file": DATA.name,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


def report() -> int:
    text = sys.stdin.read() if not sys.stdin.isatty() else ""
    upstream = (json.loads(text) if text.strip() else {}).get("upstream", {})
    fetched = upstream.get("unstable_fetch")
    if not fetched:
        print("error: no unstable_fetch output upstream", file=sys.stderr)
        return 1
    print(f"{fetched['file']} fetched on attempt {fetched['attempt']}: sha256 {fetched['sha256']}")
    print(json.dumps({"attempts_needed": fetched["attempt"], "sha256": fetched["sha256"]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--report", action="store_true", help="report the upstream result")
    args = parser.parse_args(argv)
    if args.report:
        return report()
    attempt = int(os.environ.get("VOLTUI_ATTEMPT", "1"))
    succeed_on = int(os.environ.get("VOLTUI_PARAM_SUCCEED_ON", "3"))
    return fetch(attempt, succeed_on)


if __name__ == "__main__":
    sys.exit(main())
