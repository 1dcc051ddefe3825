"""What the sanitiser costs per log line, against the previous implementation as a baseline.

`voltui.safetext.clean` runs for every step output line the dashboard or the CLI shows, so its
cost per line matters. The baseline is the version before bidi and invisible characters were
neutralised (two regex passes on every line); both run here, on the same lines, in this process.

    .venv/bin/python bench/safetext_bench.py            # 200,000 lines of each kind
    .venv/bin/python bench/safetext_bench.py --lines 50000
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable

from voltui.safetext import clean

_OLD_ESCAPES = re.compile(
    r"""
    \x1b\[[0-?]*[ -/]*[@-~]
  | \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?
  | \x1b[PX^_][^\x1b]*(?:\x1b\\)?
  | \x1b[@-Z\\-_]
  | \x9b[0-?]*[ -/]*[@-~]
    """,
    re.VERBOSE,
)
_OLD_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x80-\x9f]")


def baseline(text: str) -> str:
    """The sanitiser as it was: escapes and controls only, no fast path."""
    value = text.replace("\r\n", " ").replace("\n", " ")
    return _OLD_CONTROLS.sub("", _OLD_ESCAPES.sub("", value))


KINDS = {
    "ascii log line": "2024-05-01 12:00:00 INFO worker-3 processed item {i} of 99999 in 12 ms",
    "unicode log line": "2024-05-01 12:00:00 INFO café 漢字 🙂 processed item {i} of 99999",
    "coloured (ANSI)": "\x1b[32m2024-05-01\x1b[0m INFO \x1b[1mitem {i}\x1b[0m\tdone",
    "hostile (bidi)": "item {i} done\u202e\u2066 evil \u2069\u200b\u2028forged",
}


def per_line(fn: Callable[[str], str], lines: list[str]) -> float:
    start = time.perf_counter()
    for line in lines:
        fn(line)
    return (time.perf_counter() - start) / len(lines) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    args = parser.parse_args()
    print(f"{'kind':<20} {'baseline us':>12} {'clean us':>10} {'ratio':>7}")
    for kind, template in KINDS.items():
        lines = [template.format(i=i) for i in range(args.lines)]
        old = per_line(baseline, lines)
        new = per_line(clean, lines)
        print(f"{kind:<20} {old:>12.2f} {new:>10.2f} {new / old:>6.2f}x")


if __name__ == "__main__":
    main()
