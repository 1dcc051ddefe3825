"""Every flag of every command refuses bad values the same way: exit 2, one paragraph on stderr,
no traceback. The cases are read off the parser itself, so a new flag is covered at once (and a
flag that takes a value without a checking `type=` fails the test until it gets one).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import REPO, assert_one_paragraph, cli_env, voltui
from voltui.cli import RUN_STATES, build_parser
from voltui.config import OrchestratorConfig
from voltui.engine.models import RunState
from voltui.engine.orchestrator import Orchestrator

DUMMY = {"files": "x.yaml", "shell": "bash"}
SKIP = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    top = build_parser()
    found = [("", top)]
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += sorted(action.choices.items())
    return found


def _bad_values(action: argparse.Action) -> list[str]:
    if action.choices is not None:
        return ["", "no-such-choice"]
    return list(getattr(action.type, "bad_examples", ["<no checking type=>"]))


def _argv(command: str, parser: argparse.ArgumentParser, tested: argparse.Action, bad: str):
    argv = [command] if command else []
    positionals = [a for a in parser._actions if not a.option_strings and not isinstance(a, SKIP)]
    for action in positionals:
        if action is tested:
            argv.append(bad)
            break
        if action.nargs != "?" or tested in positionals:
            argv.append(DUMMY.get(action.dest, "x"))
    if tested.option_strings:
        argv += [tested.option_strings[-1], bad]
    return argv


def _cases() -> list[object]:
    cases = []
    for command, parser in _parsers():
        for action in parser._actions:
            if isinstance(action, SKIP) or action.nargs == 0:
                continue
            name = action.option_strings[-1] if action.option_strings else action.dest
            for bad in _bad_values(action):
                argv = _argv(command, parser, action, bad)
                cases.append(pytest.param(argv, action, id=f"{command or 'voltui'} {name}={bad!r}"))
    return cases


CASES = _cases()


def test_the_walk_finds_every_command_and_value_flag() -> None:
    """Guard the walk: a broken one would make the parametrised test vacuous."""
    ids = {c.id for c in CASES}  # type: ignore[attr-defined]
    for expected in (
        "events --limit='0'",
        "events --limit='-5'",
        "watch --tail='-1'",
        "list --db=''",
        "logs --attempt='0'",
        "voltui --refresh='0'",
        "run workflow=''",
        "serve --on-stop=''",
    ):
        assert expected in ids, expected
    assert len(CASES) > 100


@pytest.mark.parametrize(("argv", "action"), CASES)
def test_bad_value_is_one_paragraph_and_exit_2(
    argv: list[str], action: argparse.Action, capsys: pytest.CaptureFixture[str]
) -> None:
    assert action.choices is not None or hasattr(action.type, "bad_examples"), (
        f"{action.option_strings or action.dest} takes a value but has no checking type= "
        "from voltui.commands.argtypes (or choices=)"
    )
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert_one_paragraph(err)
    where = action.option_strings[-1] if action.option_strings else action.metavar or action.dest
    assert str(where) in err, f"the message must name {where}:\n{err}"
    assert "usage:" not in err, "one paragraph: the usage summary is what --help is for"


def test_run_states_for_help_match_the_engine() -> None:
    """`voltui.cli` spells the states out to stay light; they must not drift from the enum."""
    assert list(RUN_STATES) == [s.value for s in RunState]


# ---------------------------------------------------------------------- the real program


@pytest.mark.parametrize(
    "argv",
    [
        ["events", "--limit", "0"],
        ["events", "--limit", "-5"],
        ["watch", "abc", "--tail", "-1"],
        ["list", "--limit", "0"],
        ["list", "--db", "/proc/nope/x.db"],
        ["list", "--socket", "/proc/nope/x.sock"],
        ["serve", "--socket", "/proc/nope/voltui.sock"],
        ["list", "--tcp", "127.0.0.1:9", "--token-file", "/nonexistent-voltui/token"],
        ["run", "sample-workflows/flaky.yaml", "--config", "/nonexistent-voltui/voltui.toml"],
    ],
    ids=" ".join,
)
def test_real_program_refuses_without_a_traceback(argv: list[str], db: Path) -> None:
    result = voltui(*argv, db=db)

    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_paragraph(result.stderr)


def test_watch_tail_0_shows_no_history_but_the_outcome(db: Path) -> None:
    ran = voltui("run", "sample-workflows/flaky.yaml", "--json", db=db)
    assert ran.returncode == 0, ran.stderr
    run_id = ran.stdout.split('"id": "', 1)[1].split('"', 1)[0]

    result = voltui("watch", run_id, "--tail", "0", db=db)

    assert result.returncode == 0, result.stderr
    assert "step:" not in result.stdout, "--tail 0 shows none of the recorded events"
    assert f"run {run_id} succeeded" in result.stdout


async def _many_events(db: Path, count: int) -> None:
    engine = Orchestrator(OrchestratorConfig(db=db, agents=[]))
    await engine.start(watch=False)
    try:
        for i in range(count):
            engine.dispatcher.emit("test:ping", "test", {"n": i, "pad": "x" * 100})
        await engine.store.flush()
    finally:
        await engine.stop()


def test_closed_pipe_ends_quietly(db: Path) -> None:
    """`voltui events --json --limit 2000 | head -n 1`: far more than a pipe buffer holds."""
    asyncio.run(_many_events(db, 3000))
    proc = subprocess.Popen(
        [sys.executable, "-m", "voltui", "events", "--json", "--limit", "2000"],
        cwd=REPO,
        env=cli_env(db),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -n 1` does once it has its line
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=60)

    assert first.startswith(b"{")
    assert err == "", f"a closed pipe is normal for a CLI; nothing belongs on stderr:\n{err}"
    assert code == 141  # 128 + SIGPIPE, as a shell reports a program a pipe ended
