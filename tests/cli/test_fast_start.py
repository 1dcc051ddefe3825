"""`voltui --help` and friends start fast because they import nothing heavy.

Counted in modules, not seconds (timings belong in bench/startup_bench.py): each case runs the
real entry point in a fresh interpreter and reports which heavy packages ended up loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.cli.conftest import REPO

HEAVY = ("pydantic_settings", "pydantic", "rich", "textual", "voltui.engine", "voltui.remote")
PROBE = (
    "import json, sys\n"
    "from voltui.cli import main\n"
    "try:\n"
    "    main(sys.argv[2:])\n"
    "except SystemExit:\n"
    "    pass\n"
    "heavy = sys.argv[1].split(',')\n"
    "sys.stderr.write('\\n' + json.dumps({m: m in sys.modules for m in heavy}) + '\\n')\n"
)


def loaded_by(*argv: str) -> dict[str, bool]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(HEAVY), *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(result.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["list", "--help"],
        ["events", "--limit", "0"],  # a mistake in a flag is refused before anything loads
        ["completion", "bash"],
        ["__complete", "watch", ""],
    ],
    ids=" ".join,
)
def test_answers_without_heavy_imports(argv: list[str]) -> None:
    loaded = loaded_by(*argv)

    offenders = [name for name, present in loaded.items() if present]
    assert not offenders, f"voltui {' '.join(argv)} imported {', '.join(offenders)}"


def test_probe_sees_a_command_that_does_load_them() -> None:
    """The probe itself works: `schema` needs the engine's models, and it says so."""
    loaded = loaded_by("schema")

    assert loaded["voltui.engine"] and loaded["pydantic"]
