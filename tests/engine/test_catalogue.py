"""A workflows folder is parsed once; a file is read again only when it changes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from voltui.config import OrchestratorConfig
from voltui.engine.catalogue import Catalogue
from voltui.engine.limits import WorkflowLimits
from voltui.engine.orchestrator import Orchestrator

HOUR = 3600.0


def _write(path: Path, workflow_id: str, steps: int = 1, *, age: float = HOUR) -> None:
    """A small valid workflow, its mtime set `age` seconds in the past (past the racy window)."""
    lines = [f"id: {workflow_id}", "steps:"]
    lines += [f"  - {{id: s{i}, run: {{command: [echo, '{i}']}}}}" for i in range(steps)]
    path.write_text("\n".join(lines) + "\n")
    _age(path, age)


def _age(path: Path, age: float) -> None:
    then = time.time() - age
    os.utime(path, (then, then))


def test_unchanged_folder_is_parsed_once(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        _write(tmp_path / f"{name}.yaml", name)
    catalogue = Catalogue(tmp_path)

    first = catalogue.list()
    for _ in range(5):
        again = catalogue.list()

    assert catalogue.parses == 3
    assert [w.id for w in first[0]] == [w.id for w in again[0]] == ["a", "b", "c"]
    assert again[1] == []


def test_only_the_changed_file_is_parsed_again(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        _write(tmp_path / f"{name}.yaml", name)
    catalogue = Catalogue(tmp_path)
    catalogue.list()

    _write(tmp_path / "b.yaml", "b", steps=4)
    workflows, _errors = catalogue.list()

    assert catalogue.parses == 4
    assert {w.id: len(w.steps) for w in workflows} == {"a": 1, "b": 4, "c": 1}


def test_same_size_rewrite_with_a_new_mtime_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    _write(path, "one_1")
    catalogue = Catalogue(tmp_path)
    assert catalogue.list()[0][0].id == "one_1"

    _write(path, "two_2", age=HOUR - 10)  # same length, newer mtime
    assert catalogue.list()[0][0].id == "two_2"
    assert catalogue.parses == 2


def test_replaced_file_with_the_same_mtime_is_seen_by_its_inode(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    _write(path, "one_1")
    catalogue = Catalogue(tmp_path)
    catalogue.list()
    stamp = os.stat(path)

    replacement = tmp_path / ".w.yaml.tmp"  # an editor's write-and-rename
    _write(replacement, "two_2")
    os.utime(replacement, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    os.replace(replacement, path)

    assert catalogue.list()[0][0].id == "two_2"


def test_a_file_written_just_now_is_not_trusted_until_it_settles(tmp_path: Path) -> None:
    path = tmp_path / "fresh.yaml"
    _write(path, "fresh", age=0)
    now = [time.time()]
    catalogue = Catalogue(tmp_path, clock=lambda: now[0])

    catalogue.list()
    catalogue.list()
    assert catalogue.parses == 2  # within RACY_SECONDS of its mtime: parsed again

    now[0] += Catalogue.RACY_SECONDS + 1
    catalogue.list()
    catalogue.list()
    assert catalogue.parses == 3  # settled: the last parse is kept


def test_new_and_removed_files(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "a")
    catalogue = Catalogue(tmp_path)
    assert [w.id for w in catalogue.list()[0]] == ["a"]

    _write(tmp_path / "b.yaml", "b")
    (tmp_path / "a.yaml").unlink()

    assert [w.id for w in catalogue.list()[0]] == ["b"]
    assert catalogue.parses == 2


def test_bad_files_are_cached_too_and_a_fix_is_picked_up(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: bad\nsteps: []\n")
    _age(bad, HOUR)
    catalogue = Catalogue(tmp_path)

    _workflows, errors = catalogue.list()
    catalogue.list()
    assert catalogue.parses == 1
    assert len(errors) == 1 and "at least one step" in str(errors[0])

    _write(bad, "bad")
    workflows, errors = catalogue.list()
    assert [w.id for w in workflows] == ["bad"] and errors == []


def test_duplicate_ids_name_both_files_also_for_json(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "same")
    second = tmp_path / "b.json"
    second.write_text(
        '{\n  "steps": [{"id": "s", "run": {"command": ["x"]}}],\n  "id": "same"\n}\n'
    )
    _age(second, HOUR)
    catalogue = Catalogue(tmp_path)

    for _ in range(2):  # the second listing comes from the cache, with the same message
        workflows, errors = catalogue.list()
        assert [w.source for w in workflows] == [str(tmp_path / "a.yaml")]
        (error,) = errors
        assert error.path == str(second)
        assert "line 3, column 9 (id): workflow id 'same' is already used by" in str(error)
        assert str(tmp_path / "a.yaml") in str(error)


def test_a_fifo_in_the_folder_is_an_error_not_a_hang(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "a")
    os.mkfifo(tmp_path / "pipe.yaml")
    outcome: list[object] = []
    thread = threading.Thread(
        target=lambda: outcome.append(Catalogue(tmp_path).list()), daemon=True
    )
    thread.start()
    thread.join(timeout=30)  # a hang guard, not a speed check
    assert outcome, "listing a folder with a FIFO blocked"
    workflows, errors = outcome[0]  # type: ignore[misc]
    assert [w.id for w in workflows] == ["a"]
    assert len(errors) == 1 and "FIFO" in str(errors[0])


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "a")
    _write(tmp_path / ".backup.yaml", "backup")
    (tmp_path / "sub.yaml").mkdir()
    (tmp_path / "notes.txt").write_text("not a workflow")
    workflows, errors = Catalogue(tmp_path).list()
    assert [w.id for w in workflows] == ["a"] and errors == []


def test_missing_folder(tmp_path: Path) -> None:
    assert Catalogue(tmp_path / "nope", missing_ok=True).list() == ([], [])
    assert Catalogue(None).list() == ([], [])
    _workflows, errors = Catalogue(tmp_path / "nope").list()
    assert "the folder does not exist" in str(errors[0])


def test_limits_apply_to_the_folder(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "a", steps=3)
    _workflows, errors = Catalogue(tmp_path, limits=WorkflowLimits(max_steps=2)).list()
    assert "limits.max_steps" in str(errors[0])


def test_returned_workflows_do_not_share_attributes_with_the_cache(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "a")
    catalogue = Catalogue(tmp_path)
    catalogue.list()[0][0].name = "changed by a caller"
    assert catalogue.list()[0][0].name is None


async def test_orchestrator_lists_from_its_catalogue(tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    for name in ("a", "b"):
        _write(folder / f"{name}.yaml", name)
    (folder / "broken.yaml").write_text("id: broken\n")
    _age(folder / "broken.yaml", HOUR)
    engine = Orchestrator(OrchestratorConfig(db=tmp_path / "x.db", workflows_dir=folder))

    for _ in range(3):
        assert [w.id for w in await engine.list_workflows()] == ["a", "b"]
        assert len(await engine.workflow_errors()) == 1
    assert engine.catalogue.parses == 3

    _write(folder / "c.yaml", "c")
    assert [w.id for w in await engine.list_workflows()] == ["a", "b", "c"]
    assert engine.catalogue.parses == 4
