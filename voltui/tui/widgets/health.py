"""Component health: one keyed row per component, cells updated in place; a row whose status
just changed is highlighted for about a second, so a flapping component catches the eye."""

from __future__ import annotations

from typing import ClassVar

from rich.style import Style
from rich.text import Text

from voltui.engine.models import ComponentStatus
from voltui.tui.state import DashboardState
from voltui.tui.widgets._table import KeyedTable
from voltui.tui.widgets._util import clock, mono_now, safe

FLASH_SECONDS = 1.0


HealthSig = tuple[str, str, float | None, float | None, str, Style | None]


def _sig(c: ComponentStatus, flash: Style | None) -> HealthSig:
    """What the row shows, as plain values (see `KeyedTable.sync`); `flash` is the highlight
    style while the row is highlighted."""
    return (c.name, str(c.status), c.latency, c.last_check, c.message, flash)


def _cells(sig: HealthSig) -> list[Text]:
    name, status, latency, last_check, message, flash = sig
    cells = [
        safe(name, max_len=30),
        Text(status),
        Text("-" if latency is None else f"{latency * 1000:.0f}ms"),
        Text(clock(last_check)),
        safe(message, max_len=120),
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
        now = mono_now(self)
        return {cid for cid, until in self._flash_until.items() if until > now}

    def refresh_from(self, state: DashboardState) -> None:
        self._state = state
        now = mono_now(self)
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
                cid: _sig(c, flash if cid in self._flash_until else None)
                for cid, c in state.components.items()
            },
            _cells,
        )

    def _unflash(self) -> None:
        if self._state is not None:
            self.refresh_from(self._state)
