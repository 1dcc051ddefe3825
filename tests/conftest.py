"""Shared test set-up: every test gets its own state file, never the user's."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "state" / "voltui.db"
    monkeypatch.setenv("VOLTUI_DB", str(db))
    monkeypatch.delenv("VOLTUI_CONFIG", raising=False)
    return db


from tests.fixtures.fake_openai import fake_openai  # noqa: E402, F401  (a shared fixture)
