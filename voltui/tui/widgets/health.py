"""Component health: one keyed row per component, cells updated in place; a row whose status
just changed is highlighted for about a second, so a flapping component catches the eye."""

from __future__ import annotations

import time
from typing import ClassVar

from rich.style import Style
from rich.text import Text

from voltui.engine.models import ComponentStatus
from voltui.tui.state import DashboardState
from voltui.tui.widgets._table import KeyedTable
from voltui.tui.widgets._util import clock, safe

FLASH_SECONDS = 1.0


def _row(c: ComponentStatus, flash: Style | None = None) -> list[Text]:
    latency = "-" if c.latency is None else f"{c.latency * 1000:.0f}ms"
    cells = [
        safe(c.name, max_len=30),
        Text(str(c.status)),
        Text(latency),
        Text(clock(c.last_check)),
        safe(c.message, max_len=120),
    ]
    if flash is not None:
        for cell in cells:
            cell.stylize(flash)
    return cells


class HealthTable(KeyedTable):
    """Health of the engine's components, as the watcher last saw them.

    The flash colour is the `health-table--flash` component class (theme variables in CSS),
    since a DataTable row cannot carry a CSS class of its own.
    """

    COLUMNS = ("component", "status", "latency", "checked", "message")
    COMPONENT_CLASSES: ClassVar[set[str]] = {"health-table--flash"}
    DEFAULT_CSS = """
    HealthTable > .health-table--flash { background: $warning 40%; text-style: bold; }
    """

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._status: dict[str, str] = {}
        self._flash_until: dict[str, float] = {}
        self._state: DashboardState | None = None

    @property
    def flashing(self) -> set[str]:
        """Component ids highlighted right now."""
        now = time.monotonic()
        return {cid for cid, until in self._flash_until.items() if until > now}

    def refresh_from(self, state: DashboardState) -> None:
        self._state = state
        now = time.monotonic()
        for cid, c in state.components.items():
            old = self._status.get(cid)
            status = str(c.status)
            if old is not None and old != status:
                self._flash_until[cid] = now + FLASH_SECONDS
                self.set_timer(FLASH_SECONDS + 0.05, self._unflash, name="health-flash")
            self._status[cid] = status
        for cid in [cid for cid in self._status if cid not in state.components]:
            del self._status[cid]
        self._flash_until = {
            cid: t for cid, t in self._flash_until.items() if t > now and cid in self._status
        }
        flash = self.get_component_rich_style("health-table--flash", partial=True)
        self.sync(
            {
                cid: _row(c, flash if cid in self._flash_until else None)
                for cid, c in state.components.items()
            }
        )

    def _unflash(self) -> None:
        if self._state is not None:
            self.refresh_from(self._state)
