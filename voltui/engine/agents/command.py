"""Run a step as a child process: an argv list, no shell unless the step asks for one.

Inputs reach the child only as environment variables (`VOLTUI_INPUT_<NAME>`,
`VOLTUI_PARAM_<NAME>`) and as a JSON document on stdin, never spliced into argv, so a value such
as `; rm -rf /` stays a value. `shell: true` is the explicit opt-in to `/bin/sh -c`.

A program named `python` or `python3` is replaced by `sys.executable`: the engine's own
interpreter (and its virtualenv) runs the workflow's Python scripts, whatever `python` happens to
mean on the PATH of the machine, so the script sees the same packages as the engine.

The child starts in a new session (its own process group). On cancellation or timeout the whole
group gets SIGTERM, then SIGKILL after `ctx.cancel_grace` seconds, and the child is reaped before
the cancellation propagates. Background processes that the step leaves behind in its group when
its main process exits get the same treatment, so a step never leaves orphans running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shlex
import signal
import sys
from collections import deque
from pathlib import Path
from typing import Any, Literal

import psutil

from voltui.engine.agents.base import Agent, StepContext
from voltui.engine.errors import StepError
from voltui.engine.models import RunKind

MAX_LINE_CHARS = 8192
"""Longer lines are cut: one runaway line must not fill the event log or the store."""
CUT_MARKER = f" … [line cut at {MAX_LINE_CHARS} chars]"
TAIL_LINES = 20
_READ_CHUNK = 64 * 1024
# A UTF-8 character is at most 4 bytes, so this many bytes always hold MAX_LINE_CHARS characters.
_MAX_LINE_BYTES = MAX_LINE_CHARS * 4
_DRAIN_AFTER_EXIT = 2.0
"""Seconds the readers get to finish after the child exits, when nothing else holds the pipes."""

Stream = Literal["stdout", "stderr"]

log = logging.getLogger(__name__)


def env_name(name: str) -> str:
    """`my-input.x` -> `MY_INPUT_X`: environment variable names are portable only as [A-Z0-9_]."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def env_value(value: Any) -> str:
    """Strings stay as they are; booleans are `true`/`false` and None is empty, as in YAML;
    numbers use `str`; lists and objects are JSON so the child can parse them back."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, default=str)


def step_environment(ctx: StepContext) -> dict[str, str]:
    """The child's environment: the engine's, then the step's `env`, then voltui's own names
    (which win, so a step cannot accidentally shadow its run id)."""
    env = dict(os.environ)
    env.update(ctx.step.run.env)
    env.update(
        {
            "VOLTUI_RUN_ID": ctx.run_id,
            "VOLTUI_STEP_ID": ctx.step.id,
            "VOLTUI_ATTEMPT": str(ctx.attempt),
            "VOLTUI_RUN_DIR": str(ctx.run_dir),
            "VOLTUI_WORKFLOW_DIR": str(ctx.base_dir),
        }
    )
    for name, value in ctx.inputs.items():
        env[f"VOLTUI_INPUT_{env_name(name)}"] = env_value(value)
    for name, value in ctx.step.params.items():
        env[f"VOLTUI_PARAM_{env_name(name)}"] = env_value(value)
    return env


def _signal_group(pgid: int, sig: int) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # The id now belongs to someone else's group: ours is gone.
        return False
    return True


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs.

    Zombies count as gone: an orphaned member that died waits for init to reap it, which some
    container inits do only every second or so, and a dead process needs no more signals.
    """
    if not _signal_group(pgid, 0):
        return False
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) == pgid and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return True
        except (OSError, psutil.Error):
            continue
    return False


