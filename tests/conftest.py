"""Shared test set-up: every test gets its own state file, never the user's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "state" / "voltui.db"
    monkeypatch.setenv("VOLTUI_DB", str(db))
    monkeypatch.delenv("VOLTUI_CONFIG", raising=False)
    return db


# Property tests (hypothesis): a fast profile by default (CI), a long one on demand:
# `VOLTUI_HYPOTHESIS=long pytest tests/test_safetext.py tests/remote/test_hardening.py`.
# Tests set no example counts of their own, so the profile decides.
settings.register_profile("fast", max_examples=60, deadline=None)
settings.register_profile("long", max_examples=3000, deadline=None)
settings.load_profile(os.environ.get("VOLTUI_HYPOTHESIS", "fast"))

from tests.fixtures.fake_openai import fake_openai  # noqa: E402, F401  (a shared fixture)
