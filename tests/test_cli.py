"""Acceptance tests of the `voltui` command, driven as a real program in subprocesses.

Each test runs `python -m voltui` from the repository root (so `--workflows` finds
`sample-workflows/`) against its own SQLite file, and reads results the way a user or a script
would: exit codes, `--json` output and the files a run leaves behind. Every CLI call also checks
that no Python traceback leaked out, since tracebacks are for bugs only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from voltui.config import OrchestratorConfig
from voltui.engine.api import StartRequest
from voltui.engine.models import RunState, StepState
from voltui.engine.orchestrator import Orchestrator

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 60.0
SAMPLE_IDS = {
    "agent_review",
    "code_review",
    "development_pipeline",
    "fan_out",
    "flaky",
    "long_running",
    "simulated_load",
}


# ---------------------------------------------------------------------- helpers


def cli_env(db: Path) -> dict[str, str]:
    env = {**os.environ, "VOLTUI_DB": str(db)}
    env.pop("VOLTUI_CONFIG", None)
    return env


def voltui(*args: str, db: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion; a traceback anywhere in its output fails the test."""
    result = subprocess.run(
        [sys.executable, "-m", "voltui", *args],
        cwd=REPO,
        env=cli_env(db),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert "Traceback" not in result.stdout + result.stderr, (
        f"voltui {' '.join(args)} leaked a traceback:\n{result.stdout}\n{result.stderr}"
    )
    return result


def run_json(*args: str, db: Path, expect: int = 0) -> dict[str, Any]:
    result = voltui(*args, "--json", db=db)
    assert result.returncode == expect, (
        f"voltui {' '.join(args)} exited {result.returncode}, wanted {expect}:\n"
        f"{result.stdout}\n{result.stderr}"
    )
    return json.loads(result.stdout)


def event_lines(run_id: str, db: Path, *extra: str) -> list[dict[str, Any]]:
    result = voltui("events", "--run", run_id, "--limit", "10000", "--json", *extra, db=db)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def wait_for(
    condition: Callable[[], Any], what: str, timeout: float = 30.0, every: float = 0.1
) -> Any:
    """Poll until `condition()` is truthy and return its value; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def processes_with(token: str) -> list[psutil.Process]:
    """Live processes whose command line mentions `token` (a path unique to one test)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(token in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def kill_all(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "voltui.db"


# ---------------------------------------------------------------------- sample workflows


def test_development_pipeline_leaves_a_verified_package(db: Path) -> None:
    detail = run_json("run", "sample-workflows/development_pipeline.yaml", db=db)

    assert detail["run"]["state"] == "succeeded"
    assert [s["state"] for s in detail["steps"]] == ["succeeded"] * len(detail["steps"])
    last = detail["steps"][-1]
    assert last["step_id"] == "deployment"
    package = Path(last["output"]["package"])
    run_dir = Path(detail["run"]["run_dir"])
    assert package.is_file(), f"promised package {package} does not exist"
    assert package.is_relative_to(run_dir), "artefacts must land in the run's own folder"

    manifest = json.loads((package.parent / "manifest.json").read_text(encoding="utf-8"))
    data = package.read_bytes()
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["size"] == len(data)
    assert last["output"]["sha256"] == manifest["sha256"]

    with tarfile.open(package, "r:gz") as tar:
        members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if m.isfile()}
        assert {"textkit/__init__.py", "tests/test_textkit.py"} <= set(members)
        contents = {
            name: tar.extractfile(member).read()  # type: ignore[union-attr]
            for name, member in members.items()
        }
    module = contents["textkit/__init__.py"].decode()
    for function in ("slugify", "word_count", "truncate", "is_palindrome", "top_words", "wrap"):
        assert f"def {function}" in module
    assert "import unittest" in contents["tests/test_textkit.py"].decode()
    listed = {f["path"]: f["sha256"] for f in manifest["files"]}
    assert listed == {name: hashlib.sha256(raw).hexdigest() for name, raw in contents.items()}


def test_code_review_runs_and_second_run_takes_review_from_cache(db: Path) -> None:
    first = run_json("run", "sample-workflows/code_review.yaml", db=db)
    second = run_json("run", "sample-workflows/code_review.yaml", db=db)

    for detail in (first, second):
        assert detail["run"]["state"] == "succeeded"
        deploy = Path(detail["run"]["run_dir"]) / "deploy"
        assert (deploy / "inventory.py").is_file()
        assert (deploy / "REVIEW.md").is_file()
    review = {
        d["run"]["id"]: next(s for s in d["steps"] if s["step_id"] == "code_review")
        for d in (first, second)
    }
    assert review[first["run"]["id"]]["state"] == "succeeded"
    assert review[first["run"]["id"]]["cached"] is False
    assert review[second["run"]["id"]]["state"] == "cached"
    assert review[second["run"]["id"]]["cached"] is True
    started = event_lines(second["run"]["id"], db, "--type", "step:started")
    assert "code_review" not in {e["data"]["step"] for e in started}


def test_fan_out_merges_every_shard(db: Path) -> None:
    detail = run_json("run", "sample-workflows/fan_out.yaml", db=db)

    assert detail["run"]["state"] == "succeeded"
    shards = [s for s in detail["steps"] if s["step_id"].startswith("shard_")]
    assert len(shards) == 8
    assert all(s["state"] == "succeeded" for s in shards)
    report = Path(detail["steps"][-1]["output"]["report"])
    assert report.is_file()
    assert json.loads(report.read_text(encoding="utf-8"))


def test_flaky_retries_twice_then_succeeds_on_attempt_3(db: Path) -> None:
    result = voltui("run", "sample-workflows/flaky.yaml", db=db)

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    retrying = re.findall(r"^\S+ \S+ step:retrying\s+unstable_fetch\b", out, re.MULTILINE)
    assert len(retrying) == 2, out
    match = re.search(r"run (\w+) succeeded", out)
    assert match, out
    assert re.search(r"Unstable fetch \(fails twice\)\s+\S+\s+3/4", out), out
    succeeded = event_lines(match.group(1), db, "--type", "step:succeeded")
    attempts = {e["data"]["step"]: e["data"]["attempt"] for e in succeeded}
    assert attempts == {"unstable_fetch": 3, "use_result": 1}


# ---------------------------------------------------------------------- user mistakes

STEP_A = "  - id: a\n    run: {command: [echo, hi]}\n"
MALFORMED: dict[str, tuple[str, set[int], str]] = {
    # name: (file text, acceptable `line N` numbers, a word the message must contain)
    "yaml_syntax": (
        "id: x\nsteps:\n  - id: a\n    run: {command: [echo, hi]\n  - id: b\n",
        {4, 5},
        "YAML",
    ),
    "unknown_field": (f"id: x\nsteps:\n{STEP_A}    colour: red\n", {5}, "colour"),
    "unknown_dependency": (f"id: x\nsteps:\n{STEP_A}    depends_on: [ghost]\n", {5}, "ghost"),
    "cycle": (
        "id: x\nsteps:\n"
        "  - id: a\n    run: {command: [echo, hi]}\n    depends_on: [b]\n"
        "  - id: b\n    run: {command: [echo, hi]}\n    depends_on: [a]\n",
        {5, 8},
        "cycle",
    ),
    "bad_duration": (f"id: x\nsteps:\n{STEP_A}    timeout: 5 parsecs\n", {5}, "parsecs"),
    "empty_file": ("", {1}, "empty"),
    "not_a_mapping": ("- just\n- a list\n", {1}, "mapping"),
}


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_workflow_is_a_located_user_error(
    case: str, command: str, tmp_path: Path, db: Path
) -> None:
    text, lines, word = MALFORMED[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text, encoding="utf-8")

    result = voltui(command, str(path), db=db)

    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert str(path) in output, f"the message must name the file:\n{output}"
    found = {int(n) for n in re.findall(rf"{re.escape(str(path))}: line (\d+)\b", output)}
    assert found and found <= lines, f"wanted `{path}: line N` with N in {lines}:\n{output}"
    assert word.lower() in output.lower(), output


@pytest.mark.parametrize("command", ["watch", "replay", "events --run"])
def test_unknown_run_id_is_a_user_error(command: str, db: Path) -> None:
    result = voltui(*command.split(), "nosuchrun", db=db)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "unknown run id 'nosuchrun'" in result.stderr


def test_input_without_equals_is_a_user_error(db: Path) -> None:
    result = voltui("run", "sample-workflows/code_review.yaml", "--input", "module_name", db=db)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "module_name" in result.stderr
    assert "KEY=VALUE" in result.stderr


def test_unknown_input_is_a_user_error_and_starts_nothing(db: Path) -> None:
    result = voltui("run", "sample-workflows/code_review.yaml", "-i", "nosuch=1", db=db)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "unknown input 'nosuch'" in result.stderr
    assert "module_name" in result.stderr, "the message should list the inputs that exist"
    listed = run_json("list", db=db)
    assert listed["runs"] == []


def test_state_file_that_is_not_sqlite_is_a_user_error(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.db"
    bogus.write_text("these are my notes, not a database\n", encoding="utf-8")

    result = voltui("list", "--db", str(bogus), db=tmp_path / "unused.db")

    assert result.returncode == 2, result.stdout + result.stderr
    assert str(bogus) in result.stderr
    assert "not a database" in result.stderr


def test_new_state_file_locked_by_another_process_is_waited_for(tmp_path: Path) -> None:
    """What a second voltui sees while the first is still creating a new state file."""
    db = tmp_path / "fresh.db"
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the first process, mid-setup
        proc = subprocess.Popen(
            [sys.executable, "-m", "voltui", "list", "--json"],
            cwd=REPO,
            env=cli_env(db),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)  # well inside the store's 5 s busy timeout
        holder.execute("COMMIT")
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        holder.close()

    assert "Traceback" not in out + err, err
    assert proc.returncode == 0, err
    assert json.loads(out)["runs"] == []


# ---------------------------------------------------------------------- crash recovery

B_SCRIPT = """\
import os, sys, time
if os.path.exists(os.environ["VOLTUI_PARAM_MARKER"]):
    print("b done")
    sys.exit(0)
time.sleep(60)
"""


def test_killed_run_is_interrupted_and_replay_failed_reuses_finished_steps(
    tmp_path: Path, db: Path
) -> None:
    marker = tmp_path / "marker"
    b_script = tmp_path / "b_step.py"
    b_script.write_text(B_SCRIPT, encoding="utf-8")
    workflow = tmp_path / "crashy.yaml"
    workflow.write_text(
        "id: crashy\nsteps:\n"
        """  - id: a\n    run: {command: [python, -c, "print('a done')"]}\n"""
        f"  - id: b\n    depends_on: [a]\n    run: {{command: [python, {b_script}]}}\n"
        f"    params: {{marker: {json.dumps(str(marker))}}}\n"
        """  - id: c\n    depends_on: [b]\n    run: {command: [python, -c, "print('c')"]}\n""",
        encoding="utf-8",
    )
    run_json("list", db=db)
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "voltui", "run", str(workflow)],
        cwd=REPO,
        env=cli_env(db),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def run_id() -> str | None:
            runs = run_json("list", db=db)["runs"]
            return runs[0]["id"] if runs else None

        rid = wait_for(run_id, "the run to be recorded")

        def b_started() -> bool:
            started = event_lines(rid, db, "--type", "step:started")
            return "b" in {e["data"]["step"] for e in started}

        wait_for(b_started, "step b to start", every=0.2)
        wait_for(lambda: processes_with(str(b_script)), "step b's process")
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
        # The engine died with b's child in its own session; nobody else will stop it.
        kill_all(processes_with(str(b_script)))

        runs = {r["id"]: r for r in run_json("list", db=db)["runs"]}
        assert runs[rid]["state"] == "interrupted"

        marker.touch()
        replay = run_json("replay", rid, "--failed", db=db)
        new_id = replay["run"]["id"]
        assert new_id != rid
        assert replay["run"]["state"] == "succeeded"
        assert replay["run"]["replay_of"] == rid
        steps = {s["step_id"]: s for s in replay["steps"]}
        assert steps["a"]["state"] == "succeeded"
        assert steps["a"]["reused_from"] == rid
        assert steps["a"]["output"]["stdout_tail"] == ["a done"]
        for step in ("b", "c"):
            assert steps[step]["state"] == "succeeded"
            assert steps[step]["reused_from"] is None
        started = [e["data"]["step"] for e in event_lines(new_id, db, "--type", "step:started")]
        assert sorted(started) == ["b", "c"], "a must be reused, not run again"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT)
        kill_all(processes_with(str(b_script)))
        log.close()


# ---------------------------------------------------------------------- cancel (embedded)

CANCEL_CASES = {
    # name: (command, seconds the child must survive SIGTERM at least)
    "sleep": ('[sleep, "60"]', 0.0),
    "ignores_sigterm": (
        '[python, -c, "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); '
        "print('ready', flush=True); time.sleep(60)\"]",
        1.5,
    ),
}


async def eventually(check: Callable[[], Awaitable[Any]], what: str, within: float = 20.0) -> Any:
    """Await `check()` until it gives a truthy value and return it; fail naming `what`."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


def hold_child(parent: psutil.Process) -> int | None:
    """The pid of the live `... 60` child a hold step started, if it is up yet."""
    for kid in parent.children(recursive=True):
        try:
            if any("60" in arg for arg in kid.cmdline()) and kid.status() != "zombie":
                return kid.pid
        except psutil.Error:
            continue
    return None


@pytest.mark.parametrize("case", sorted(CANCEL_CASES))
async def test_cancel_stops_the_child_process_within_the_grace_period(
    case: str, tmp_path: Path
) -> None:
    command, survives = CANCEL_CASES[case]
    workflow = tmp_path / "hold.yaml"
    workflow.write_text(
        f"id: hold\nsteps:\n  - id: hold\n    run: {{command: {command}}}\n", encoding="utf-8"
    )
    grace = 2.0
    engine = Orchestrator(OrchestratorConfig(db=tmp_path / "x.db", cancel_grace=grace))
    await engine.start(watch=False)
    me = psutil.Process()
    pid: int | None = None
    try:
        run = await engine.start_workflow(StartRequest(workflow=str(workflow)))

        async def running_child() -> int | None:
            detail = await engine.get_run(run.id)
            assert not detail.run.state.finished, detail.run
            return hold_child(me) if detail.steps[0].state is StepState.RUNNING else None

        pid = await eventually(running_child, "the step's child process")
        if survives:  # the child must have installed its handler before we cancel

            async def ready() -> bool:
                return any(line.line == "ready" for line in await engine.step_log(run.id, "hold"))

            await eventually(ready, "the child to ignore SIGTERM")

        began = time.monotonic()
        cancelled = await asyncio.wait_for(engine.cancel_run(run.id), grace + 20)

        async def gone() -> bool:
            return pid_gone(pid)

        await eventually(gone, f"child {pid} to stop", within=grace + 20)
        elapsed = time.monotonic() - began

        assert elapsed < grace + 3.0, f"child took {elapsed:.1f}s to stop (grace {grace}s)"
        assert elapsed >= survives, "a child ignoring SIGTERM must get the whole grace period"
        assert cancelled.state is RunState.CANCELLED
        detail = await engine.get_run(run.id)
        assert detail.run.state is RunState.CANCELLED
        assert detail.steps[0].state is StepState.CANCELLED
    finally:
        await engine.stop()
        kill_all([p for p in me.children(recursive=True) if p.pid == pid])


# ---------------------------------------------------------------------- queries


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """One DB holding a succeeded and a failed run: (db, ok run id, failed run id)."""
    folder = tmp_path_factory.mktemp("finished")
    db = folder / "voltui.db"
    ok = folder / "ok.yaml"
    ok.write_text(
        "id: ok\nsteps:\n"
        """  - id: one\n    run: {command: [python, -c, "print('one')"]}\n"""
        """  - id: two\n    depends_on: [one]\n    run: {command: [python, -c, "print(2)"]}\n""",
        encoding="utf-8",
    )
    bad = folder / "bad.yaml"
    bad.write_text(
        "id: bad\nsteps:\n"
        """  - id: boom\n    run: {command: [python, -c, "import sys; sys.exit(3)"]}\n""",
        encoding="utf-8",
    )
    ok_id = run_json("run", str(ok), db=db)["run"]["id"]
    failed = run_json("run", str(bad), db=db, expect=1)
    assert failed["run"]["state"] == "failed"
    assert failed["steps"][0]["exit_code"] == 3
    yield db, ok_id, failed["run"]["id"]


def test_list_shows_sample_workflows_and_runs(finished: tuple[Path, str, str]) -> None:
    db, ok_id, bad_id = finished
    listed = run_json("list", db=db)

    assert {w["id"] for w in listed["workflows"]} == SAMPLE_IDS
    assert {r["id"]: r["state"] for r in listed["runs"]} == {ok_id: "succeeded", bad_id: "failed"}


@pytest.mark.parametrize("state", ["succeeded", "failed", "cancelled"])
def test_list_filters_by_state(state: str, finished: tuple[Path, str, str]) -> None:
    db, ok_id, bad_id = finished
    runs = run_json("list", "--state", state, db=db)["runs"]

    expected = {"succeeded": [ok_id], "failed": [bad_id], "cancelled": []}[state]
    assert [r["id"] for r in runs] == expected


def test_events_are_json_lines_in_seq_order(finished: tuple[Path, str, str]) -> None:
    db, ok_id, _bad_id = finished
    events = event_lines(ok_id, db)

    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert {e["correlation_id"] for e in events} == {ok_id}
    assert events[0]["type"] == "workflow:queued"
    assert events[-1]["type"] == "workflow:succeeded"
    started = [e["data"]["step"] for e in events if e["type"] == "step:started"]
    assert started == ["one", "two"]


@pytest.mark.parametrize(("which", "code", "final"), [(1, 0, "succeeded"), (2, 1, "failed")])
def test_watch_finished_run_exits_by_its_state(
    which: int, code: int, final: str, finished: tuple[Path, str, str]
) -> None:
    db, run_id = finished[0], finished[which]
    result = voltui("watch", run_id, db=db)

    assert result.returncode == code, result.stdout + result.stderr
    assert f"workflow:{final}" in result.stdout
    assert f"run {run_id} {final}" in result.stdout


def test_schema_describes_workflow_files(db: Path) -> None:
    result = voltui("schema", db=db)

    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert "steps" in schema["properties"]
    assert "steps" in schema.get("required", [])


def test_help_lists_every_command(db: Path) -> None:
    """Plain `voltui` opens the dashboard (tested in tests/e2e); --help lists the commands."""
    result = voltui("--help", db=db)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: voltui")
    for command in ("run", "validate", "list", "watch", "events", "replay", "schema"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command


# ---------------------------------------------------------------------- watch from outside


def test_watch_follows_a_run_started_by_another_process(tmp_path: Path, db: Path) -> None:
    """The first step waits for a file the test writes once `watch` is following, so the run
    can neither end before `watch` starts nor depend on how loaded the machine is."""
    go = tmp_path / "go"
    workflow = tmp_path / "slow.yaml"
    steps = ["id: slow", "steps:"]
    wait = f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
    for i in (1, 2, 3):
        steps.append(f"  - id: s{i}")
        if i > 1:
            steps.append(f"    depends_on: [s{i - 1}]")
        code = (wait if i == 1 else "") + f"print('s{i}')"
        steps.append(f"    run: {{command: [python, -c, {json.dumps(code)}]}}")
    workflow.write_text("\n".join(steps) + "\n", encoding="utf-8")
    run_json("list", db=db)
    proc = subprocess.Popen(
        [sys.executable, "-m", "voltui", "run", str(workflow)],
        cwd=REPO,
        env=cli_env(db),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    watch: subprocess.Popen[str] | None = None
    try:
        runs = wait_for(lambda: run_json("list", db=db)["runs"], "the run to be recorded")
        run_id, state = runs[0]["id"], runs[0]["state"]
        assert state in ("queued", "running")
        watch = subprocess.Popen(
            [sys.executable, "-m", "voltui", "watch", run_id],
            cwd=REPO,
            env=cli_env(db),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert watch.stdout is not None
        # Should watch's output ever be held back, the run still goes on: no deadlock.
        fallback = threading.Timer(30, lambda: go.write_text("go"))
        fallback.start()
        seen = []
        for line in watch.stdout:  # follows live: s1 started, and waits for the file
            seen.append(line)
            if re.search(r"step:started\s+s1 started", line):
                break
        else:
            pytest.fail("watch ended before s1 started:\n" + "".join(seen))
        go.write_text("go")
        fallback.cancel()
        rest, err = watch.communicate(timeout=TIMEOUT)
        out = "".join(seen) + rest
        assert watch.returncode == 0, out + err
        assert "Traceback" not in out + err
        assert re.search(r"step:started\s+s3 started", out), out
        assert re.search(r"step:output\s+s3 stdout: s3", out), out
        assert re.search(r"workflow:succeeded\s+slow succeeded", out), out
        assert f"run {run_id} succeeded" in out
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        go.write_text("go")
        for child in (proc, watch):
            if child is not None and child.poll() is None:
                child.kill()
                child.wait(timeout=TIMEOUT)
