"""CommandAgent against real child processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from voltui.engine.agents.base import StepContext
from voltui.engine.agents.command import CUT_MARKER, MAX_LINE_CHARS, CommandAgent
from voltui.engine.errors import StepError
from voltui.engine.models import AgentSpec, Step

PY = sys.executable
AGENT = CommandAgent(AgentSpec(id="cmd", kind="command"))


class Recorder:
    """Collects emitted lines and lets a test wait for a line matching a predicate."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    def __call__(self, stream: str, line: str) -> None:
        self.lines.append((stream, line))
        self._changed.set()

    def of(self, stream: str) -> list[str]:
        return [line for s, line in self.lines if s == stream]

    async def wait_for(self, pred: Callable[[str, str], bool], limit: float = 20.0) -> str:
        async with asyncio.timeout(limit):
            while True:
                for s, line in self.lines:
                    if pred(s, line):
                        return line
                self._changed.clear()
                await self._changed.wait()


def make_ctx(
    tmp_path: Path,
    run: dict[str, Any],
    *,
    inputs: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    upstream: dict[str, Any] | None = None,
    grace: float = 5.0,
) -> tuple[StepContext, Recorder]:
    rec = Recorder()
    step = Step.model_validate({"id": "step-1", "run": run, "params": params or {}})
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    ctx = StepContext(
        run_id="run-abc",
        step=step,
        attempt=2,
        inputs=inputs or {},
        upstream=upstream or {},
        base_dir=tmp_path,
        run_dir=run_dir,
        emit=rec,
        cancel_grace=grace,
    )
    return ctx, rec


def gone(pid: int) -> bool:
    """Not running and not a zombie: reaped."""
    return not psutil.pid_exists(pid)


def dead(pid: int) -> bool:
    """For grandchildren: once orphaned, init reaps them (some inits only every second or so),
    so a zombie that is not our child counts as dead."""
    try:
        proc = psutil.Process(pid)
        return proc.status() == psutil.STATUS_ZOMBIE and proc.ppid() != os.getpid()
    except psutil.NoSuchProcess:
        return True


async def test_argv_values_arrive_literally_without_a_shell(tmp_path: Path) -> None:
    nasty = ["x; rm -rf /", "$(touch pwned)", "`touch pwned2`", "a b", "*", "'\"quoted"]
    script = "import json, sys; print(json.dumps(sys.argv[1:]))"
    ctx, _ = make_ctx(tmp_path, {"command": [PY, "-c", script, *nasty]})
    assert await AGENT.execute(ctx) == nasty
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "pwned2").exists()


async def test_environment_stdin_and_cwd(tmp_path: Path) -> None:
    script = (
        "import json, os, sys\n"
        "doc = json.load(sys.stdin)\n"
        "env = {k: v for k, v in os.environ.items() if k.startswith(('VOLTUI_', 'CUSTOM'))}\n"
        "print('not the result')\n"
        "sub = os.path.join(os.environ['VOLTUI_WORKFLOW_DIR'], 'sub')\n"
        "print(json.dumps({'env': env, 'stdin': doc, 'cwd_is_sub': os.path.samefile('.', sub)}))\n"
    )
    (tmp_path / "sub").mkdir()
    ctx, _ = make_ctx(
        tmp_path,
        {"command": ["python", "-c", script], "env": {"CUSTOM": "yes"}, "cwd": "sub"},
        inputs={"my-input.x": "a b; $(rm)", "n": 3, "flag": True, "obj": {"k": [1, 2]}},
        params={"p1": "v1", "limit": 2.5},
        upstream={"prev": {"answer": 42}},
    )
    out = await AGENT.execute(ctx)
    env = out["env"]
    assert env["VOLTUI_INPUT_MY_INPUT_X"] == "a b; $(rm)"
    assert env["VOLTUI_INPUT_N"] == "3"
    assert env["VOLTUI_INPUT_FLAG"] == "true"
    assert json.loads(env["VOLTUI_INPUT_OBJ"]) == {"k": [1, 2]}
    assert env["VOLTUI_PARAM_P1"] == "v1"
    assert env["VOLTUI_PARAM_LIMIT"] == "2.5"
    assert env["VOLTUI_RUN_ID"] == "run-abc"
    assert env["VOLTUI_STEP_ID"] == "step-1"
    assert env["VOLTUI_ATTEMPT"] == "2"
    assert env["VOLTUI_RUN_DIR"] == str(tmp_path / "run")
    assert env["VOLTUI_WORKFLOW_DIR"] == str(tmp_path)
    assert env["CUSTOM"] == "yes"
    assert out["stdin"] == json.loads(json.dumps(ctx.payload()))
    assert out["stdin"]["upstream"] == {"prev": {"answer": 42}}
    assert out["cwd_is_sub"] is True


