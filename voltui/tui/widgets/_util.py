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


def bar(used: int, total: int, width: int = 8) -> str:
    """A small text bar (`███░░░░░`) that reads without colour."""
    if total <= 0:
        return "░" * width
    filled = round(width * min(1.0, used / total))
    return "█" * filled + "░" * (width - filled)


def megabytes(n: int) -> str:
    return f"{n / 1_048_576:.0f}MB"
