"""Regenerate docs/dashboard.svg, the README's picture of the dashboard.

    python docs/make_screenshot.py

It is the 160x48 snapshot test's scene (tests/tui/snapshot_apps.py): a real engine running the
development pipeline with simulated steps, stopped mid-run with pinned clocks, so the picture
only changes when the dashboard's look does.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.tui.snapshot_apps when run as a plain script

from textual.pilot import Pilot  # noqa: E402

from tests.tui.snapshot_apps import SnapshotApp, fixed_timezone, reach_mid_run  # noqa: E402

OUT = ROOT / "docs" / "dashboard.svg"
SIZE = (160, 48)


def main() -> None:
    async def shoot(pilot: Pilot[None]) -> None:
        await reach_mid_run(pilot)
        svg = pilot.app.export_screenshot(title="voltui", simplify=True)
        # Rich gives each export a random id; drop it (as pytest-textual-snapshot does) so
        # the file only changes when the picture does.
        OUT.write_text(re.sub(r"\bterminal-\d+-([\w-]+)", r"terminal-\1", svg), encoding="utf-8")
        pilot.app.exit()

    with tempfile.TemporaryDirectory() as tmp, fixed_timezone("UTC"):
        app = SnapshotApp(Path(tmp) / "screenshot.db")
        app.run(headless=True, size=SIZE, auto_pilot=shoot)
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
