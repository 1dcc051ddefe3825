"""A long step for cancel demos: one progress line a second for `seconds` (default 120).

Each tick does a slice of real work — extending a prime sieve — and reports how far it got, then
waits for the next whole second, so output arrives at a steady pace whatever the machine's
speed. SIGTERM (how voltui cancels a command step) ends it promptly with a note on stderr.
With `--summary` it is the wrap-up step: it reports what the long steps left upstream.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from types import FrameType


class Cancelled(Exception):
    """Raised from the SIGTERM handler so the loop can say where it stopped."""


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise Cancelled


def primes_below(limit: int) -> int:
    """Count primes below limit with a plain sieve: honest CPU work with a checkable answer."""
    sieve = bytearray([1]) * limit
    sieve[:2] = b"\x00\x00"
    for n in range(2, math.isqrt(limit - 1) + 1):
        if sieve[n]:
            sieve[n * n :: n] = bytearray(len(range(n * n, limit, n)))
    return sum(sieve)


def run(seconds: int, interval: float) -> int:
    signal.signal(signal.SIGTERM, _on_term)
    ticks = max(1, round(seconds / interval))
    start = time.monotonic()
    limit, found, below = 10_000, 0, 0
    tick = 0
    try:
        for tick in range(1, ticks + 1):
            found, below = primes_below(limit), limit
            print(
                f"tick {tick}/{ticks} ({100 * tick // ticks}%): {found} primes below {limit}",
                flush=True,
            )
            limit += 10_000
            delay = start + tick * interval - time.monotonic()
            if delay > 0 and tick < ticks:
                time.sleep(delay)
    except Cancelled:
        print(f"cancelled at tick {tick}/{ticks}", file=sys.stderr, flush=True)
        return 143
    elapsed = round(time.monotonic() - start, 2)
    print(json.dumps({"ticks": ticks, "elapsed": elapsed, "primes": found, "below": below}))
    return 0


def summary() -> int:
    text = sys.stdin.read() if not sys.stdin.isatty() else ""
    upstream = (json.loads(text) if text.strip() else {}).get("upstream", {})
    progress = upstream.get("progress") or {}
    print(f"progress finished {progress.get('ticks', '?')} ticks; sleeper finished", flush=True)
    print(json.dumps({"done": sorted(upstream), "ticks": progress.get("ticks")}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=None)
    parser.add_argument("--interval", type=float, default=None)
    parser.add_argument("--summary", action="store_true", help="wrap-up mode")
    args = parser.parse_args(argv)
    if args.summary:
        return summary()
    seconds = args.seconds or int(os.environ.get("VOLTUI_INPUT_SECONDS", "120"))
    interval = args.interval or float(os.environ.get("VOLTUI_PARAM_INTERVAL", "1"))
    return run(seconds, interval)


if __name__ == "__main__":
    sys.exit(main())
