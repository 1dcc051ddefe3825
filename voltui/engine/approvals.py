"""Approval steps: ask a person durably, wait for the decision from any process, time out.

The request is a row in the store before the step is reported waiting, so it survives the
engine: after a crash (or a quit) the next long-lived engine continues the run in place and the
same row is waited on again (`Orchestrator._resume_waiting`); `replay --failed` of a run that
stays interrupted reuses an approval already given. The decision is an update of that row
made by whichever process the person used (`voltui approve`, a dashboard, a server over its
socket); the first decision wins, atomically. The run's owner reads the row every `poll`
seconds, and at once when the decision was made in its own process.

A waiting approval holds no agent slot: it never goes through the CoordinationEngine.
"""

from __future__ import annotations

import asyncio
import getpass
import time
from collections.abc import Callable

from voltui.engine.durations import format_duration
from voltui.engine.errors import NotFoundError, UserError
from voltui.engine.models import Approval, ApprovalCall
from voltui.engine.store import RunStore

POLL = 0.5
"""Seconds between reads of a waiting approval's row (decisions from other processes)."""


def current_user() -> str:
    """Who is deciding, as the operating system knows them."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


class ApprovalGate:
    """Every approval this engine is waiting for, and the way decisions reach them."""

    def __init__(
        self,
        store: RunStore,
        *,
        clock: Callable[[], float] = time.time,
        poll: float = POLL,
    ) -> None:
        self._store = store
        self._clock = clock
        self._poll = poll
        self._waiting: dict[tuple[str, str], tuple[Approval, asyncio.Event]] = {}

    def pending(self) -> list[Approval]:
        """The approvals this engine waits for now (for snapshots)."""
        return [approval for approval, _ in self._waiting.values()]

    async def ask(
        self, run_id: str, step_id: str, call: ApprovalCall, *, carried: Approval | None = None
    ) -> Approval:
        """Record the request (or find the one already stored); returns what is stored.

        `carried` is an approval given to the run this one replays, which that run's engine
        did not live to act on: it stands, so the person is not asked twice."""
        now = self._clock()
        if carried is not None and carried.decision == "approved":
            inherited = carried.model_copy(
                update={"run_id": run_id, "via": f"{carried.via}, given to run {carried.run_id}"}
            )
            return await self._store.request_approval(inherited)
        request = Approval(
            run_id=run_id,
            step_id=step_id,
            prompt=call.prompt,
            requested_at=now,
            timeout_at=None if call.timeout is None else now + call.timeout,
            on_timeout=call.on_timeout,
        )
        return await self._store.request_approval(request)

    async def wait(self, request: Approval) -> Approval:
        """Return the decision: a person's, or the timeout's default."""
        key = (request.run_id, request.step_id)
        woken = asyncio.Event()
        self._waiting[key] = (request, woken)
        try:
            while True:
                current = await self._store.get_approval(*key)
                if current is not None and not current.pending:
                    return current
                now = self._clock()
                if request.timeout_at is not None and now >= request.timeout_at:
                    waited = format_duration(request.timeout_at - request.requested_at)
                    decided = request.model_copy(
                        update={
                            "decision": "approved"
                            if request.on_timeout == "approve"
                            else "rejected",
                            "decided_at": now,
                            "by": "timeout",
                            "via": "timeout",
                            "comment": f"no decision within {waited}",
                        }
                    )
                    if await self._store.decide_approval(decided) is not None:
                        return decided
                    continue  # a person decided in the same instant: theirs stands
                pause = self._poll
                if request.timeout_at is not None:
                    pause = max(0.0, min(pause, request.timeout_at - now))
                try:
                    await asyncio.wait_for(woken.wait(), pause)
                except TimeoutError:
                    pass
                woken.clear()
        finally:
            self._waiting.pop(key, None)

    async def decide(
        self,
        run_id: str,
        step_id: str,
        *,
        approve: bool,
        comment: str | None,
        by: str | None,
        via: str | None,
    ) -> Approval:
        """Write a person's decision; UserError when there is nothing (left) to decide."""
        current = await self._store.get_approval(run_id, step_id)
        if current is None:
            raise NotFoundError(
                f"step {step_id!r} of run {run_id} has not asked for approval; only an approval "
                "step that is waiting can be approved or rejected"
            )
        if current.pending:
            decided = current.model_copy(
                update={
                    "decision": "approved" if approve else "rejected",
                    "decided_at": self._clock(),
                    "by": by or current_user(),
                    "via": via or "api",
                    "comment": comment or None,
                }
            )
            if await self._store.decide_approval(decided) is not None:
                waiting = self._waiting.get((run_id, step_id))
                if waiting is not None:
                    waiting[1].set()
                return decided
            current = await self._store.get_approval(run_id, step_id) or current
        raise UserError(
            f"step {step_id!r} of run {run_id} was already {current.decision} by {current.by} "
            f"(via {current.via}); a decision cannot be changed"
        )