async def test_python_means_the_engine_interpreter(tmp_path: Path) -> None:
    script = "import json, sys; print(json.dumps(sys.executable))"
    ctx, _ = make_ctx(tmp_path, {"command": ["python3", "-c", script]})
    assert await AGENT.execute(ctx) == sys.executable


async def test_lines_streamed_in_order_and_tail_output(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "for i in range(60):\n"
        "    print(f'out{i}', flush=True)\n"
        "    print(f'err{i}', file=sys.stderr, flush=True)\n"
    )
    ctx, rec = make_ctx(tmp_path, {"command": [PY, "-c", script]})
    out = await AGENT.execute(ctx)
    assert rec.of("stdout") == [f"out{i}" for i in range(60)]
    assert rec.of("stderr") == [f"err{i}" for i in range(60)]
    assert out == {"exit_code": 0, "stdout_tail": [f"out{i}" for i in range(40, 60)]}


async def test_last_nonempty_json_line_is_the_output(tmp_path: Path) -> None:
    script = "print('working'); print('{\"score\": 0.9, \"ok\": true}'); print(); print('  ')"
    ctx, rec = make_ctx(tmp_path, {"command": [PY, "-c", script]})
    assert await AGENT.execute(ctx) == {"score": 0.9, "ok": True}
    assert rec.of("stdout")[0] == "working"


async def test_nonzero_exit_reports_last_stderr_line(tmp_path: Path) -> None:
    script = "import sys; print('out'); print('first', file=sys.stderr); sys.exit('disk full')"
    ctx, _ = make_ctx(tmp_path, {"command": [PY, "-c", script]})
    with pytest.raises(StepError) as info:
        await AGENT.execute(ctx)
    assert str(info.value) == "command exited with code 1: disk full"
    assert info.value.exit_code == 1
    assert info.value.retryable


async def test_nonzero_exit_falls_back_to_stdout(tmp_path: Path) -> None:
    ctx, _ = make_ctx(tmp_path, {"command": [PY, "-c", "print('only stdout'); exit(3)"]})
    with pytest.raises(StepError, match=r"^command exited with code 3: only stdout$") as info:
        await AGENT.execute(ctx)
    assert info.value.exit_code == 3


async def test_killed_by_signal_is_named(tmp_path: Path) -> None:
    script = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    ctx, _ = make_ctx(tmp_path, {"command": [PY, "-c", script]})
    with pytest.raises(StepError, match="SIGKILL") as info:
        await AGENT.execute(ctx)
    assert info.value.exit_code == -9


async def test_missing_program_is_not_retryable(tmp_path: Path) -> None:
    ctx, _ = make_ctx(tmp_path, {"command": ["no-such-program-voltui", "x"]})
    with pytest.raises(StepError) as info:
        await AGENT.execute(ctx)
    assert not info.value.retryable
    assert "no-such-program-voltui" in str(info.value)
    assert str(tmp_path) in str(info.value)


async def test_not_executable_is_not_retryable(tmp_path: Path) -> None:
    script = tmp_path / "tool.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    ctx, _ = make_ctx(tmp_path, {"command": ["./tool.sh"]})
    with pytest.raises(StepError, match="not executable") as info:
        await AGENT.execute(ctx)
    assert not info.value.retryable


async def test_missing_cwd_is_not_retryable(tmp_path: Path) -> None:
    ctx, _ = make_ctx(tmp_path, {"command": [PY, "-c", "pass"], "cwd": "nowhere"})
    with pytest.raises(StepError, match="nowhere") as info:
        await AGENT.execute(ctx)
    assert not info.value.retryable


