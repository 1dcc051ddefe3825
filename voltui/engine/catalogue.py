"""The workflows of a folder, parsed once and read again only when a file changes.

The dashboard's start form, `list_workflows` over the socket and `voltui run ID` all ask for the
folder's workflows; parsing every file each time made a folder with one big workflow cost
seconds per question. A `Catalogue` keeps each file's result (the workflow or its error) with
the file's identity and version (inode, device, size, mtime and ctime in nanoseconds, as `stat`
reports them through symbolic links) and, when asked again, only `stat`s the files: a listing
with nothing changed costs one `scandir` and a `stat` per file.

A file written within `RACY_SECONDS` of being read could change again without its mtime moving
(coarse timestamps on some file systems), so such a result is not trusted: it is parsed again
at the next listing, until it is old enough (the "racy git" rule).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from voltui.engine.errors import WorkflowFileError
from voltui.engine.limits import WorkflowLimits
from voltui.engine.loader import (
    WORKFLOW_SUFFIXES,
    format_location,
    load_file,
    locate_in_file,
)
from voltui.engine.models import Workflow

Stamp = tuple[int, int, int, int, int]
"""inode, device, size, mtime_ns, ctime_ns: a file's identity and version."""


@dataclass(slots=True)
class _Entry:
    """One file's parse result, valid while the file's stamp is unchanged."""

    stamp: Stamp | None
    workflow: Workflow | None
    error: WorkflowFileError | None
    id_position: tuple[int | None, int | None] | None
    racy: bool


class Catalogue:
    """The workflow files directly in one folder, each parsed once per version.

    `list()` is blocking (it stats and may read files) and thread-safe: from async code call it
    in a thread. The workflows it returns are shallow copies of the cached ones; treat their
    steps as read-only.
    """

    RACY_SECONDS = 2.0
    """A file modified this recently is parsed again at the next listing."""

    def __init__(
        self,
        folder: str | Path | None,
        *,
        limits: WorkflowLimits | None = None,
        missing_ok: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`missing_ok`: a folder that is not there (or not given) lists as empty instead of
        as an error; for the engine, where the workflows folder is optional."""
        self.folder = Path(folder) if folder is not None else None
        self.limits = limits
        self.missing_ok = missing_ok
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self.parses = 0
        """Files parsed so far (a test and the benchmark use it to see the cache work)."""

    def list(self) -> tuple[list[Workflow], list[WorkflowFileError]]:
        """Every loadable workflow sorted by file name, and an error for every other file.

        A second file reusing a workflow id is an error naming both files, and only the first
        is returned, so ids stay unique. Hidden files and sub-folders are skipped.
        """
        with self._lock:
            return self._list()

    def _list(self) -> tuple[list[Workflow], list[WorkflowFileError]]:
        base = self.folder
        if base is None:
            return [], []
        try:
            with os.scandir(base) as scan:
                names = sorted(
                    entry.name
                    for entry in scan
                    if not entry.name.startswith(".")
                    and os.path.splitext(entry.name)[1].lower() in WORKFLOW_SUFFIXES
                    and not _is_dir(entry)
                )
        except (FileNotFoundError, NotADirectoryError) as exc:
            self._entries.clear()
            if self.missing_ok:
                return [], []
            if isinstance(exc, FileNotFoundError):
                problem = "the folder does not exist"
            else:
                problem = "this is a file, not a folder of workflows"
            return [], [WorkflowFileError(str(base), [problem])]
        except OSError as exc:
            self._entries.clear()
            reason = exc.strerror or str(exc)
            return [], [WorkflowFileError(str(base), [f"the folder cannot be read ({reason})"])]

        workflows: list[Workflow] = []
        errors: list[WorkflowFileError] = []
        first_file: dict[str, str] = {}
        for name in names:
            entry = self._entry(base / name, name)
            label = str(base / name)
            if entry.error is not None:
                errors.append(entry.error)
                continue
            workflow = entry.workflow
            assert workflow is not None
            if workflow.id in first_file:
                errors.append(self._clash(entry, base / name, workflow.id, first_file))
                continue
            first_file[workflow.id] = label
            workflows.append(workflow.model_copy())
        for gone in self._entries.keys() - set(names):
            del self._entries[gone]
        return workflows, errors

    def _entry(self, path: Path, name: str) -> _Entry:
        try:
            info = os.stat(path)
            stamp: Stamp | None = (
                info.st_ino,
                info.st_dev,
                info.st_size,
                info.st_mtime_ns,
                info.st_ctime_ns,
            )
        except OSError:
            stamp = None  # a broken link, a file just removed: the loader says which
        cached = self._entries.get(name)
        if cached is not None and stamp is not None and cached.stamp == stamp and not cached.racy:
            return cached
        self.parses += 1
        racy = stamp is None or self._clock() - stamp[3] / 1e9 < self.RACY_SECONDS
        try:
            loaded = load_file(path, limits=self.limits)
        except WorkflowFileError as exc:
            entry = _Entry(stamp, None, exc, None, racy)
        else:
            position = (loaded.id_line, loaded.id_column) if loaded.id_line is not None else None
            entry = _Entry(stamp, loaded.workflow, None, position, racy)
        self._entries[name] = entry
        return entry

    def _clash(
        self, entry: _Entry, path: Path, workflow_id: str, first_file: dict[str, str]
    ) -> WorkflowFileError:
        if entry.id_position is None:  # JSON keeps no positions: find it once, on demand
            entry.id_position = locate_in_file(path, ("id",), limits=self.limits)
        where = format_location(("id",), *entry.id_position)
        return WorkflowFileError(
            str(path),
            [
                f"{where}: workflow id {workflow_id!r} is already used by "
                f"{first_file[workflow_id]}; each workflow needs its own id, "
                "so rename one of them"
            ],
        )


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows symbolic links, like the reader will
    except OSError:
        return False
