"""Started outside the repository, voltui names the folder it looked for and the way to
another one, instead of suggesting paths that do not exist there."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import REPO, assert_one_paragraph, voltui


def test_list_outside_the_repo_names_the_folder_and_the_flag(tmp_path: Path, db: Path) -> None:
    result = voltui("list", db=db, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "no runs yet" in out
    assert f"sample-workflows/ is not in {tmp_path}" in out
    assert "--workflows DIR" in out
    assert "sample-workflows/code_review.yaml" not in out, "a path that does not exist here"


def test_list_in_the_repo_suggests_a_workflow_that_exists(db: Path) -> None:
    result = voltui("list", db=db)

    assert result.returncode == 0, result.stderr
    assert "no runs yet: try `voltui run code_review`" in result.stdout


def test_list_with_a_state_filter_says_which_runs_are_missing(db: Path) -> None:
    result = voltui("list", "--state", "failed", db=db)

    assert "no failed runs" in result.stdout


def test_run_by_id_outside_the_repo_is_a_user_error_naming_the_folder(
    tmp_path: Path, db: Path
) -> None:
    result = voltui("run", "code_review", db=db, cwd=tmp_path)

    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_paragraph(result.stderr)
    assert "'code_review' is not a workflow file" in result.stderr
    assert "--workflows DIR" in result.stderr


def test_workflows_flag_works_from_anywhere(tmp_path: Path, db: Path) -> None:
    result = voltui(
        "run", "flaky", "--workflows", str(REPO / "sample-workflows"), "--json", db=db, cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
