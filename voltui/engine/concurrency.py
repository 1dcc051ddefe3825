"""ConcurrencyGate: at most `limit` active runs per concurrency key value, across the engine.

A workflow's `concurrency: {key: "deploy-${inputs.env}", limit: 1}` gives each run a key value;
runs sharing a value take turns. The gate sits at the very start of a run (before the engine's
own `max_concurrent_workflows` slots, so a waiting run holds no slot) and is left when the run
ends. A waiting run stays `queued`; the gate says why with a `workflow:queued` event carrying
`reason: "key busy"`, which dashboards show as `queued (key busy)`.

Schedules with `overlap: queue` use the same gate with a per-schedule key and limit 1, so a
fire that finds the previous run still going waits behind it instead of overlapping.

Waiters are served first come, first served, and a released place is handed straight to the
next waiter (no barging). A run holding several keys takes them in sorted order, so two runs
can never each hold a key the other waits for.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from voltui.engine.events import EventEmitter
from voltui.engine.models import Priority, Run, Workflow

__all__ = ["KEY_BUSY", "ConcurrencyGate", "GateKey", "keys_for"]

SOURCE = "concurrency"
KEY_BUSY = "key busy"
"""The `reason` of the `workflow:queued` event a waiting run gets."""

Policy = Literal["queue", "skip"]


@dataclass(frozen=True, slots=True)
class GateKey:
    key: str
    limit: int
    policy: Policy


@dataclass
class _Slot:
    """One key value: who holds it and who waits, in order."""

    holders: set[str] = field(default_factory=set)
    waiters: deque[tuple[str, asyncio.Future[None]]] = field(default_factory=deque)


def keys_for(run: Run, workflow: Workflow) -> list[GateKey]:
    """The keys a run must hold: its workflow's concurrency key and, for a run started by a
    schedule with `overlap: queue`, that schedule's own key (limit 1)."""
    keys: list[GateKey] = []
    spec = workflow.concurrency
    if spec is not None:
        keys.append(GateKey(spec.render(run.inputs), spec.limit, spec.policy))
    if run.trigger == "schedule" and run.trigger_ref:
        for i, sched in enumerate(workflow.schedules):
            if f"{workflow.id}:{sched.name(i)}" == run.trigger_ref and sched.overlap == "queue":
                keys.append(GateKey(f"schedule:{run.trigger_ref}", 1, "queue"))
    return keys


class ConcurrencyGate:
    """Counts active runs per key value; see the module docstring."""

    def __init__(self, events: EventEmitter) -> None:
        self._events = events
        self._slots: dict[str, _Slot] = {}
        self._held: dict[str, list[str]] = {}  # run id -> keys it holds

    def active(self, key: str) -> int:
        slot = self._slots.get(key)
        return len(slot.holders) if slot else 0

    def waiting(self, key: str) -> int:
        slot = self._slots.get(key)
        return len(slot.waiters) if slot else 0

    async def enter(self, run: Run, workflow: Workflow) -> bool:
        """Take every key the run needs, waiting as needed. False means the run is skipped
        (a key with `policy: skip` was busy); `run.error` then says which key."""
        keys = sorted(keys_for(run, workflow), key=lambda k: k.key)
        for gk in keys:
            if not await self.acquire(run, gk.key, gk.limit, gk.policy, workflow=workflow):
                self.release(run.id)
                run.error = (
                    f"skipped: concurrency key {gk.key!r} already has {gk.limit} active "
                    f"run(s) and the workflow's policy is skip"
                )
                return False
        return True

    async def acquire(
        self,
        run: Run,
        key: str,
        limit: int,
        policy: Policy,
        *,
        workflow: Workflow | None = None,
    ) -> bool:
        """Hold one place of `key` for `run`; False (at once) when busy and `policy` is skip."""
        slot = self._slots.setdefault(key, _Slot())
        if len(slot.holders) < limit and not slot.waiters:
            self._hold(slot, run.id, key)
            return True
        if policy == "skip":
            self._forget_if_idle(key)
            return False
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        slot.waiters.append((run.id, future))
        self._events.emit(
            "workflow:queued",
            SOURCE,
            _queued_data(run, workflow, key, limit, len(slot.holders), len(slot.waiters)),
            priority=Priority.NORMAL,
            correlation_id=run.id,
        )
        try:
            await future  # `_release_one` adds us to the holders before resolving
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Granted in the same instant as cancelled: give the place on.
                self._drop(run.id, key)
            else:
                _remove_waiter(slot, run.id)
                self._forget_if_idle(key)
            raise
        return True

    def release(self, run_id: str, key: str | None = None) -> None:
        """Give back one key (or every key the run holds); unknown runs are ignored."""
        keys = [key] if key is not None else list(self._held.get(run_id, ()))
        for k in keys:
            self._drop(run_id, k)

    # ------------------------------------------------------------------ internals

    def _hold(self, slot: _Slot, run_id: str, key: str) -> None:
        slot.holders.add(run_id)
        self._held.setdefault(run_id, []).append(key)

    def _drop(self, run_id: str, key: str) -> None:
        slot = self._slots.get(key)
        held = self._held.get(run_id)
        if held is not None and key in held:
            held.remove(key)
            if not held:
                del self._held[run_id]
        if slot is None or run_id not in slot.holders:
            return
        slot.holders.discard(run_id)
        while slot.waiters:
            waiter_id, future = slot.waiters.popleft()
            if future.done():
                continue
            self._hold(slot, waiter_id, key)
            future.set_result(None)
            break
        self._forget_if_idle(key)

    def _forget_if_idle(self, key: str) -> None:
        slot = self._slots.get(key)
        if slot is not None and not slot.holders and not slot.waiters:
            del self._slots[key]


def _remove_waiter(slot: _Slot, run_id: str) -> None:
    slot.waiters = deque(w for w in slot.waiters if w[0] != run_id)


def _queued_data(
    run: Run, workflow: Workflow | None, key: str, limit: int, active: int, waiting: int
) -> dict[str, Any]:
    """A `workflow:queued` payload a dashboard can fold like the first one, plus the reason."""
    data: dict[str, Any] = {
        "workflow_id": run.workflow_id,
        "name": run.workflow_name,
        "inputs": run.inputs,
        "steps_total": run.steps_total,
        "replay_of": run.replay_of,
        "replay_mode": run.replay_mode,
        "trigger": run.trigger,
        "trigger_ref": run.trigger_ref,
        "reason": KEY_BUSY,
        "key": key,
        "limit": limit,
        "active": active,
        "position": waiting,
    }
    if workflow is not None:
        data["dag"] = [[s.id, list(s.depends_on)] for s in workflow.steps]
    return data