class _LineReader:
    """Split a byte stream into lines for `emit`, keeping what the output rule needs.

    Reads fixed-size chunks rather than `readline()` so an endless line cannot exceed the
    StreamReader limit or memory; the part of an over-long line past the cut is discarded as it
    arrives.
    """

    def __init__(self, ctx: StepContext, stream: Stream) -> None:
        self._emit = ctx.emit
        self._stream = stream
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.last_nonempty: str | None = None
        self.last_was_cut = False
        self.sink_failed = False

    def _line(self, raw: bytes, cut: bool) -> None:
        text = raw.decode("utf-8", errors="replace")
        if text.endswith("\r"):
            text = text[:-1]
        if len(text) > MAX_LINE_CHARS:
            text, cut = text[:MAX_LINE_CHARS], True
        if cut:
            text += CUT_MARKER
        self.tail.append(text)
        if text.strip():
            self.last_nonempty = text
            self.last_was_cut = cut
        if self.sink_failed:
            return
        try:
            self._emit(self._stream, text)
        except Exception:
            # A failing sink must not stop the draining: the child would block on a full pipe.
            log.exception("output sink failed; further lines of this stream are dropped")
            self.sink_failed = True

    async def pump(self, reader: asyncio.StreamReader) -> None:
        buf = bytearray()
        discarding = False  # inside an over-long line whose head was already emitted
        while True:
            chunk = await reader.read(_READ_CHUNK)
            if not chunk:
                break
            buf += chunk
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    break
                if discarding:
                    discarding = False
                else:
                    self._line(bytes(buf[:nl]), cut=False)
                del buf[: nl + 1]
            if discarding:
                buf.clear()
            elif len(buf) > _MAX_LINE_BYTES:
                self._line(bytes(buf[:_MAX_LINE_BYTES]), cut=True)
                buf.clear()
                discarding = True
        if buf and not discarding:
            self._line(bytes(buf), cut=False)


async def _feed_stdin(writer: asyncio.StreamWriter | None, data: bytes) -> None:
    """Write the payload and close stdin; a child that never reads it is not an error."""
    if writer is None:
        return
    try:
        writer.write(data)
        await writer.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
            writer.close()


async def _wait_exit(proc: asyncio.subprocess.Process) -> int:
    """Wait until the child itself has exited and been reaped; returns its exit code.

    On Python 3.11 `Process.wait()` also waits for every pipe to close, which never happens
    while a background process the step left behind still holds stdout. The return code is set
    as soon as the child is reaped, so watch that too (a cheap, backing-off check).
    """
    waiter = asyncio.ensure_future(proc.wait())
    delay = 0.02
    try:
        while proc.returncode is None and not waiter.done():
            await asyncio.wait({waiter}, timeout=delay)
            delay = min(delay * 2, 0.5)
    finally:
        waiter.cancel()
    assert proc.returncode is not None
    return proc.returncode


async def _stop_group(proc: asyncio.subprocess.Process, pgid: int, grace: float) -> None:
    """SIGTERM the group, SIGKILL it after `grace` seconds, and wait until the child is reaped.

    If this is itself cancelled (a second cancel while waiting) the group is killed at once; the
    loop's child watcher still reaps the child, so nothing is left as a zombie.
    """
    loop = asyncio.get_running_loop()
    try:
        _signal_group(pgid, signal.SIGTERM)
        deadline = loop.time() + max(0.0, grace)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, grace)):
                await _wait_exit(proc)
        # Members of the group other than the child may still be shutting down.
        # No event exists for "a process group emptied", so poll.
        while _group_alive(pgid) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        _signal_group(pgid, signal.SIGKILL)
        await _wait_exit(proc)  # SIGKILL cannot be ignored: this returns promptly
    except asyncio.CancelledError:
        _signal_group(pgid, signal.SIGKILL)
        raise


def _close_transport(proc: asyncio.subprocess.Process) -> None:
    """Close our ends of the pipes even if a process that escaped the group still holds theirs.

    asyncio offers no public handle for this; without it the pipes stay registered with the loop
    until that process exits, and warn when the loop closes first.
    """
    transport = getattr(proc, "_transport", None)
    if transport is not None:
        transport.close()


