"""File triggers: a run for each file that appears or changes under a workflow's glob.

`triggers: [{files: "inbox/*.csv", debounce: 2s}]` watches the folder part of the pattern
(relative to the workflow file's folder) with `watchfiles`. Each matching file that is added or
modified starts a run once it has been quiet for `debounce` (a file still being written is not
handed over half-done), with its absolute path as the input named by `input:` (default `path`).

Each file version (path, mtime, size) is claimed in the engine's SQLite file before its run
starts, so two engines watching one folder start one run, and an editor's touch that changes
nothing starts none. Symlinks are ignored: a link planted in a shared inbox must not hand a
workflow a file its owner did not put there. Files that change while no engine runs are not
seen: watching starts with the engine.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voltui.engine.api import StartRequest
from voltui.engine.automation_state import AutomationState
from voltui.engine.events import EventEmitter
from voltui.engine.models import Priority, Run, TriggerSpec, Workflow

__all__ = ["FileTrigger", "TriggerWatcher", "trigger_entries"]

log = logging.getLogger(__name__)

SOURCE = "triggers"
StartFn = Callable[[StartRequest], Awaitable[Run]]
_GLOB_CHARS = frozenset("*?[")
STOP_WAIT = 2.0


@dataclass
class FileTrigger:
    """One trigger of one workflow, resolved to a folder to watch and a pattern to match."""

    key: str
    workflow: Workflow
    spec: TriggerSpec
    folder: Path
    pattern: str
    recursive: bool
    task: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)

    @property
    def identity(self) -> tuple[str, str, str]:
        """What makes two sightings the same trigger (a changed file means a restart)."""
        return (self.key, self.spec.model_dump_json(), str(self.folder))


def _split(pattern: str, base: Path) -> tuple[Path, str, bool]:
    """`inbox/*.csv` -> (base/inbox, `*.csv`, not recursive); `data/**/x.json` recursive."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    if len(fixed) == len(parts):  # no glob at all: watch the file's folder for that name
        fixed = fixed[:-1]
    folder = base.joinpath(*fixed) if fixed else base
    rest = "/".join(parts[len(fixed) :])
    return folder, rest, "**" in rest or "/" in rest


def trigger_entries(workflows: list[Workflow]) -> list[FileTrigger]:
    out = []
    for wf in workflows:
        base = Path(wf.source).resolve().parent if wf.source else Path.cwd()
        for i, spec in enumerate(wf.triggers):
            folder, rest, recursive = _split(spec.files, base)
            out.append(FileTrigger(f"{wf.id}:{spec.name(i)}", wf, spec, folder, rest, recursive))
    return out


