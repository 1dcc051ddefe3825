"""Value checks for command-line flags, as argparse `type=` functions.

Every flag that takes a value names one of these, so a bad value (`--limit 0`, `--tail -1`,
`--refresh abc`, an empty `--db ''`) is refused while the command line is parsed, with the same
one-line message shape as argparse's own errors, before any engine, file or socket is touched.

Each check carries `bad_examples`: values it must refuse. The CLI tests feed them to every flag
of every command, so a new flag is covered as soon as it names its check. Cheap to import: only
the standard library (the `--tcp` check imports its parser when used).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

MAX_COUNT = 1_000_000_000
"""Upper bound for counts: SQLite cannot bind integers beyond 64 bits, and no one means more."""

MIN_REFRESH_HZ = 0.5
MAX_REFRESH_HZ = 60.0

F = TypeVar("F", bound=Callable[[str], Any])


def _refuses(*examples: str) -> Callable[[F], F]:
    """Attach the values a check must refuse (see the module docstring)."""

    def mark(func: F) -> F:
        func.bad_examples = examples  # type: ignore[attr-defined]
        return func

    return mark


def _whole_number(value: str, lowest: int) -> int:
    text = value.strip()
    try:
        number = int(text)
    except ValueError:
        shown = repr(value) if text else "nothing"
        raise argparse.ArgumentTypeError(
            f"expected a whole number from {lowest} to {MAX_COUNT:,}, got {shown}"
        ) from None
    if not lowest <= number <= MAX_COUNT:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from {lowest} to {MAX_COUNT:,}, got {number}"
        )
    return number


@_refuses("0", "-5", "", "abc", "2.5", "99999999999999999999999")
def positive_int(value: str) -> int:
    """A count of at least 1 (`--limit`, `--attempt`)."""
    return _whole_number(value, 1)


@_refuses("-1", "", "abc", "1e3", "99999999999999999999999")
def count(value: str) -> int:
    """A count that may be 0 (`--tail 0`: none of the recorded lines, only new ones)."""
    return _whole_number(value, 0)


@_refuses("0", "-1", "", "abc", "nan", "inf", "0.01", "1000")
def refresh_rate(value: str) -> float:
    """Repaints per second: from 0.5 (slower looks frozen) to 60 (a terminal shows no more)."""
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a rate in Hz like 10 or 2.5, got {value!r}"
        ) from None
    if not math.isfinite(rate) or not MIN_REFRESH_HZ <= rate <= MAX_REFRESH_HZ:
        raise argparse.ArgumentTypeError(
            f"expected a rate from {MIN_REFRESH_HZ:g} to {MAX_REFRESH_HZ:g} Hz, got {value!r}"
        )
    return rate


@_refuses("", "abc", "-5m", "nan", "1e999s", "0")
def age(value: str) -> float:
    """A duration above zero like 30d, 12h or 90m (`prune --older-than`)."""
    from voltui.engine.durations import parse_duration  # small, and only when the flag is used

    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration above zero like 30d, got {value!r}")
    return seconds


@_refuses("", "   ")
def text(value: str) -> str:
    """Any non-blank text (ids, names, patterns)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


@_refuses("", "   ")
def path(value: str) -> Path:
    """A path that may not exist yet (a socket to create, a token file)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("expected a path, got nothing")
    return Path(value).expanduser()


@_refuses("", "/", "/dev/null/voltui.db")
def state_file(value: str) -> Path:
    """The SQLite state file: a file, or a path whose folder can be created.

    The store creates missing folders, so only what can never work is refused here (a folder,
    a path under a file); the rest (permissions, /proc) surfaces as a one-line OSError later.
    """
    where = path(value)
    if where.is_dir():
        raise argparse.ArgumentTypeError(
            f"{where} is a folder; give the state file's path, e.g. {where / 'voltui.db'}"
        )
    for parent in where.parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{parent} is a file, not a folder")
            break
    return where


@_refuses("", "/nonexistent-voltui/voltui.toml", "/")
def config_file(value: str) -> Path:
    """An existing config file (`--config`)."""
    where = path(value)
    if not where.is_file():
        what = "is a folder" if where.is_dir() else "does not exist"
        raise argparse.ArgumentTypeError(f"config file {where} {what}")
    return where


@_refuses("", "/nonexistent-voltui-workflows", "/dev/null")
def workflows_dir(value: str) -> Path:
    """An existing folder of workflow files (`--workflows`)."""
    where = path(value)
    if not where.is_dir():
        what = "is not a folder" if where.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"workflows folder {where} {what}")
    return where


@_refuses("", "noequals", "=value")
def key_value(value: str) -> str:
    """`KEY=VALUE` (`--input`); the engine checks KEY against the workflow's inputs."""
    key, sep, _rest = value.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE, e.g. --input module_name=inventory, got {value!r}"
        )
    return value


@_refuses("", "host:notaport", "127.0.0.1:70000")
def tcp_address(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` or `PORT` (`--tcp`)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("expected HOST:PORT, e.g. 127.0.0.1:7300")
    from voltui.engine.errors import UserError
    from voltui.remote.paths import parse_tcp

    try:
        return parse_tcp(value)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--tcp {value!r}: ")) from None


MAX_USD = 1_000_000.0


@_refuses("", "abc", "0", "-1", "nan", "inf", "1e9")
def usd(value: str) -> float:
    """An amount of US dollars above zero, like 2.50 or $2.50 (`--budget-usd`)."""
    text = value.strip().removeprefix("$")
    try:
        amount = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an amount in US dollars like 2.50, got {value!r}"
        ) from None
    if not math.isfinite(amount) or not 0 < amount <= MAX_USD:
        raise argparse.ArgumentTypeError(
            f"expected an amount above 0 and at most {MAX_USD:,.0f} US dollars, got {value!r}"
        )
    return amount
