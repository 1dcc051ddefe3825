"""Human durations (`250ms`, `5s`, `10m`, `1h`, `1h30m`) as float seconds.

Workflow files are written by people, so durations read the way people write them; inside the
engine every duration is a plain float of seconds so arithmetic never needs a unit.
"""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_WHOLE = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*)+$")


def parse_duration(value: object) -> float:
    """Return seconds for a number (taken as seconds) or a string like `1h30m` or `250ms`.

    Raises ValueError with a message that shows the accepted forms, because this text reaches
    the user verbatim through the workflow loader.
    """
    if isinstance(value, bool):
        raise ValueError("a duration cannot be true/false; write e.g. 30s, 250ms, 10m or 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration {value!r} is negative; write 0 or more, e.g. 250ms, 5s")
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            return float(text)
        if _WHOLE.match(text):
            return sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    raise ValueError(
        f"{value!r} is not a duration; write a number of seconds or e.g. 250ms, 5s, 10m, 1h, 1h30m"
    )


def format_duration(seconds: float | None) -> str:
    """Short, fixed-style rendering for tables and logs (`850ms`, `12.3s`, `4m05s`, `2h03m`)."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        m, s = divmod(int(seconds), 60)
        return f"{m}m{s:02d}s"
    h, rem = divmod(int(seconds), 3600)
    return f"{h}h{rem // 60:02d}m"
