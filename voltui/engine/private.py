"""Least privilege on disk: voltui's state is for its owner alone.

The database holds run inputs (secrets passed with `--input` among them) and every step's
output; run folders hold step artefacts. Created with the default umask they were 0644/0755,
readable by every local user. Here they are created 0600 (files) and 0700 (folders), and
state left open by an earlier version is tightened when it is opened again, with a notice that
is logged (a warning, so the CLI shows it on stderr) and returned for the caller to show.

Only things this user owns are ever changed: another user's file is left as it is (changing
it would fail, or as root would surprise its owner). Symbolic links are neither followed nor
changed: a link planted in a shared folder must not let us create or chmod its target.

The process umask is left alone (changing it is process-wide and racy with threads); modes are
given explicitly and fixed up with `fchmod`/`chmod`, which the umask cannot reduce.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "create_private_file",
    "ensure_private_dir",
    "private_umask",
    "secure_store",
    "tighten_file",
]

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
_OPEN_TO_OTHERS = stat.S_IRWXG | stat.S_IRWXO
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
"""Files SQLite keeps next to a database; it creates them with the database file's mode."""
RUNS_FOLDER = "runs"
"""Where `OrchestratorConfig.runs_dir()` keeps run folders: next to the database."""


def _notice(message: str) -> str:
    log.warning("%s", message)
    return message


def _tighten(path: Path, st: os.stat_result, mode: int, what: str) -> str | None:
    """chmod `path` to `mode` if it is ours and open to others; the notice, or None."""
    current = stat.S_IMODE(st.st_mode)
    if not current & _OPEN_TO_OTHERS or st.st_uid != os.geteuid():
        return None
    try:
        os.chmod(path, mode)
    except OSError as exc:
        return _notice(
            f"{what} {path} is readable by other local users (mode {current:o}) and could not "
            f"be made private: {exc.strerror or exc}; run: chmod {mode:o} {path}"
        )
    return _notice(
        f"made {what} {path} private (mode {current:o} -> {mode:o}): it holds run inputs and "
        "step output, which other local users could read"
    )


def tighten_file(path: Path, *, what: str = "state file") -> str | None:
    """Make an existing regular file of ours 0600; a notice when it changed, else None.

    Missing files, symlinks and other users' files are left alone.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return _tighten(path, st, PRIVATE_FILE, what)


def ensure_private_dir(path: Path, *, tighten: bool = True, what: str = "folder") -> list[str]:
    """Create `path` with every missing parent as 0700; notices of what was tightened.

    `Path.mkdir(parents=True, mode=...)` gives the parents the umask's mode (0755), so each
    missing level is made here. An existing `path` of ours that others can read is tightened
    when `tighten` (voltui's own folders), else left alone (a folder the user chose). A
    symlink or non-folder at `path` raises `NotADirectoryError`/`FileExistsError`.
    """
    path = Path(path)
    missing: list[Path] = []
    probe = path
    while True:
        try:
            st = os.lstat(probe)
            break
        except FileNotFoundError:
            missing.append(probe)
            if probe.parent == probe:
                raise
            probe = probe.parent
    notices: list[str] = []
    if not missing:
        if stat.S_ISLNK(st.st_mode):
            return notices  # a link the user made to a folder of their choice: not ours to chmod
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(path))
        if tighten:
            notice = _tighten(path, st, PRIVATE_DIR, what)
            if notice:
                notices.append(notice)
        return notices
    for level in reversed(missing):
        try:
            os.mkdir(level, PRIVATE_DIR)
        except FileExistsError:  # made meanwhile by another process: check it like any other
            if not os.path.isdir(level):
                raise
            continue
        os.chmod(level, PRIVATE_DIR)  # the umask may have taken bits away; never adds any
    return notices


def create_private_file(path: Path) -> bool:
    """Create `path` empty with mode 0600 unless it exists; True when it was created.

    O_NOFOLLOW|O_EXCL: a symlink planted at `path` is never followed to create its target.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, PRIVATE_FILE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)
    return True


def secure_store(db_path: Path) -> list[str]:
    """Prepare a SQLite state file before SQLite opens it; notices of what was tightened.

    A missing folder is created 0700 (an existing one is the user's choice and kept); a new
    database is created empty with mode 0600 first, since SQLite gives its `-wal`/`-shm`
    files the database's mode; an existing database, its side files and the `runs` folder
    next to it (`OrchestratorConfig.runs_dir()`) are tightened to 0600/0700.
    """
    db_path = Path(db_path)
    notices = ensure_private_dir(db_path.parent, tighten=False)
    with contextlib.suppress(OSError):  # cannot create it: SQLite says why, in its words
        create_private_file(db_path)
    for suffix in ("", *SQLITE_SIDE_FILES):
        notice = tighten_file(Path(f"{db_path}{suffix}"), what="state file")
        if notice:
            notices.append(notice)
    runs = db_path.parent / RUNS_FOLDER
    if runs.is_dir():
        notices += ensure_private_dir(runs, what="run folder")
    return notices


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """umask 0o077 for a short section that creates files whose mode cannot be passed (a
    socket's `bind`). Process-wide while it lasts: keep the section tiny and synchronous."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)
