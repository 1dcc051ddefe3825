"""EngineAPI: the one interface between the engine and every front end.

The TUI, the CLI and (later) the remote client use only this protocol, so a dashboard cannot tell
an embedded `Orchestrator` from a remote one. Every argument and result is a pydantic model or a
primitive, so a transport only needs to JSON-encode the same classes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from voltui.engine.models import (
    AgentLoad,
    Approval,
    BudgetSpec,
    CacheStats,
    ComponentStatus,
    Event,
    EventQuery,
    EventStats,
    HealthStatus,
    InputSpec,
    LogLine,
    Run,
    RunDetail,
    RunState,
    RunTrigger,
    SystemMetrics,
    Usage,
)
from voltui.engine.usage import UsageTotals


class ScheduleInfo(BaseModel):
    """One schedule of a workflow as the engine sees it now (for lists and the dashboard)."""

    id: str = Field(description="workflow:name, as `voltui schedules pause` takes it")
    spec: str = Field(description="`cron */15 * * * * (Europe/Berlin)` or `every 10m`")
    next_fire_at: float | None = Field(None, description="None while paused")
    paused: bool = False
    last_fired_at: float | None = None
    overlap: str = "skip"
    catchup: str = "latest"


class WorkflowInfo(BaseModel):
    """A loadable workflow as listed to users (file, id, inputs), without its full steps."""

    id: str
    name: str
    description: str | None = None
    path: str | None = None
    steps: int
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    schedules: list[ScheduleInfo] = Field(default_factory=list)
    budget: BudgetSpec | None = Field(None, description="the workflow's own LLM budget")


class UsageReport(BaseModel):
    """LLM tokens and cost of the runs kept in the store (durable, unlike the engine's
    since-start totals in the snapshot), per agent and per model."""

    since: float | None = Field(None, description="only runs created at or after this time")
    runs: int = Field(0, description="runs that made at least one LLM call")
    total: Usage = Field(default_factory=Usage)
    by_agent: dict[str, Usage] = Field(default_factory=dict)
    by_model: dict[str, Usage] = Field(default_factory=dict)


class StartRequest(BaseModel):
    """Start a known workflow by id (from `list_workflows`) or by file path."""

    workflow: str = Field(description="workflow id, or a path to a workflow file")
    inputs: dict[str, Any] = Field(default_factory=dict)
    trigger: RunTrigger = Field("manual", description="why the run starts (recorded on the run)")
    trigger_ref: str | None = Field(None, description="the schedule or file that started it")
    budget: BudgetSpec | None = Field(
        None,
        description="this run's LLM budget: the fields given replace the workflow's own",
    )


class ReplayRequest(BaseModel):
    run_id: str
    mode: Literal["failed", "all"] = "failed"
    budget: BudgetSpec | None = Field(
        None, description="the replay's LLM budget: the fields given replace the run's"
    )


class ApprovalRequest(BaseModel):
    """A person's decision on a waiting approval step (`voltui approve`, `a`/`x` keys)."""

    run_id: str = Field(max_length=256)
    step_id: str = Field(max_length=256)
    approve: bool = True
    comment: str | None = Field(None, max_length=4000)
    by: str | None = Field(None, max_length=256, description="who; default the OS user")
    via: str | None = Field(None, max_length=256, description="where from: cli, dashboard")


class EngineSnapshot(BaseModel):
    """Everything a dashboard needs at once; later changes arrive as events after `seq`."""

    seq: int = Field(description="last event sequence number included in this snapshot")
    ts: float
    started_at: float
    health: HealthStatus
    components: list[ComponentStatus]
    metrics: SystemMetrics | None = None
    agents: list[AgentLoad]
    runs: list[Run]
    cache: list[CacheStats]
    events: EventStats
    recent_events: list[Event] = Field(default_factory=list)
    approvals: list[Approval] = Field(
        default_factory=list, description="approval steps waiting for a decision"
    )
    usage: UsageTotals = Field(
        default_factory=UsageTotals,
        description="LLM tokens and cost since the engine started, by agent and by model",
    )


class SubscriptionLagged(Exception):
    """Raised by `subscribe` when the consumer fell too far behind: take a fresh snapshot."""

    def __init__(self, last_seq: int) -> None:
        super().__init__(f"subscriber fell behind after seq {last_seq}; resync from a snapshot")
        self.last_seq = last_seq


@runtime_checkable
class EngineAPI(Protocol):
    """The engine as seen from outside. Implemented by `Orchestrator` (and the remote client)."""

    @property
    def connection(self) -> str:
        """`embedded`, or a remote link's `connecting`/`connected`/`reconnecting`/`closed`."""
        ...

    async def snapshot(self) -> EngineSnapshot: ...

    def subscribe(
        self, pattern: str = "*", since_seq: int | None = None
    ) -> AsyncIterator[list[Event]]:
        """Batches of events matching `pattern` (fnmatch, e.g. `step:*`), in seq order.

        With `since_seq`, first every recorded event after it, then live ones: no gap, no
        duplicate. Raises `SubscriptionLagged` if the consumer cannot keep up.
        """
        ...

    async def list_workflows(self) -> list[WorkflowInfo]: ...

    async def start_workflow(self, request: StartRequest) -> Run: ...

    async def cancel_run(self, run_id: str) -> Run: ...

    async def replay_run(self, request: ReplayRequest) -> Run: ...

    async def get_run(self, run_id: str) -> RunDetail: ...

    async def list_runs(self, state: RunState | None = None, limit: int = 50) -> list[Run]: ...

    async def usage(self, since: float | None = None) -> UsageReport:
        """LLM usage of the kept runs created since `since`, per agent and per model."""
        ...

    async def step_log(
        self, run_id: str, step_id: str, attempt: int | None = None, tail: int | None = None
    ) -> list[LogLine]: ...

    async def events(self, query: EventQuery) -> list[Event]: ...

    async def wait_run(self, run_id: str) -> Run:
        """Return once the run has finished (any final state)."""
        ...

    async def approve(self, request: ApprovalRequest) -> Approval:
        """Approve or reject a waiting approval step; the run's owner acts on it."""
        ...
