"""State files are the owner's alone: database 0600, run folders 0700, old ones tightened."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.second_user import as_nobody, nobody_ids, requires_second_user
from voltui.config import OrchestratorConfig
from voltui.engine.api import StartRequest
from voltui.engine.orchestrator import Orchestrator
from voltui.engine.private import create_private_file, ensure_private_dir, secure_store
from voltui.engine.store import RunStore

SECRET_WORKFLOW = """\
id: secret
inputs: {key: {type: string, default: "s3cr3t-input"}}
steps:
  - id: show
    requires: [shell]
    run: {command: [python, -c, "print('printed-key-123')"]}
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The umask most users have: files 0644 and folders 0755 unless voltui says otherwise."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder every local user can enter (pytest's tmp_path is inside a 0700 folder, which
    would hide any mistake from a second user)."""
    path = Path(tempfile.mkdtemp(prefix="vp-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_workflow(workflows: Path) -> Path:
    workflows.mkdir(exist_ok=True)
    (workflows / "secret.yaml").write_text(SECRET_WORKFLOW, encoding="utf-8")
    return workflows


async def run_secret_workflow(db: Path, workflows: Path) -> str:
    engine = Orchestrator(OrchestratorConfig(db=db, workflows_dir=workflows))
    await engine.start(watch=False)
    try:
        run = await engine.start_workflow(StartRequest(workflow="secret"))
        done = await engine.wait_run(run.id)
        assert done.state == "succeeded", done.error
        # Still open: -wal and -shm exist now.
        for suffix in ("", "-wal", "-shm"):
            assert mode(Path(f"{db}{suffix}")) == 0o600, suffix
        return run.id
    finally:
        await engine.stop()


async def test_new_state_is_private(tmp_path: Path) -> None:
    db = tmp_path / "state" / "deeper" / "voltui.db"
    run_id = await run_secret_workflow(db, write_workflow(tmp_path / "wf"))
    assert mode(db) == 0o600
    assert mode(db.parent) == 0o700 and mode(db.parent.parent) == 0o700  # created by voltui
    runs = db.parent / "runs"
    assert mode(runs) == 0o700
    assert mode(runs / run_id) == 0o700


async def test_existing_state_is_tightened_with_a_notice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "voltui.db"
    store = RunStore(db)
    await store.open()
    await store.close()
    old_run = tmp_path / "runs" / "abc123"
    old_run.mkdir(parents=True)
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        path.touch()
        path.chmod(0o644)
    (tmp_path / "runs").chmod(0o755)
    old_run.chmod(0o755)

    with caplog.at_level(logging.WARNING, logger="voltui.engine.private"):
        store = RunStore(db)
    await store.open()
    try:
        for suffix in ("", "-wal", "-shm"):
            assert mode(Path(f"{db}{suffix}")) == 0o600
    finally:
        await store.close()
    assert mode(tmp_path / "runs") == 0o700
    assert len(store.notices) == 4
    assert any(str(db) in n and "644 -> 600" in n for n in store.notices)
    assert any("runs" in n and "755 -> 700" in n for n in store.notices)
    assert [r.getMessage() for r in caplog.records] == store.notices
    # Opening it again finds nothing to say.
    assert RunStore(db).notices == []


def test_a_folder_the_user_chose_is_kept(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    assert secure_store(folder / "x.db") == []
    assert mode(folder) == 0o755
    assert mode(folder / "x.db") == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_another_users_files_are_left_alone(tmp_path: Path) -> None:
    uid, gid = nobody_ids()
    db = tmp_path / "theirs.db"
    db.touch()
    db.chmod(0o644)
    os.chown(db, uid, gid)
    assert secure_store(db) == []
    assert mode(db) == 0o644


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    link = tmp_path / "x.db"
    link.symlink_to(target)
    assert create_private_file(link) is False
    assert not target.exists()
    real = tmp_path / "real"
    real.write_text("x")
    real.chmod(0o644)
    link2 = tmp_path / "y.db"
    link2.symlink_to(real)
    secure_store(link2)
    assert mode(real) == 0o644  # never chmod through a link


def test_ensure_private_dir_makes_each_level(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c"
    assert ensure_private_dir(path) == []
    for level in (tmp_path / "a", tmp_path / "a" / "b", path):
        assert mode(level) == 0o700
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(NotADirectoryError):
        ensure_private_dir(afile)


@requires_second_user
async def test_a_second_user_cannot_read_state(shared_dir: Path) -> None:
    """The issue's finding: a key printed by a step was read from the database by `nobody`."""
    data = shared_dir / "data"
    data.mkdir(mode=0o755)  # the user's own folder, open to all: the files must protect themselves
    data.chmod(0o755)
    db = data / "voltui.db"
    run_id = await run_secret_workflow(db, write_workflow(shared_dir / "wf"))
    for path in (db, data / "runs" / run_id):
        result = as_nobody(["cat" if path.is_file() else "ls", str(path)])
        assert result.returncode != 0, f"nobody could read {path}: {result.stdout[:200]!r}"
        assert "Permission denied" in result.stderr
