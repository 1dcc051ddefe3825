"""The engine stays headless: no module under `voltui.engine` may pull in textual or rich.

Each module is imported in a fresh interpreter, because in one process the first module to
import a UI library would hide every later offender (and this test process has both loaded).
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import voltui.engine

REPO = Path(__file__).resolve().parents[1]
UI_LIBRARIES = ("textual", "rich")
PROBE = (
    "import importlib, json, sys\n"
    "importlib.import_module(sys.argv[1])\n"
    "print(json.dumps({name: name in sys.modules for name in sys.argv[2:]}))\n"
)


def engine_modules() -> list[str]:
    names = [voltui.engine.__name__]
    names += [m.name for m in pkgutil.walk_packages(voltui.engine.__path__, "voltui.engine.")]
    return sorted(names)


def loaded_after_import(module: str) -> dict[str, bool]:
    """Which UI libraries are in `sys.modules` of a new interpreter after importing `module`."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, module, *UI_LIBRARIES],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"importing {module} failed:\n{result.stderr}"
    return json.loads(result.stdout)


def test_engine_package_has_the_expected_modules() -> None:
    """Guard the walk itself: an empty or partial list would make the real test vacuous."""
    modules = engine_modules()
    for expected in ("voltui.engine.orchestrator", "voltui.engine.agents.command"):
        assert expected in modules
    assert len(modules) >= 15


def test_probe_detects_a_ui_import() -> None:
    """The CLI's table printer uses rich, so the probe must say so; otherwise it could never
    catch anything. (`voltui.cli` itself loads Rich only once a command needs it.)"""
    assert loaded_after_import("voltui.commands.columns")["rich"] is True


@pytest.mark.parametrize("module", engine_modules())
def test_engine_module_imports_no_ui_library(module: str) -> None:
    loaded = loaded_after_import(module)

    offenders = [name for name, present in loaded.items() if present]
    assert not offenders, f"importing {module} loads {', '.join(offenders)}"
