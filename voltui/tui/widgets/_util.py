"""Small helpers shared by the panel widgets (formatting only, no state)."""

from __future__ import annotations

import time

from rich.text import Text
from textual.dom import DOMNode

from voltui.safetext import clean


def safe(value: object, *, max_len: int | None = 80) -> Text:
    """Untrusted text as a literal `Text`: markup in it is shown, escapes are stripped."""
    return Text("" if value is None else clean(value, max_len=max_len))


def clock(ts: float | None) -> str:
    """Local wall-clock time of a timestamp, or `-`."""
    if ts is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(ts))


def wall_now(node: DOMNode) -> float:
    """The app's wall clock (`VoltApp.clock`; `time.time` in any other app): "now" for
    uptime and the durations of running steps and runs."""
    return getattr(node.app, "clock", time.time)()


def mono_now(node: DOMNode) -> float:
    """The app's monotonic clock (`VoltApp.monotonic`; `time.monotonic` in any other app)."""
    return getattr(node.app, "monotonic", time.monotonic)()


def ago(ts: float | None, now: float) -> str:
    """When something happened, relative to `now`: `12s ago`, `3m ago`, `5h ago` today, the
    local date and time (`Jan 14 09:30`) on another day, `-` for never."""
    if ts is None:
        return "-"
    seconds = now - ts
    if seconds < 0:
        seconds = 0.0
    then = time.localtime(ts)
    if time.localtime(now)[:3] != then[:3] and seconds >= 60:
        if time.localtime(now).tm_year != then.tm_year:
            return time.strftime("%Y-%m-%d", then)
        return time.strftime("%b %d %H:%M", then)
    if seconds < 60:
        return f"{int(seconds)}s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)}m ago"
    return f"{int(seconds // 3600)}h ago"


def bar(used: int, total: int, width: int = 8) -> str:
    """A small text bar (`███░░░░░`) that reads without colour."""
    if total <= 0:
        return "░" * width
    filled = round(width * min(1.0, used / total))
    return "█" * filled + "░" * (width - filled)


def megabytes(n: int) -> str:
    return f"{n / 1_048_576:.0f}MB"
