"""Helpers for the CLI tests: run `voltui` as a real program, and check its error contract."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 60.0


def cli_env(db: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "VOLTUI_DB": str(db), **extra}
    env.pop("VOLTUI_CONFIG", None)
    return env


def voltui(
    *args: str, db: Path, cwd: Path = REPO, timeout: float = TIMEOUT, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion; a traceback anywhere in its output fails the test."""
    result = subprocess.run(
        [sys.executable, "-m", "voltui", *args],
        cwd=cwd,
        env=cli_env(db, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert "Traceback" not in result.stdout + result.stderr, (
        f"voltui {' '.join(args)} leaked a traceback:\n{result.stdout}\n{result.stderr}"
    )
    return result


def assert_one_paragraph(stderr: str) -> None:
    """A user mistake: some text, no blank line inside it, no traceback, a few lines at most."""
    text = stderr.strip()
    assert text, "nothing on stderr"
    assert "Traceback" not in text, text
    assert "\n\n" not in text, f"more than one paragraph:\n{text}"
    assert len(text.splitlines()) <= 4, f"too long for one paragraph:\n{text}"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "voltui.db"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short folder for sockets: sun_path allows ~100 bytes and pytest's tmp_path is long."""
    path = Path(tempfile.mkdtemp(prefix="vc-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
