"""Where voltui keeps its state and looks for its config, without loading the config.

Split from `voltui.config` (which needs pydantic-settings and the engine's models) so that quick
paths, such as shell completion reading run ids, stay cheap to start.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

CONFIG_ENV = "VOLTUI_CONFIG"
DB_ENV = "VOLTUI_DB"


def data_dir() -> Path:
    """Where state lives by default (the SQLite file and run folders)."""
    return platformdirs.user_data_path("voltui", appauthor=False)


def default_db_path() -> Path:
    """The state file when neither `--db`, `VOLTUI_DB` nor the config names one."""
    return data_dir() / "voltui.db"


def default_config_path() -> Path | None:
    """`$VOLTUI_CONFIG`, else `./voltui.toml`, else the user's config folder, if it exists."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    for candidate in (
        Path("voltui.toml"),
        platformdirs.user_config_path("voltui", appauthor=False) / "voltui.toml",
    ):
        if candidate.is_file():
            return candidate
    return None
