"""A fake `EngineAPI` for Pilot tests that must decide what the engine says and when."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from voltui.engine.api import EngineSnapshot, StartRequest, WorkflowInfo
from voltui.engine.models import Event, Run, RunDetail


class FakeEngine:
    """An `EngineAPI` whose link the test cuts and restores; a new `snap` and `details` play a
    restarted server."""

    def __init__(self, snap: EngineSnapshot, details: dict[str, RunDetail]) -> None:
        self.connection = "connected"
        self.snap = snap
        self.details = details
        self.streams: list[asyncio.Queue[list[Event]]] = []
        self.since: list[int | None] = []
        self.snapshots = 0
        self.workflows: list[WorkflowInfo] = []
        self.listed = 0
        self.started: list[StartRequest] = []

    async def snapshot(self) -> EngineSnapshot:
        self.snapshots += 1
        return self.snap.model_copy(deep=True)

    def subscribe(
        self, pattern: str = "*", since_seq: int | None = None
    ) -> AsyncIterator[list[Event]]:
        queue: asyncio.Queue[list[Event]] = asyncio.Queue()
        self.streams.append(queue)
        self.since.append(since_seq)

        async def stream() -> AsyncIterator[list[Event]]:
            while True:
                yield await queue.get()

        return stream()

    def send(self, events: list[Event]) -> None:
        """Deliver to the newest subscription (the one a live dashboard holds)."""
        self.streams[-1].put_nowait(events)

    async def get_run(self, run_id: str) -> RunDetail:
        return self.details[run_id].model_copy(deep=True)

    async def list_workflows(self) -> list[WorkflowInfo]:
        self.listed += 1
        return list(self.workflows)

    async def start_workflow(self, request: StartRequest) -> Run:
        """A queued run, and (like an engine whose events are slow to come) no event at all."""
        self.started.append(request)
        return Run(
            id=f"run{len(self.started):013d}",
            workflow_id=request.workflow,
            workflow_name=request.workflow.title(),
            created_at=time.time(),
        )
