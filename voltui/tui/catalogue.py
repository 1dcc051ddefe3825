"""The engine's workflow list, kept by the dashboard so that the command palette and the start
dialog open at once.

Asking the engine for its catalogue costs a round trip (and, for an engine that reads its
workflow files to answer, their parsing): done on every opening of the palette, it made the
palette take about half a second to open. The dashboard fetches the list when it starts and
again every `REFRESH_SECONDS` in the background, and everything that lists workflows reads the
copy. A failed fetch keeps the last list.
"""

from __future__ import annotations

import asyncio
import logging

from voltui.engine.api import EngineAPI, WorkflowInfo

log = logging.getLogger(__name__)

REFRESH_SECONDS = 30.0
"""How often the dashboard fetches the catalogue again (a new workflow file shows within this)."""


class WorkflowCatalogue:
    """A copy of `EngineAPI.list_workflows()`, refreshed by its owner."""

    def __init__(self, engine: EngineAPI) -> None:
        self.engine = engine
        self.workflows: list[WorkflowInfo] | None = None
        """The last list fetched; None until the first fetch has ended."""
        self.error: str | None = None
        """Why the last fetch failed (None after a success)."""
        self.fetches = 0
        """Fetches started (for tests and diagnostics)."""
        self._busy = False
        self._first = asyncio.Event()

    async def refresh(self) -> None:
        """Fetch the list again; a fetch already under way makes this one a no-op."""
        if self._busy:
            return
        self._busy = True
        self.fetches += 1
        try:
            self.workflows = await self.engine.list_workflows()
            self.error = None
        except Exception as exc:  # the palette's other commands must still work
            self.error = str(exc)
            log.warning("could not list the engine's workflows: %s", exc)
        finally:
            self._busy = False
            self._first.set()

    async def get(self) -> list[WorkflowInfo]:
        """The list as last fetched, without asking the engine; only before the first fetch
        has ended does this wait for it (starting it if nobody has)."""
        if self.workflows is None:
            if self._busy:
                await self._first.wait()
            else:
                await self.refresh()
        return list(self.workflows or [])
