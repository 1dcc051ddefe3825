"""File triggers through a real engine: real inotify watching, real runs, real SQLite claims."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.engine.waiting import until
from voltui.config import OrchestratorConfig
from voltui.engine.models import AgentSpec, Run, RunState, Workflow
from voltui.engine.orchestrator import Orchestrator

WAIT = 30.0

WORKFLOW = """\
id: ingest
inputs:
  path: {type: string}
  kind: {type: string, default: csv}
triggers:
  - {files: "inbox/*.csv", debounce: 100ms, inputs: {kind: table}}
steps:
  - id: read
    run: {simulated: {duration: 1ms}}
"""


async def started_engine(tmp_path: Path, **config: object) -> Orchestrator:
    folder = tmp_path / "workflows"
    folder.mkdir(exist_ok=True)
    (folder / "ingest.yaml").write_text(WORKFLOW)
    (folder / "inbox").mkdir(exist_ok=True)
    engine = Orchestrator(
        OrchestratorConfig(
            db=tmp_path / "state" / "engine.db",
            workflows_dir=folder,
            agents=[AgentSpec(id="sim", kind="simulated", capabilities=[], capacity=8)],
            **config,
        )
    )
    await engine.start()
    return engine


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Orchestrator]:
    orch = await started_engine(tmp_path)
    try:
        yield orch
    finally:
        await orch.stop()


async def watching(engine: Orchestrator) -> None:
    def ready() -> bool:
        triggers = engine.automation.triggers
        return bool(
            triggers and triggers.triggers and all(t.ready.is_set() for t in triggers.triggers)
        )

    await until(ready, "the trigger to watch")


async def finished_runs(engine: Orchestrator, count: int) -> list[Run]:
    async with asyncio.timeout(WAIT):
        while True:
            runs = [r for r in await engine.list_runs() if r.workflow_id == "ingest"]
            if len(runs) >= count and all(r.state.finished for r in runs):
                return runs
            await asyncio.sleep(0.05)


async def test_three_new_files_start_three_runs_with_their_paths(
    engine: Orchestrator, tmp_path: Path
) -> None:
    await watching(engine)
    inbox = tmp_path / "workflows" / "inbox"
    files = [inbox / f"day{i}.csv" for i in range(3)]
    for i, path in enumerate(files):
        path.write_text(f"a,b\n{i},{i}\n")
    (inbox / "notes.txt").write_text("not a csv")  # does not match the glob
    secret = tmp_path / "elsewhere.csv"
    secret.write_text("private")
    os.symlink(secret, inbox / "planted.csv")  # a link is never handed to a workflow

    runs = await finished_runs(engine, 3)
    await asyncio.sleep(0.5)  # anything else would have started by now (debounce is 100 ms)
    runs = [r for r in await engine.list_runs() if r.workflow_id == "ingest"]
    assert len(runs) == 3
    assert sorted(r.inputs["path"] for r in runs) == sorted(str(p) for p in files)
    assert all(r.inputs["kind"] == "table" for r in runs)
    assert all(r.trigger == "trigger" and r.state is RunState.SUCCEEDED for r in runs)
    assert all(r.trigger_ref and r.trigger_ref.startswith("ingest:1 ") for r in runs)
    fired = [e for e in engine.dispatcher.history() if e.type == "trigger:fired"]
    assert len(fired) == 3
    ignored = [e for e in engine.dispatcher.history() if e.type == "trigger:ignored"]
    assert [e.data["path"] for e in ignored] == [str(inbox / "planted.csv")]


async def test_a_changed_file_runs_again_and_a_second_engine_does_not_double_it(
    tmp_path: Path,
) -> None:
    first = await started_engine(tmp_path)
    second = Orchestrator(first.config)  # same folder, same SQLite file
    await second.start()
    try:
        await watching(first)
        await watching(second)
        path = tmp_path / "workflows" / "inbox" / "data.csv"
        path.write_text("1\n")
        await finished_runs(first, 1)
        stat = path.stat()
        path.write_text("1\n2\n")
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        await finished_runs(first, 2)
        await asyncio.sleep(0.5)
        runs = [r for r in await first.store.list_runs() if r.workflow_id == "ingest"]
        assert len(runs) == 2  # one per version of the file, across both engines
    finally:
        await second.stop()
        await first.stop()


async def test_a_missing_folder_is_reported_not_fatal(tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "ingest.yaml").write_text(WORKFLOW)
    engine = Orchestrator(
        OrchestratorConfig(db=tmp_path / "e.db", workflows_dir=folder, schedules_enabled=False)
    )
    await engine.start()
    try:
        await until(
            lambda: any(e.type == "trigger:error" for e in engine.dispatcher.history()),
            "trigger:error",
        )
        (error,) = [e for e in engine.dispatcher.history() if e.type == "trigger:error"]
        assert "does not exist" in error.data["error"]
    finally:
        await engine.stop()


async def test_triggers_can_be_switched_off(tmp_path: Path) -> None:
    engine = await started_engine(tmp_path, triggers_enabled=False)
    try:
        assert engine.automation.triggers is None
    finally:
        await engine.stop()


def test_globs_split_into_a_folder_to_watch_and_a_pattern(tmp_path: Path) -> None:
    from voltui.engine.triggers import TriggerWatcher, _split, trigger_entries

    assert _split("inbox/*.csv", tmp_path) == (tmp_path / "inbox", "*.csv", False)
    assert _split("data/**/*.json", tmp_path) == (tmp_path / "data", "**/*.json", True)
    assert _split("/srv/drop/x.txt", tmp_path) == (Path("/srv/drop"), "x.txt", False)
    wf = Workflow.model_validate(
        {
            "id": "w",
            "inputs": {"path": {"type": "string"}},
            "triggers": [{"files": "data/**/*.json"}],
            "steps": [{"id": "s", "run": {"simulated": {}}}],
        }
    )
    wf._source = str(tmp_path / "w.yaml")
    (trig,) = trigger_entries([wf])
    matches = TriggerWatcher._matches
    assert matches(None, trig, str(tmp_path / "data" / "a.json"))  # type: ignore[arg-type]
    assert matches(None, trig, str(tmp_path / "data" / "x" / "y" / "b.json"))  # type: ignore[arg-type]
    assert not matches(None, trig, str(tmp_path / "data" / "b.csv"))  # type: ignore[arg-type]
    assert not matches(None, trig, str(tmp_path / "other" / "a.json"))  # type: ignore[arg-type]
