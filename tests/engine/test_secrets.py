"""Secrets declared by a workflow reach its steps but never the store, the events or the views."""

from __future__ import annotations

import asyncio
import secrets as pysecrets
import sys
from pathlib import Path

import pytest

from voltui.config import OrchestratorConfig
from voltui.engine.errors import UserError
from voltui.engine.models import AgentSpec, EventQuery, RunState, StepState, Workflow
from voltui.engine.orchestrator import Orchestrator
from voltui.engine.secrets import MASK, Masker

PY = sys.executable


def test_masker_replaces_every_value_longest_first_inside_nested_values() -> None:
    m = Masker(["hunter22", "hunter22-long", "abc"])  # "abc" is too short to mask
    assert m.mask("a hunter22-long b hunter22 c abc") == f"a {MASK} b {MASK} c abc"
    value = {"k hunter22": ["x hunter22", ("hunter22", 3)], "n": None}
    assert m.mask_value(value) == {f"k {MASK}": [f"x {MASK}", (MASK, 3)], "n": None}


def test_masker_without_values_changes_nothing() -> None:
    m = Masker()
    assert not m.active
    value = {"a": ["b"]}
    assert m.mask_value(value) is value


def workflow(run_dir_file: str) -> Workflow:
    printer = (
        "import json, os, sys, pathlib\n"
        "tok = os.environ['API_TOKEN']\n"
        f"pathlib.Path(os.environ['VOLTUI_RUN_DIR'], {run_dir_file!r}).write_text(tok)\n"
        "print('token is', tok)\n"
        "print('stderr has', tok, file=sys.stderr)\n"
        "print(json.dumps({'token': tok, 'nested': ['x' + tok]}))\n"
    )
    failer = "import os, sys\nsys.exit('refused with ' + os.environ['API_TOKEN'])\n"
    return Workflow.model_validate(
        {
            "id": "secretive",
            "secrets": ["API_TOKEN"],
            "steps": [
                {"id": "show", "run": {"command": [PY, "-c", printer]}, "cache": {"ttl": "1h"}},
                {"id": "fail", "depends_on": ["show"], "run": {"command": [PY, "-c", failer]}},
            ],
        }
    )


def state_files(db: Path) -> list[Path]:
    return [p for p in db.parent.iterdir() if p.name.startswith(db.name)]


async def test_a_secret_printed_by_a_step_never_reaches_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "tok-" + pysecrets.token_hex(16)
    monkeypatch.setenv("API_TOKEN", token)
    db = tmp_path / "state" / "engine.db"
    config = OrchestratorConfig(
        db=db, agents=[AgentSpec(id="cmd", kind="command", capabilities=[], capacity=4)]
    )
    engine = Orchestrator(config)
    await engine.start(watch=False)
    try:
        run = await engine.run_workflow(workflow("seen.txt"))
        final = await asyncio.wait_for(engine.wait_run(run.id), 60)
        detail = await engine.get_run(final.id)
        events = await engine.events(EventQuery(correlation_id=run.id))
        show_log = await engine.step_log(run.id, "show")
    finally:
        await engine.stop()

    # The step did get the secret (it wrote it into its own run folder).
    assert (Path(detail.run.run_dir or "") / "seen.txt").read_text() == token
    # What the engine shows: masked.
    assert final.state is RunState.FAILED
    show, fail = detail.steps
    assert show.state is StepState.SUCCEEDED
    assert show.output == {"token": MASK, "nested": [f"x{MASK}"]}
    assert fail.error is not None and MASK in fail.error and token not in fail.error
    assert final.error is not None and token not in final.error
    lines = [ln.line for ln in show_log]
    assert f"token is {MASK}" in lines and f"stderr has {MASK}" in lines
    assert all(token not in e.model_dump_json() for e in events)
    assert any(MASK in e.model_dump_json() for e in events if e.type == "step:output")
    # What the engine stored: not a byte of it, in the database, its WAL or its shm file.
    files = state_files(db)
    assert db in files
    for path in files:
        assert token.encode() not in path.read_bytes(), path.name


async def test_a_declared_secret_missing_from_the_environment_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    engine = Orchestrator(OrchestratorConfig(db=tmp_path / "e.db"))
    await engine.start(watch=False)
    try:
        with pytest.raises(UserError, match="declares secrets API_TOKEN"):
            await engine.run_workflow(workflow("x"))
    finally:
        await engine.stop()