async def test_shell_true_runs_through_sh(tmp_path: Path) -> None:
    ctx, rec = make_ctx(
        tmp_path,
        {"command": 'echo "$((40 + 2))" | tr 4 X; echo $VOLTUI_INPUT_NAME', "shell": True},
        inputs={"name": "ada"},
    )
    out = await AGENT.execute(ctx)
    assert rec.of("stdout") == ["X2", "ada"]
    assert out == {"exit_code": 0, "stdout_tail": ["X2", "ada"]}


async def test_shell_true_with_a_list_is_quoted(tmp_path: Path) -> None:
    ctx, rec = make_ctx(tmp_path, {"command": ["echo", "a  b", "$HOME"], "shell": True})
    await AGENT.execute(ctx)
    assert rec.of("stdout") == ["a  b $HOME"]


async def test_long_lines_are_cut(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "print('a' * 20000)\n"
        "sys.stdout.write('b' * 300000)\n"  # longer than the byte cap, no newline yet
        "sys.stdout.write('b' * 300000 + '\\n')\n"
        "print('after')\n"
    )
    ctx, rec = make_ctx(tmp_path, {"command": [PY, "-c", script]})
    out = await AGENT.execute(ctx)
    lines = rec.of("stdout")
    assert lines == ["a" * MAX_LINE_CHARS + CUT_MARKER, "b" * MAX_LINE_CHARS + CUT_MARKER, "after"]
    assert out["stdout_tail"][-1] == "after"


async def test_invalid_utf8_is_replaced(tmp_path: Path) -> None:
    script = "import sys; sys.stdout.buffer.write(b'caf\\xe9 ok\\r\\n')"
    ctx, rec = make_ctx(tmp_path, {"command": [PY, "-c", script]})
    await AGENT.execute(ctx)
    assert rec.of("stdout") == ["caf\ufffd ok"]


async def test_megabyte_on_both_pipes_does_not_deadlock(tmp_path: Path) -> None:
    # All of stderr first, then all of stdout: a reader that drains one pipe at a time hangs.
    script = (
        "import sys\n"
        "line = 'x' * 1023 + '\\n'\n"
        "for _ in range(1024): sys.stderr.write(line)\n"
        "sys.stderr.flush()\n"
        "for _ in range(1024): sys.stdout.write(line)\n"
    )
    big_upstream = {"blob": "y" * 1_000_000}  # more stdin than a pipe holds; never read
    ctx, rec = make_ctx(tmp_path, {"command": [PY, "-c", script]}, upstream=big_upstream)
    out = await asyncio.wait_for(AGENT.execute(ctx), timeout=60)
    assert len(rec.of("stdout")) == 1024
    assert len(rec.of("stderr")) == 1024
    assert out["stdout_tail"] == ["x" * 1023] * 20


async def _start_and_cancel(ctx: StepContext, started: Callable[[], Any]) -> tuple[Any, float]:
    task = asyncio.create_task(AGENT.execute(ctx))
    info = await started()
    t0 = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return info, time.monotonic() - t0


async def test_cancel_terminates_python_child(tmp_path: Path) -> None:
    script = "import os, time; print(os.getpid(), flush=True); time.sleep(60)"
    ctx, rec = make_ctx(tmp_path, {"command": [PY, "-c", script]}, grace=30)

    async def started() -> int:
        return int(await rec.wait_for(lambda s, line: s == "stdout"))

    pid, elapsed = await _start_and_cancel(ctx, started)
    assert gone(pid)
    assert elapsed < 20  # SIGTERM ended it; the 30 s grace was not needed


async def test_cancel_terminates_real_sleep(tmp_path: Path) -> None:
    sleep = shutil.which("sleep")
    assert sleep
    ctx, _ = make_ctx(tmp_path, {"command": [sleep, "60"]}, grace=30)
    me = psutil.Process()

    async def started() -> int:
        async with asyncio.timeout(20):
            while True:
                for child in me.children():
                    try:
                        if child.cmdline() == [sleep, "60"]:
                            return child.pid
                    except psutil.NoSuchProcess:
                        pass
                await asyncio.sleep(0.02)

    pid, elapsed = await _start_and_cancel(ctx, started)
    assert gone(pid)
    assert elapsed < 20


