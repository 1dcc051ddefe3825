"""`voltui prune` and `voltui doctor` as a user runs them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.cli.conftest import voltui

WF = "id: tiny\nsteps:\n  - id: a\n    run: {simulated: {duration: 0}}\n"


def _runs(tmp_path: Path, db: Path, n: int) -> None:
    wf = tmp_path / "tiny.yaml"
    wf.write_text(WF)
    for _ in range(n):
        assert voltui("run", str(wf), db=db).returncode == 0


def test_prune_dry_run_then_keep(tmp_path: Path, db: Path) -> None:
    _runs(tmp_path, db, 4)
    preview = voltui("prune", "--keep", "1", "--dry-run", "--json", db=db)
    assert preview.returncode == 0, preview.stderr
    figures = json.loads(preview.stdout)
    assert figures["dry_run"] and len(figures["runs"]) == 3 and figures["steps"] == 3
    listed = json.loads(voltui("list", "--json", db=db).stdout)["runs"]
    assert len(listed) == 4  # nothing removed by the dry run

    done = voltui("prune", "--keep", "1", db=db)
    assert done.returncode == 0, done.stderr
    assert "removed 3 run(s)" in done.stdout
    assert len(json.loads(voltui("list", "--json", db=db).stdout)["runs"]) == 1
    assert "nothing to prune" in voltui("prune", "--keep", "1", db=db).stdout


def test_prune_older_than_spares_recent_runs(tmp_path: Path, db: Path) -> None:
    _runs(tmp_path, db, 2)
    out = voltui("prune", "--older-than", "1d", db=db)
    assert out.returncode == 0 and "nothing to prune" in out.stdout


def test_doctor_says_healthy_then_finds_and_repairs_damage(tmp_path: Path, db: Path) -> None:
    _runs(tmp_path, db, 2)
    ok = voltui("doctor", db=db)
    assert ok.returncode == 0 and "healthy" in ok.stdout
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET data = 'garbage' WHERE rowid = 1")
    found = voltui("doctor", db=db)
    assert found.returncode == 1
    assert "1 damaged row(s) in runs" in found.stdout and "--repair" in found.stdout
    fixed = voltui("doctor", "--repair", db=db)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "backed up to" in fixed.stdout and "now healthy" in fixed.stdout
    assert voltui("doctor", db=db).returncode == 0
    assert len(json.loads(voltui("list", "--json", db=db).stdout)["runs"]) == 1