class TriggerWatcher:
    """Keeps one watch task per trigger in step with the loaded workflows."""

    def __init__(
        self,
        state: AutomationState,
        events: EventEmitter,
        *,
        start: StartFn,
        force_polling: bool | None = None,
    ) -> None:
        self._state = state
        self._events = events
        self._start = start
        self._force_polling = force_polling
        self._triggers: dict[str, FileTrigger] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def triggers(self) -> list[FileTrigger]:
        return list(self._triggers.values())

    async def sync(self, workflows: list[Workflow]) -> None:
        """Start watching new triggers, stop removed or changed ones, restart ended ones."""
        wanted = {t.key: t for t in trigger_entries(workflows)}
        for key, current in list(self._triggers.items()):
            new = wanted.get(key)
            if new is None or new.identity != current.identity:
                await self._stop_one(current)
                del self._triggers[key]
        for key, trig in wanted.items():
            current = self._triggers.get(key)
            if current is not None and current.task is not None and not current.task.done():
                current.workflow = trig.workflow  # same trigger; keep the newest definition
                continue
            self._triggers[key] = trig
            trig.task = asyncio.create_task(self._watch(trig), name=f"trigger:{key}")

    async def stop(self) -> None:
        for trig in list(self._triggers.values()):
            await self._stop_one(trig)
        self._triggers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _stop_one(self, trig: FileTrigger) -> None:
        for handle in trig.timers.values():
            handle.cancel()
        trig.timers.clear()
        # The watch thread sees `stop` within one step (50 ms) and ends cleanly; cancelling
        # alone would wait for the thread's own timeout.
        trig.stop.set()
        if trig.task is not None:
            done, _ = await asyncio.wait({trig.task}, timeout=STOP_WAIT)
            if not done:
                trig.task.cancel()
                await asyncio.gather(trig.task, return_exceptions=True)

    # ------------------------------------------------------------------ watching

    async def _watch(self, trig: FileTrigger) -> None:
        from watchfiles import Change, awatch  # loads only when a workflow has a trigger

        if not trig.folder.is_dir():
            self._emit(
                "trigger:error",
                trig,
                {"error": f"folder {trig.folder} does not exist; create it to start watching"},
            )
            return
        stop = trig.stop
        changes_iter = awatch(
            trig.folder,
            watch_filter=lambda change, path: (
                change != Change.deleted and self._matches(trig, path)
            ),
            recursive=trig.recursive,
            stop_event=stop,
            force_polling=self._force_polling,
            debounce=400,
            step=50,
        )
        # The first `__anext__` sets up the OS watch synchronously before it first waits, so
        # once it is running, nothing written from now on is missed; say so for tests and logs.
        pending = asyncio.ensure_future(anext(changes_iter))
        await asyncio.sleep(0)
        trig.ready.set()
        self._emit("trigger:watching", trig, {"folder": str(trig.folder), "files": trig.pattern})
        loop = asyncio.get_running_loop()
        try:
            while True:
                changes = await pending
                for _change, path in changes:
                    old = trig.timers.pop(path, None)
                    if old is not None:
                        old.cancel()
                    trig.timers[path] = loop.call_later(trig.spec.debounce, self._quiet, trig, path)
                pending = asyncio.ensure_future(anext(changes_iter))
        except StopAsyncIteration:
            return
        finally:
            stop.set()
            if not pending.done():
                pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)

    def _matches(self, trig: FileTrigger, path: str) -> bool:
        try:
            rel = Path(path).relative_to(trig.folder).as_posix()
        except ValueError:
            return False
        pattern = trig.pattern
        # `**/` also matches no folder at all, as in shells with globstar: `**/*.csv` takes a.csv.
        return fnmatch.fnmatchcase(rel, pattern) or (
            "**/" in pattern and fnmatch.fnmatchcase(rel, pattern.replace("**/", ""))
        )

    def _quiet(self, trig: FileTrigger, path: str) -> None:
        trig.timers.pop(path, None)
        task = asyncio.create_task(self._fire(trig, path), name=f"trigger-fire:{trig.key}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fire(self, trig: FileTrigger, path: str) -> Run | None:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return None  # gone again before it settled: nothing to hand over
        if stat.S_ISLNK(info.st_mode):
            self._emit("trigger:ignored", trig, {"path": path, "reason": "symbolic link"})
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        if not await self._state.claim_file(trig.key, path, info.st_mtime_ns, info.st_size):
            return None  # this version of the file already started a run (here or elsewhere)
        inputs = {**trig.spec.inputs, trig.spec.input: path}
        request = StartRequest(
            workflow=trig.workflow.source or trig.workflow.id,
            inputs=inputs,
            trigger="trigger",
            trigger_ref=f"{trig.key} {path}",
        )
        try:
            run = await self._start(request)
        except Exception as exc:
            self._emit(
                "trigger:error", trig, {"path": path, "error": str(exc)}, priority=Priority.HIGH
            )
            return None
        await self._state.file_run(trig.key, path, info.st_mtime_ns, info.st_size, run.id)
        self._emit("trigger:fired", trig, {"path": path, "run_id": run.id}, correlation_id=run.id)
        return run

    def _emit(
        self,
        type_: str,
        trig: FileTrigger,
        data: dict[str, Any],
        *,
        priority: Priority = Priority.NORMAL,
        correlation_id: str | None = None,
    ) -> None:
        payload = {"trigger": trig.key, "workflow_id": trig.workflow.id, **data}
        self._events.emit(type_, SOURCE, payload, priority=priority, correlation_id=correlation_id)
