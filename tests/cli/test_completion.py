"""Shell completion: the scripts, and what `voltui __complete` answers from the parser, the
state file and the workflows folder. The bash script is also driven in a real bash."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import REPO, cli_env, voltui
from voltui.config import OrchestratorConfig
from voltui.engine.api import StartRequest
from voltui.engine.orchestrator import Orchestrator

TWO_STEPS = """\
id: two_steps
steps:
  - id: first
    run: {command: [python, -c, "print(1)"]}
  - id: second
    depends_on: [first]
    run: {command: [python, -c, "print(2)"]}
"""


async def _runs(db: Path, workflow: Path, count: int) -> list[str]:
    engine = Orchestrator(OrchestratorConfig(db=db))
    await engine.start(watch=False)
    try:
        ids = []
        for _ in range(count):
            run = await engine.start_workflow(StartRequest(workflow=str(workflow)))
            await engine.wait_run(run.id)
            ids.append(run.id)
        return ids
    finally:
        await engine.stop()


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    folder = tmp_path_factory.mktemp("completion")
    workflow = folder / "two.yaml"
    workflow.write_text(TWO_STEPS, encoding="utf-8")
    db = folder / "x.db"
    yield db, asyncio.run(_runs(db, workflow, 2))


def answer(db: Path, *words: str, cwd: Path = REPO) -> tuple[str, list[str]]:
    result = voltui("__complete", *words, db=db, cwd=cwd)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    directive, *lines = result.stdout.splitlines()
    return directive, [line.split("\t")[0] for line in lines]


def test_commands_and_flags_come_from_the_parser(state: tuple[Path, list[str]]) -> None:
    db, _ids = state
    assert answer(db, "")[1][:3] == ["run", "validate", "list"]
    assert "__complete" not in answer(db, "")[1], "the helper stays hidden"
    assert answer(db, "wa") == ("plain", ["watch"])
    assert answer(db, "logs", "x", "--ta") == ("plain", ["--tail"])
    assert answer(db, "list", "--state", "f") == ("plain", ["failed"])
    assert answer(db, "completion", "") == ("plain", ["bash", "zsh", "fish"])
    assert answer(db, "validate", "")[0] == "files"
    assert answer(db, "--workflows", "")[0] == "dirs"


def test_run_ids_from_the_state_file(state: tuple[Path, list[str]]) -> None:
    db, ids = state
    for words in (["watch", ""], ["logs", ""], ["events", "--run", ""], ["replay", "--failed", ""]):
        directive, found = answer(db, *words)
        assert directive == "plain"
        assert found == list(reversed(ids)), words  # newest first
    assert answer(db, "cancel", ids[0][:6])[1] == [ids[0]]


def test_run_ids_follow_a_db_flag_on_the_line(
    state: tuple[Path, list[str]], tmp_path: Path
) -> None:
    db, ids = state
    other = tmp_path / "empty.db"
    assert answer(other, "watch", "")[1] == []
    assert answer(other, "--db", str(db), "watch", "")[1] == list(reversed(ids))
    assert answer(other, "watch", "--db", str(db), "")[1] == list(reversed(ids))


def test_step_ids_of_the_run_on_the_line(state: tuple[Path, list[str]]) -> None:
    db, ids = state
    assert answer(db, "logs", ids[0], "") == ("plain", ["first", "second"])
    assert answer(db, "logs", ids[0][:8], "s") == ("plain", ["second"])


def test_workflow_ids_from_the_workflows_folder(
    state: tuple[Path, list[str]], tmp_path: Path
) -> None:
    db, _ids = state
    directive, found = answer(db, "run", "")
    assert directive == "files", "workflow files complete too"
    assert {"code_review", "flaky", "simulated_load"} <= set(found)
    assert answer(db, "run", "", cwd=tmp_path) == ("files", []), "no folder here: files only"
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "mine.yaml").write_text(TWO_STEPS, encoding="utf-8")
    assert answer(db, "run", "--workflows", str(folder), "")[1] == ["two_steps"]


def test_a_missing_state_file_answers_nothing_quietly(tmp_path: Path) -> None:
    assert answer(tmp_path / "nothing-here.db", "watch", "") == ("plain", [])
    assert not (tmp_path / "nothing-here.db").exists(), "completion must not create state"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_scripts_are_printed(shell: str, tmp_path: Path) -> None:
    result = voltui("completion", shell, db=tmp_path / "x.db")

    assert result.returncode == 0, result.stderr
    assert "__complete" in result.stdout
    checker = shutil.which(shell)
    if checker:  # a syntax check where the shell exists
        check = subprocess.run([checker, "-n"], input=result.stdout, text=True, capture_output=True)
        assert check.returncode == 0, check.stderr


def _bash_complete(db: Path, *words: str) -> list[str]:
    script = voltui("completion", "bash", db=db).stdout
    line = " ".join(f"'{w}'" for w in ("voltui", *words))
    probe = (
        f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words)}\n"
        '_voltui_complete; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = cli_env(db)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        ["bash", "--norc", "--noprofile"],
        input=probe,
        text=True,
        capture_output=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_commands_flags_and_run_ids(state: tuple[Path, list[str]]) -> None:
    db, ids = state
    assert _bash_complete(db, "wat") == ["watch"]
    assert _bash_complete(db, "list", "--li") == ["--limit"]
    assert _bash_complete(db, "watch", "") == list(reversed(ids))
    assert "flaky" in _bash_complete(db, "run", "")


@pytest.mark.skipif(shutil.which("fish") is None, reason="needs fish")
def test_fish_completes_commands_and_run_ids(state: tuple[Path, list[str]]) -> None:
    db, ids = state
    env = cli_env(db)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    def fish(line: str) -> list[str]:
        result = subprocess.run(
            ["fish", "--no-config", "-c", f"voltui completion fish | source; complete -C '{line}'"],
            text=True,
            capture_output=True,
            cwd=REPO,
            env=env,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return [row.split("\t")[0] for row in result.stdout.splitlines()]

    assert fish("voltui wat") == ["watch"]
    assert sorted(fish("voltui watch ")) == sorted(ids)


def test_hostile_ids_never_reach_the_shell(tmp_path: Path) -> None:
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "evil.yaml").write_text("id: x\x1b]52;c;cG93bmVk\x07y\nsteps: []\n", "utf-8")
    (folder / "fine.yaml").write_text("id: fine_one\nsteps: []\n", "utf-8")
    result = voltui("__complete", "run", "--workflows", str(folder), "", db=tmp_path / "x.db")

    assert result.stdout.splitlines() == ["files", "fine_one\tfine.yaml"]