async def test_cancel_kills_the_whole_process_group(tmp_path: Path) -> None:
    script = "sleep 60 & echo $!; echo $$; wait"
    ctx, rec = make_ctx(tmp_path, {"command": script, "shell": True}, grace=30)

    async def started() -> list[int]:
        await rec.wait_for(lambda s, line: len(rec.of("stdout")) >= 2)
        return [int(x) for x in rec.of("stdout")[:2]]

    (sleeper, shell), _ = await _start_and_cancel(ctx, started)
    assert gone(shell)
    assert dead(sleeper)


async def test_child_ignoring_sigterm_is_killed_after_grace(tmp_path: Path) -> None:
    script = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(60)\n"
    )
    ctx, rec = make_ctx(tmp_path, {"command": [PY, "-c", script]}, grace=0.5)

    async def started() -> int:
        return int(await rec.wait_for(lambda s, line: s == "stdout"))

    pid, elapsed = await _start_and_cancel(ctx, started)
    assert gone(pid)
    assert elapsed >= 0.45  # it waited out the grace before SIGKILL
    assert elapsed < 20


async def test_background_leftovers_are_stopped_when_the_step_ends(tmp_path: Path) -> None:
    ctx, rec = make_ctx(tmp_path, {"command": "sleep 60 & echo $!", "shell": True}, grace=1)
    out = await asyncio.wait_for(AGENT.execute(ctx), timeout=30)
    pid = int(rec.of("stdout")[0])
    assert out == pid  # the pid line parses as JSON
    assert dead(pid)


def test_env_value_rules() -> None:
    from voltui.engine.agents.command import env_name, env_value

    assert env_name("my-input.x") == "MY_INPUT_X"
    assert env_value("s") == "s"
    assert env_value(False) == "false"
    assert env_value(None) == ""
    assert env_value(7) == "7"
    assert env_value([1, "a"]) == '[1, "a"]'
    assert os.environ.get("VOLTUI_RUN_ID") is None  # the engine's own env is untouched


async def test_escaped_process_holding_stdout_does_not_hang_the_step(tmp_path: Path) -> None:
    # A grandchild that left the step's session cannot be signalled as part of the group; the
    # step still finishes once its own process has exited.
    script = (
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import os, time; os.setsid(); "
        "time.sleep(30)'])\n"
        "import os, time\n"
        "while os.getsid(p.pid) == os.getsid(0): time.sleep(0.01)\n"
        "print(p.pid, flush=True)\n"
    )
    ctx, rec = make_ctx(tmp_path, {"command": [PY, "-c", script]}, grace=0.2)
    try:
        out = await asyncio.wait_for(AGENT.execute(ctx), timeout=30)
        assert out == int(rec.of("stdout")[0])
        assert any(s == "engine" and "pipes still open" in line for s, line in rec.lines)
    finally:
        if rec.of("stdout"):
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(int(rec.of("stdout")[0])).kill()


async def test_failing_output_sink_does_not_block_the_child(tmp_path: Path) -> None:
    def broken_sink(stream: str, line: str) -> None:
        raise RuntimeError("sink is broken")

    script = "import sys\nfor _ in range(2000): print('z' * 1000)\nprint('[1, 2]')\n"
    ctx, _ = make_ctx(tmp_path, {"command": [PY, "-c", script]})
    ctx.emit = broken_sink
    assert await asyncio.wait_for(AGENT.execute(ctx), timeout=60) == [1, 2]


async def test_step_timeout_like_the_manager_applies_it(tmp_path: Path) -> None:
    # The WorkflowManager wraps execute() in asyncio.timeout(); our own grace timeout nests in
    # that cancellation and must still end as the outer TimeoutError, with the child gone.
    script = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(60)\n"
    )
    ctx, rec = make_ctx(tmp_path, {"command": [PY, "-c", script]}, grace=0.3)
    timeouts: list[asyncio.Timeout] = []

    async def managed() -> Any:
        async with asyncio.timeout(None) as timeout:
            timeouts.append(timeout)
            return await AGENT.execute(ctx)

    task = asyncio.create_task(managed())
    pid = int(await rec.wait_for(lambda s, line: s == "stdout"))
    timeouts[0].reschedule(asyncio.get_running_loop().time())  # the step's time is up
    with pytest.raises(TimeoutError):
        await task
    assert gone(pid)
