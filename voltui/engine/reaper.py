"""Ending the child processes a crashed engine left behind.

Command steps run in their own session, so when the engine dies (SIGKILL, power loss of the
terminal) their processes live on. On the next start the interrupted steps name their process
group and its leader's start time; a process is only signalled when both still match, so a pid
the system has since reused for something else is left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import psutil

START_TIME_SLACK = 0.05


def process_start_time(pid: int) -> float | None:
    """The start time psutil reports for `pid`, or None when it is gone or not ours to see."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def reap_orphan(pid: int, started: float | None, grace: float = 2.0) -> bool:
    """Terminate, then kill, the process group `pid` if it is still the one recorded.

    Returns True when a matching group was found and signalled.
    """
    if started is None:
        return False
    now_started = process_start_time(pid)
    if now_started is None or abs(now_started - started) > START_TIME_SLACK:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(psutil.Error):
        if psutil.Process(pgid).status() == psutil.STATUS_ZOMBIE:
            return False
    return True
