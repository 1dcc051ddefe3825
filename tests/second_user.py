"""Run a command as a second local user (`nobody`), for tests of what other users can reach.

The suite runs as root on the build machine, so `setpriv` can drop to `nobody`; elsewhere the
tests that need it are skipped with the reason. Commands run as `nobody` use only the system
Python and the standard library: the project's venv usually lives under a private home.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEM_PYTHON = next(
    (p for p in ("/usr/bin/python3", "/bin/python3") if Path(p).exists()),
    None,
)


def why_not() -> str | None:
    """None when commands can run as `nobody`, else the reason they cannot."""
    if os.geteuid() != 0:
        return "switching to a second user needs root (the suite runs as a normal user here)"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return "there is no `nobody` user"
    return None


def nobody_ids() -> tuple[int, int]:
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


requires_second_user = pytest.mark.skipif(why_not() is not None, reason=why_not() or "")


def as_nobody(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """`argv` run as `nobody` (no supplementary groups), output captured as text."""
    uid, gid = nobody_ids()
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        cmd, capture_output=True, text=True, timeout=30, check=False, **kwargs
    )


def as_nobody_popen(argv: list[str], **kwargs: object) -> subprocess.Popen[str]:
    """`argv` started as `nobody` in the background."""
    uid, gid = nobody_ids()
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]
    return subprocess.Popen(cmd, text=True, **kwargs)  # type: ignore[call-overload,no-any-return]