def _python_rule(command: list[str]) -> list[str]:
    """`python`/`python3` means the engine's interpreter (see the module docstring)."""
    argv = list(command)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return argv


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"command was killed by {name} (exit code {code})"
    return f"command exited with code {code}"


class CommandAgent(Agent):
    """Runs `command` steps as child processes of the engine."""

    kinds: frozenset[RunKind] = frozenset({"command"})

    def argv(self, ctx: StepContext) -> list[str]:
        """The exact argv to execute, after the shell and `python` rules."""
        command = ctx.step.run.command
        if command is None:
            raise StepError(
                f"step {ctx.step.id!r} has no command; the command agent cannot run it",
                retryable=False,
            )
        if ctx.step.run.shell:
            line = command if isinstance(command, str) else shlex.join(_python_rule(command))
            return ["/bin/sh", "-c", line]
        if isinstance(command, str):  # the model forbids this, but never split a string here
            raise StepError(
                "command is a string without shell: true; write it as an argv list",
                retryable=False,
            )
        return _python_rule(command)

    def cwd(self, ctx: StepContext) -> Path:
        if not ctx.step.run.cwd:
            return ctx.base_dir
        path = Path(ctx.step.run.cwd).expanduser()
        return path if path.is_absolute() else ctx.base_dir / path

    async def execute(self, ctx: StepContext) -> Any:
        argv = self.argv(ctx)
        cwd = self.cwd(ctx)
        if not cwd.is_dir():
            raise StepError(
                f"working directory {str(cwd)!r} of step {ctx.step.id!r} does not exist "
                f"(cwd is resolved against the workflow folder {str(ctx.base_dir)!r})",
                retryable=False,
            )
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=step_environment(ctx),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise StepError(
                f"program {argv[0]!r} was not found (cwd {str(cwd)!r}); check the spelling, "
                "install it, or give its path (a relative path is resolved against the cwd)",
                retryable=False,
            ) from exc
        except PermissionError as exc:
            raise StepError(
                f"program {argv[0]!r} is not executable (cwd {str(cwd)!r}); "
                "check its permissions (chmod +x) or run it through an interpreter",
                retryable=False,
            ) from exc
        except OSError as exc:
            raise StepError(
                f"could not start {argv[0]!r} in {str(cwd)!r}: {exc.strerror or exc}",
                retryable=False,
            ) from exc

        pgid = proc.pid  # start_new_session: the child leads its own group
        ctx.on_spawn(pgid)
        out = _LineReader(ctx, "stdout")
        err = _LineReader(ctx, "stderr")
        payload = json.dumps(ctx.payload(), default=str).encode()
        assert proc.stdout is not None and proc.stderr is not None
        tasks = [
            asyncio.create_task(out.pump(proc.stdout)),
            asyncio.create_task(err.pump(proc.stderr)),
            asyncio.create_task(_feed_stdin(proc.stdin, payload)),
        ]
        try:
            code = await _wait_exit(proc)
            if _group_alive(pgid):
                # Leftover background processes would outlive the step and may hold our pipes.
                await _stop_group(proc, pgid, ctx.cancel_grace)
            readers = tasks[:2]
            _done, pending = await asyncio.wait(readers, timeout=_DRAIN_AFTER_EXIT)
            if pending:
                ctx.emit("engine", "output pipes still open after the command exited; ignored")
        except asyncio.CancelledError:
            await _stop_group(proc, pgid, ctx.cancel_grace)
            raise
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            _close_transport(proc)

        if code != 0:
            detail = err.last_nonempty or out.last_nonempty
            message = _describe_exit(code) + (f": {detail}" if detail else "")
            raise StepError(message, exit_code=code)
        return self._output(out)

    @staticmethod
    def _output(out: _LineReader) -> Any:
        """The last stdout line when it is JSON (the step's declared result), else a summary."""
        if out.last_nonempty is not None and not out.last_was_cut:
            try:
                return json.loads(out.last_nonempty)
            except ValueError:
                pass
        return {"exit_code": 0, "stdout_tail": list(out.tail)}
