"""The built wheel carries every file the program reads at run time.

CI installs editable, which reads files straight from the checkout, so a file missing from the
wheel (as app.tcss once was) would only show up for people following `pip install .`.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).parents[1]


def test_wheel_contains_every_package_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("voltui-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = REPO / "voltui"
    expected = {
        path.relative_to(REPO).as_posix()
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".tcss")
    }
    assert expected, "no package files found"
    assert sorted(expected - names) == []
