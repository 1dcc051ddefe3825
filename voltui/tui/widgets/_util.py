"""Small helpers shared by the panel widgets (formatting only, no state)."""

from __future__ import annotations

import time

from rich.text import Text

from voltui.safetext import clean


def safe(value: object, *, max_len: int | None = 80) -> Text:
    """Untrusted text as a literal `Text`: markup in it is shown, escapes are stripped."""
    return Text("" if value is None else clean(value, max_len=max_len))


def clock(ts: float | None) -> str:
    """Local wall-clock time of a timestamp, or `-`."""
    if ts is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(ts))


def bar(used: int, total: int, width: int = 8) -> str:
    """A small text bar (`███░░░░░`) that reads without colour."""
    if total <= 0:
        return "░" * width
    filled = round(width * min(1.0, used / total))
    return "█" * filled + "░" * (width - filled)


def megabytes(n: int) -> str:
    return f"{n / 1_048_576:.0f}MB"
