"""`voltui validate`: every problem of a file in one pass, one located line each, exit 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOUR_KINDS = REPO / "tests" / "engine" / "multi_problem_workflows" / "four_kinds.yaml"


def validate(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """The real CLI in a subprocess; a traceback anywhere fails the test."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("VOLTUI_")}
    result = subprocess.run(
        [sys.executable, "-m", "voltui", "validate", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result


def located_lines(output: str, path: Path) -> list[str]:
    return re.findall(rf"^{re.escape(str(path))}: line \d+, column \d+ \(.*$", output, re.M)


def test_four_problems_of_different_kinds_print_four_located_lines() -> None:
    result = validate(str(FOUR_KINDS))

    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4, result.stdout
    assert located_lines(result.stdout, FOUR_KINDS) == lines
    assert "(steps[0].timeout): 'soon' is not a duration" in lines[0]
    assert "unknown step 'biuld'; did you mean 'build'?" in lines[1]
    assert "dependency cycle: test -> package -> test" in lines[2]
    assert "step id 'build' is used twice" in lines[3]


def test_good_and_bad_files_in_one_call(tmp_path: Path) -> None:
    good = REPO / "sample-workflows" / "fan_out.yaml"
    result = validate(str(good), str(FOUR_KINDS))
    assert result.returncode == 2
    assert result.stdout.splitlines()[0] == f"ok {good}: fan_out (10 steps)"
    assert len(located_lines(result.stdout, FOUR_KINDS)) == 4


def test_many_problems_show_twenty_and_count_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    steps = [f"  - {{id: s{i}, depends_on: [nope{i}], run: {{command: [x]}}}}" for i in range(50)]
    path.write_text("id: many\nsteps:\n" + "\n".join(steps) + "\n")

    result = validate(str(path))

    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert len(located_lines(result.stdout, path)) == 20
    assert lines[-1] == (
        f"{path}: ... and 30 more problems (50 in all); fix these first, then validate again"
    )


def test_limits_come_from_the_config_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "three.yaml"
    steps = [f"  - {{id: s{i}, run: {{command: [x]}}}}" for i in range(3)]
    path.write_text("id: three\nsteps:\n" + "\n".join(steps) + "\n")
    config = tmp_path / "voltui.toml"
    config.write_text("[limits]\nmax_steps = 2\n")

    assert validate(str(path)).returncode == 0
    by_file = validate("--config", str(config), str(path))
    by_env = validate(str(path), env={"VOLTUI_LIMITS__MAX_STEPS": "2"})

    for result in (by_file, by_env):
        assert result.returncode == 2
        assert "the workflow has 3 steps, over the limit of 2 (limits.max_steps)" in result.stdout


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_is_one_line_and_exit_2(device: str, tmp_path: Path) -> None:
    if not os.path.exists(device):
        pytest.skip(f"{device} does not exist here")
    link = tmp_path / "flow.yaml"
    link.symlink_to(device)
    result = validate(str(link))
    assert result.returncode == 2
    assert result.stdout == f"{link}: this is a character device, not a regular file; " + (
        "workflows are read only from regular files, since reading a device or a pipe may "
        "never end\n"
    )


def test_nan_retry_delay_is_refused(tmp_path: Path) -> None:
    """`retry.base_delay: .nan` passed validate and then crashed `voltui run` (issue 13)."""
    path = tmp_path / "nan.yaml"
    path.write_text("id: n\nretry: {base_delay: .nan}\nsteps: [{id: a, run: {command: [x]}}]\n")
    result = validate(str(path))
    assert result.returncode == 2
    assert f"{path}: line 2, column 21 (retry.base_delay): .nan is not a finite number" in (
        result.stdout
    )
