"""The engine's data: workflow definitions, agents, runs, steps and events.

Every value that crosses the EngineAPI is one of these pydantic models, so the remote transport
is plain JSON of the same classes and the TUI never sees engine internals.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    WithJsonSchema,
    computed_field,
    field_validator,
    model_validator,
)

from voltui.engine.durations import parse_duration

# --------------------------------------------------------------------------- primitives


def _duration(value: object) -> float:
    """`parse_duration`, with a number too large for a float (a 400-digit integer) refused
    as a ValueError, which pydantic reports at its place, instead of an OverflowError,
    which it would let through as a crash."""
    try:
        return parse_duration(value)
    except OverflowError:
        raise ValueError(f"{str(value)[:20]}... is far too large for a duration") from None


Duration = Annotated[
    float,
    BeforeValidator(_duration),
    # `.nan` and `.inf` parse as floats, and `99...9s` overflows to inf: neither is a duration
    # a timer can wait for (a NaN retry delay crashed `voltui run`), so they are refused here.
    Field(allow_inf_nan=False),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "description": "seconds"},
                {
                    "type": "string",
                    "pattern": r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*)+$",
                    "description": "e.g. 250ms, 5s, 10m, 1h, 1h30m",
                },
            ]
        }
    ),
]
"""Seconds as a finite float; accepts `250ms`, `5s`, `10m`, `1h` in files."""

IDENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
Ident = Annotated[str, Field(pattern=IDENT_PATTERN, max_length=128)]


class Priority(enum.StrEnum):
    """Event and step priority; `rank` orders queues (higher first)."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        return _PRIORITY_RANK[self.value]


_PRIORITY_RANK = {"critical": 3, "high": 2, "normal": 1, "low": 0}


class _FileModel(BaseModel):
    """Base for models read from workflow files: unknown keys are mistakes, not extensions.

    No float field accepts NaN or infinity: every number in a workflow ends up in arithmetic
    (delays, weights, rates) or in JSON, and neither has a sensible meaning for them.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- workflow files


class RetryPolicy(_FileModel):
    """How a failed step is retried. `max_attempts` counts the first try."""

    max_attempts: int = Field(1, ge=1, le=100)
    backoff: Literal["fixed", "linear", "exponential"] = "exponential"
    base_delay: Duration = 1.0
    max_delay: Duration = 30.0
    jitter: float = Field(0.1, ge=0, le=1, description="random fraction added to each delay")
    retryable_errors: list[str] = Field(
        default_factory=list,
        description="regex patterns; when set, only errors matching one are retried",
    )

    @field_validator("retryable_errors")
    @classmethod
    def _patterns_compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                msg = f"retryable_errors pattern {pattern!r} is not a regex: {exc}"
                raise ValueError(msg) from exc
        return value


class CacheSpec(_FileModel):
    """Cache a step's result keyed by its definition and inputs."""

    ttl: Duration | None = None
    namespace: str = "steps"


class LLMCall(_FileModel):
    """An OpenAI-compatible chat completion; `{name}` in prompts is filled from inputs."""

    prompt: str
    system: str | None = None
    model: str | None = None
    max_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.2, ge=0, le=2)
    stream: bool = Field(
        False, description="stream the answer (SSE) so the step log shows it as it grows"
    )
    output_schema: dict[str, Any] | None = Field(
        None,
        description="JSON Schema the answer must match; the parsed answer becomes output.json "
        "and a mismatch is a retryable step error",
    )

    @field_validator("output_schema")
    @classmethod
    def _schema_is_valid(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # Checked when the file loads, so a typo in the schema is a located file error rather
        # than a failure of every attempt at run time.
        if value is not None:
            from jsonschema import Draft202012Validator, SchemaError
            from jsonschema.validators import validator_for

            try:
                validator_for(value, default=Draft202012Validator).check_schema(value)
            except SchemaError as exc:
                where = "/".join(str(p) for p in exc.path) or "(top level)"
                msg = f"output_schema is not a valid JSON Schema at {where}: {exc.message}"
                raise ValueError(msg) from None
        return value


class SimulatedCall(_FileModel):
    """Fake work for demos and load tests only: sleeps, may fail, emits output lines."""

    duration: Duration = 1.0
    jitter: float = Field(0.0, ge=0, le=1, description="random +/- fraction of duration")
    failure_rate: float = Field(0.0, ge=0, le=1)
    fail_attempts: int = Field(0, ge=0, description="fail deterministically on the first N tries")
    output_lines: int = Field(0, ge=0, description="step:output lines emitted while running")
    output: dict[str, Any] = Field(default_factory=dict)


class ApprovalCall(_FileModel):
    """Wait for a person to approve or reject; the step's output is the decision.

    The step holds no agent slot while it waits. Without `timeout` it waits as long as the run
    may (the workflow timeout still applies).
    """

    prompt: str = Field(min_length=1, description="what the person is asked to decide")
    timeout: Duration | None = None
    on_timeout: Literal["reject", "approve"] = "reject"


RunKind = Literal["command", "python", "llm", "simulated", "approval"]


class RunSpec(_FileModel):
    """What a step does: exactly one of `command`, `python`, `llm`, `simulated`, `approval`."""

    command: list[str] | str | None = Field(
        None, description="argv list; a string only with shell: true"
    )
    shell: bool = False
    cwd: str | None = Field(None, description="relative to the workflow file's folder")
    env: dict[str, str] = Field(default_factory=dict)
    python: str | None = Field(None, pattern=r"^[\w.]+:[\w.]+$", description="pkg.module:function")
    llm: LLMCall | None = None
    simulated: SimulatedCall | None = None
    approval: ApprovalCall | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RunSpec:
        given = [
            k
            for k in ("command", "python", "llm", "simulated", "approval")
            if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "run needs exactly one of command, python, llm, simulated or approval"
                + (f" (found {', '.join(given)})" if given else "")
            )
        if isinstance(self.command, str) and not self.shell:
            raise ValueError(
                "command is a string; write it as an argv list like [python, script.py], "
                "or add shell: true to run it through /bin/sh on purpose"
            )
        if isinstance(self.command, list) and not self.command:
            raise ValueError("command is an empty list; give at least the program name")
        return self

    @property
    def kind(self) -> RunKind:
        if self.command:
            return "command"
        if self.python:
            return "python"
        if self.llm:
            return "llm"
        if self.approval:
            return "approval"
        return "simulated"


class InputSpec(_FileModel):
    """A workflow input; without a default it is required unless marked `optional`."""

    type: Literal["string", "integer", "number", "boolean"] = "string"
    default: Any = None
    description: str | None = None
    choices: list[Any] | None = None
    optional: bool = Field(False, description="may be left out even without a default")

    @property
    def required(self) -> bool:
        return self.default is None and not self.optional


class MapSpec(_FileModel):
    """Run the step once per item of a list computed at run time (dynamic fan-out).

    Child `i` is recorded as step `ID[i]` with its own attempts, log and cache key; it gets
    the item as `params.item` (and `params.index`). The step's output is the list of the
    children's outputs, in item order (fan-in).
    """

    over: str = Field(description='expression giving a list, e.g. "${steps.plan.output.tasks}"')
    max_parallel: int = Field(8, ge=1, le=1024, description="children running at once")
    on_failure: Literal["fail_fast", "collect"] = Field(
        "fail_fast",
        description="fail_fast: stop the other children at the first failure; collect: run "
        "every child, then fail the step if any failed",
    )

    @field_validator("over")
    @classmethod
    def _over_is_safe(cls, value: str) -> str:
        from voltui.engine.conditions import check

        problems = check(value)
        if problems:
            raise ValueError("; ".join(p.replace("condition", "map.over", 1) for p in problems))
        return value


class Step(_FileModel):
    """One node of the DAG."""

    id: Ident
    name: str | None = None
    type: str = "execution"
    description: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    requires: list[str] = Field(default_factory=list, description="agent capabilities needed")
    agent: str | None = Field(None, description="run on this agent id only")
    run: RunSpec
    params: dict[str, Any] = Field(
        default_factory=dict, description="static values passed to the step with the inputs"
    )
    timeout: Duration | None = None
    retry: RetryPolicy | None = None
    cache: CacheSpec | None = None
    continue_on_failure: bool = False
    priority: Priority = Priority.NORMAL
    when: str | None = Field(
        None,
        description="condition; the step is skipped when it is false, e.g. "
        '"${inputs.deploy} and steps.review.output.score >= 8"',
    )

    map: MapSpec | None = Field(None, description="one child per item of a run-time list")

    @model_validator(mode="after")
    def _map_fits(self) -> Step:
        if self.map is not None and self.run.approval is not None:
            raise ValueError("an approval step cannot have map:; ask once, after the fan-out")
        return self

    @field_validator("when")
    @classmethod
    def _when_is_safe(cls, value: str | None) -> str | None:
        # Rejected when the file loads (with the loader's line and column), never at run time.
        if value is not None:
            from voltui.engine.conditions import check

            problems = check(value)
            if problems:
                raise ValueError("; ".join(problems))
        return value

    @property
    def title(self) -> str:
        return self.name or self.id


# --------------------------------------------------------------------------- automation (files)
# Schedules, file triggers, concurrency keys and secrets: what a server engine does on its own.
# The engine parts that act on them live in schedules.py, triggers.py, concurrency.py and
# secrets.py; here are only the file models and their checks, so `voltui validate` reports a bad
# cron expression or time zone at its line like any other mistake.

ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_TEMPLATE_RE = re.compile(r"\$\{([^}]*)\}")
_INPUT_REF_RE = re.compile(r"^inputs\.([A-Za-z0-9_][A-Za-z0-9_.\-]*)$")


class ScheduleSpec(_FileModel):
    """Start the workflow on a cron expression or every fixed interval.

    `overlap` says what happens when a run from this schedule is still active at the next fire;
    `catchup` what happens to fire times missed while no engine was running.
    """

    id: Ident | None = Field(None, description="name for `voltui schedules`; default: its number")
    cron: str | None = Field(None, description="five fields: minute hour day month weekday")
    every: Duration | None = Field(None, description="fixed interval, aligned to the epoch")
    timezone: str = Field("UTC", description="IANA zone the cron fields are read in")
    inputs: dict[str, Any] = Field(default_factory=dict)
    overlap: Literal["skip", "queue", "cancel_previous"] = "skip"
    catchup: Literal["none", "latest", "all"] = "latest"

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from datetime import UTC, datetime

        from cronsim import CronSim, CronSimError

        expr = " ".join(value.split())
        try:
            CronSim(expr, datetime.now(UTC))
        except CronSimError as exc:
            msg = (
                f"{value!r} is not a cron expression ({exc}); write five fields, "
                "minute hour day-of-month month day-of-week, like '*/15 * * * *'"
            )
            raise ValueError(msg) from None
        return expr

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            import difflib

            close = difflib.get_close_matches(value, zoneinfo.available_timezones(), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else " like Europe/Berlin or UTC"
            raise ValueError(f"unknown time zone {value!r}; use an IANA name{hint}") from None
        return value

    @field_validator("every")
    @classmethod
    def _every_positive(cls, value: float | None) -> float | None:
        if value is not None and value < 1:
            raise ValueError(f"every is {value!r} seconds; schedules fire at most once a second")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleSpec:
        if (self.cron is None) == (self.every is None):
            raise ValueError(
                "a schedule needs exactly one of cron (like '*/15 * * * *') or every (like 10m)"
            )
        return self

    def name(self, index: int) -> str:
        """The schedule's name within its workflow: its `id`, else its 1-based position."""
        return self.id or str(index + 1)

    @property
    def spec_text(self) -> str:
        """How the schedule reads in lists: `cron */15 * * * * (Europe/Berlin)`, `every 10m`."""
        if self.cron is not None:
            return f"cron {self.cron}" + (f" ({self.timezone})" if self.timezone != "UTC" else "")
        every = self.every or 0.0
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if every >= size and every % size == 0:
                return f"every {int(every // size)}{unit}"
        return f"every {every:g}s"


class TriggerSpec(_FileModel):
    """Start a run for each file that appears or changes under a glob pattern."""

    id: Ident | None = None
    files: str = Field(description="glob relative to the workflow file's folder, e.g. inbox/*.csv")
    debounce: Duration = Field(2.0, description="quiet time after a file's last change")
    input: str = Field("path", description="workflow input that receives the file's path")
    inputs: dict[str, Any] = Field(default_factory=dict, description="other inputs to pass")

    @field_validator("files")
    @classmethod
    def _pattern_usable(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("files is empty; give a glob like inbox/*.csv")
        return value

    def name(self, index: int) -> str:
        return self.id or str(index + 1)


class ConcurrencySpec(_FileModel):
    """At most `limit` active runs per value of `key` across the engine (any workflow)."""

    key: str = Field(description="text with ${inputs.NAME} placeholders, e.g. deploy-${inputs.env}")
    limit: int = Field(1, ge=1, le=10_000)
    policy: Literal["queue", "skip"] = Field(
        "queue", description="queue: wait for a free place; skip: end the run as cancelled"
    )

    @field_validator("key")
    @classmethod
    def _placeholders_known(cls, value: str) -> str:
        for ref in _TEMPLATE_RE.findall(value):
            if not _INPUT_REF_RE.match(ref.strip()):
                raise ValueError(
                    f"placeholder ${{{ref}}} is not supported; write ${{inputs.NAME}} "
                    "for a workflow input"
                )
        return value

    def input_names(self) -> list[str]:
        """Inputs the key refers to, in order."""
        names = []
        for ref in _TEMPLATE_RE.findall(self.key):
            match = _INPUT_REF_RE.match(ref.strip())
            if match:
                names.append(match.group(1))
        return names

    def render(self, inputs: dict[str, Any]) -> str:
        """The key for one run's inputs (a missing input renders as empty text)."""

        def value(match: re.Match[str]) -> str:
            ref = _INPUT_REF_RE.match(match.group(1).strip())
            got = inputs.get(ref.group(1)) if ref else None
            return "" if got is None else str(got)

        return _TEMPLATE_RE.sub(value, self.key)


class BudgetSpec(_FileModel):
    """The most a run may spend on LLM calls; a call that could exceed it is refused."""

    tokens: int | None = Field(None, ge=1, description="prompt + completion tokens")
    usd: float | None = Field(None, gt=0, description="cost from the config's price table")
    on_exceed: Literal["fail", "approve"] = Field(
        "fail",
        description="a call that could exceed it fails its step, or waits for a person to "
        "approve spending past the budget (that step's calls only)",
    )
    approve_timeout: Duration | None = Field(
        None, description="with on_exceed: approve, reject when nobody decides in time"
    )


class Workflow(_FileModel):
    """A workflow file. DAG checks (cycles, unknown deps) live in `validate_dag`."""

    model_config = ConfigDict(extra="forbid", title="voltui workflow", allow_inf_nan=False)

    id: Ident
    name: str | None = None
    description: str | None = None
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    timeout: Duration | None = None
    max_parallel: int = Field(4, ge=1, le=1024)
    retry: RetryPolicy | None = None
    budget: BudgetSpec | None = Field(None, description="LLM spending limit of each run")
    steps: list[Step] = Field(min_length=1)
    schedules: list[ScheduleSpec] = Field(default_factory=list)
    triggers: list[TriggerSpec] = Field(default_factory=list)
    concurrency: ConcurrencySpec | None = None
    secrets: list[Annotated[str, Field(pattern=ENV_NAME_PATTERN)]] = Field(
        default_factory=list,
        description="environment variables whose values are masked as *** in logs and events",
    )

    _source: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _automation_refs(self) -> Workflow:
        """Names that must agree across fields: trigger inputs, key placeholders, unique ids.

        Raised as a ValidationError with exact `loc`s so the loader points at the line.
        """
        from pydantic_core import InitErrorDetails, PydanticCustomError

        problems: list[InitErrorDetails] = []

        def problem(loc: tuple[str | int, ...], value: Any, text: str) -> None:
            problems.append(
                InitErrorDetails(
                    type=PydanticCustomError("value_error", text), loc=loc, input=value
                )
            )

        declared = ", ".join(self.inputs) or "none"
        for i, trig in enumerate(self.triggers):
            if trig.input not in self.inputs:
                problem(
                    ("triggers", i, "input"),
                    trig.input,
                    f"the trigger passes the file path as input `{trig.input}`, but the "
                    f"workflow declares no such input (declared: {declared}); add it under "
                    "`inputs:` or set `input:` to one of them",
                )
        if self.concurrency is not None:
            for name in self.concurrency.input_names():
                if name not in self.inputs:
                    problem(
                        ("concurrency", "key"),
                        self.concurrency.key,
                        f"the key refers to ${{inputs.{name}}}, but the workflow declares no "
                        f"input `{name}` (declared: {declared})",
                    )
        for field_name, items in (("schedules", self.schedules), ("triggers", self.triggers)):
            seen: set[str] = set()
            for i, item in enumerate(items):
                name = item.name(i)
                if name in seen:
                    problem(
                        (field_name, i, "id"),
                        name,
                        f"{field_name[:-1]} id {name!r} is used twice; give each its own id",
                    )
                seen.add(name)
        if problems:
            from pydantic import ValidationError

            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    @property
    def title(self) -> str:
        return self.name or self.id

    @property
    def source(self) -> str | None:
        """Path of the file this workflow was loaded from, if any."""
        return self._source

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)


class DagProblem(BaseModel):
    """A structural mistake in a workflow; `loc` points into the file like pydantic's."""

    loc: tuple[str | int, ...]
    message: str


def validate_dag(workflow: Workflow) -> list[DagProblem]:
    """Duplicate ids, unknown or self dependencies, cycles (named by their path), and `when:` /
    `map:` expressions that read steps not upstream of theirs."""
    problems = check_dag([s.id for s in workflow.steps], [s.depends_on for s in workflow.steps])
    if problems:
        return problems
    from voltui.engine.conditions import reference_problems

    for i, field_name, message in reference_problems(workflow):
        problems.append(DagProblem(loc=("steps", i, *field_name), message=message))
    return problems


CYCLE_SHOWN = 12
"""Steps of a long cycle named in its message; the rest are counted, not listed."""


def check_dag(
    ids: Sequence[str | None], depends_on: Sequence[Sequence[str | None]]
) -> list[DagProblem]:
    """Every structural problem of a step list, in time linear in steps plus edges.

    `ids[i]` and `depends_on[i]` describe step i; None stands for an id or a dependency that is
    not a string, which the schema reports, so that the loader can check the DAG of a file whose
    steps fail validation too and report both in one pass. A duplicated id counts with its
    first step. Cycles are found among the known, distinct steps even when other problems
    exist: in-degree peeling (Kahn) leaves exactly the steps on or behind a cycle, and a walk
    along their remaining dependencies names each cycle once. Messages never list the whole
    workflow, so their size does not grow with it.
    """
    problems: list[DagProblem] = []
    first: dict[str, int] = {}
    for i, step_id in enumerate(ids):
        if step_id is None:
            continue
        if step_id in first:
            problems.append(
                DagProblem(
                    loc=("steps", i, "id"),
                    message=f"step id {_shown(step_id)} is used twice "
                    f"(also step #{first[step_id] + 1})",
                )
            )
        else:
            first[step_id] = i

    # Edges between distinct known steps: edges[i] lists the steps that step i waits for.
    edges: list[list[int]] = [[] for _ in ids]
    for i, (step_id, deps) in enumerate(zip(ids, depends_on, strict=True)):
        for j, dep in enumerate(deps):
            if dep is None:
                continue
            if dep == step_id:
                problems.append(
                    DagProblem(
                        loc=("steps", i, "depends_on", j),
                        message=f"step {_shown(step_id)} depends on itself",
                    )
                )
            elif dep not in first:
                problems.append(
                    DagProblem(
                        loc=("steps", i, "depends_on", j),
                        message=f"step {_shown(step_id)} depends on unknown step {_shown(dep)}",
                    )
                )
            elif step_id is not None and first[step_id] == i:
                edges[i].append(first[dep])
    problems.extend(_cycles(ids, depends_on, edges, first))
    return problems


def _shown(step_id: str | None) -> str:
    """A step id as messages quote it: cut short, since a file may hold a 64 KB "id"."""
    if step_id is None:
        return "(without a valid id)"
    text = repr(step_id)
    return text if len(text) <= 60 else text[:56] + "...'"


def _cycles(
    ids: Sequence[str | None],
    depends_on: Sequence[Sequence[str | None]],
    edges: list[list[int]],
    first: dict[str, int],
) -> list[DagProblem]:
    waiting = [len(set(e)) for e in edges]
    dependents: list[list[int]] = [[] for _ in ids]
    for i, deps in enumerate(edges):
        for d in set(deps):
            dependents[d].append(i)
    ready = [i for i in first.values() if waiting[i] == 0]
    while ready:
        done = ready.pop()
        for i in dependents[done]:
            waiting[i] -= 1
            if waiting[i] == 0:
                ready.append(i)
    stuck = [i for i in first.values() if waiting[i] > 0]
    if not stuck:
        return []
    # Each stuck step waits for at least one other stuck step, so following those waits from
    # any stuck step must come back to a step already on the path: that loop is a cycle.
    blocked = set(stuck)
    visited: set[int] = set()
    problems: list[DagProblem] = []
    for start in stuck:
        path: list[int] = []
        on_path: dict[int, int] = {}
        node = start
        while node not in visited:
            visited.add(node)
            on_path[node] = len(path)
            path.append(node)
            node = next(d for d in edges[node] if d in blocked)
        if node not in on_path:
            continue  # led into a part explored before: its cycle is already reported
        loop = path[on_path[node] :]
        # `loop[k]` waits for `loop[k + 1]`; the message reads in run order (a -> b: b after a),
        # starting and ending at the step whose depends_on entry it points at.
        names = [_shown(ids[i])[1:-1] for i in (loop[0], *reversed(loop[1:]), loop[0])]
        if len(names) > CYCLE_SHOWN:
            hidden = len(names) - CYCLE_SHOWN
            names = [
                *names[: CYCLE_SHOWN // 2],
                f"... ({hidden:,} more)",
                *names[-CYCLE_SHOWN // 2 :],
            ]
        head, after = loop[0], ids[loop[1 % len(loop)]]
        j = next(k for k, dep in enumerate(depends_on[head]) if dep == after)
        problems.append(
            DagProblem(
                loc=("steps", head, "depends_on", j),
                message=f"dependency cycle: {' -> '.join(names)}",
            )
        )
    return problems


def dag_levels(workflow: Workflow) -> list[list[str]]:
    """Steps grouped by dependency depth, for layout and for ordered display."""
    import graphlib

    by_id = {s.id: s for s in workflow.steps}
    depth: dict[str, int] = {}
    # Topological order instead of recursion: a 1,000-step chain must not hit the stack limit.
    order = graphlib.TopologicalSorter({s.id: set(s.depends_on) for s in workflow.steps})
    for step_id in order.static_order():
        deps = by_id[step_id].depends_on
        depth[step_id] = 1 + max((depth[d] for d in deps), default=-1)
    out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for s in workflow.steps:
        out[depth[s.id]].append(s.id)
    return out


# --------------------------------------------------------------------------- agents


AgentKind = Literal["command", "python", "llm", "simulated", "dask"]


class RateLimitSpec(_FileModel):
    """Limits on calls through one agent or one provider, enforced as token buckets.

    A bucket holds `burst` requests (or `token_burst` tokens) and refills at the per-minute
    rate; a call that finds it empty waits, so calls are spread out rather than refused.
    """

    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    max_concurrent: int | None = Field(None, ge=1, description="calls in flight at once")
    burst: float | None = Field(
        None, ge=1, description="requests allowed at once; default one second's worth (>= 1)"
    )
    token_burst: float | None = Field(
        None, ge=1, description="tokens allowed at once; default one second's worth"
    )


class AgentSpec(_FileModel):
    """An agent as configured: what it can do and how much at once."""

    id: Ident
    kind: AgentKind
    capabilities: list[str] = Field(default_factory=list)
    capacity: int = Field(4, ge=1, le=10_000)
    weight: float = Field(1.0, gt=0)
    description: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    limits: RateLimitSpec | None = Field(None, description="rate limits of calls via this agent")


class AgentLoad(BaseModel):
    """Live figures of one agent, as the load balancer sees them."""

    id: str
    kind: str
    capabilities: list[str]
    active: int = 0
    capacity: int = 1
    completed: int = 0
    failed: int = 0
    mean_latency: float | None = None
    success_rate: float | None = None
    healthy: bool = True
    weight: float = 1.0


# --------------------------------------------------------------------------- usage


class Usage(BaseModel):
    """Tokens that LLM calls used and what they cost, as a structured fact (not log text).

    One value per call, summed per step (every attempt counts: each one was paid for), per
    run, per agent and per model with `plus`.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    model: str | None = Field(None, description="the model, or None for a mix of models")
    cost_usd: float = 0.0
    priced: bool = Field(
        True,
        description="False when some call's model has no entry in the price table, so "
        "cost_usd counts only the priced calls",
    )

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def plus(self, other: Usage) -> Usage:
        """The sum of two usages (a new value; both stay unchanged)."""
        if not other.calls:
            model = self.model
        elif not self.calls or self.model == other.model:
            model = other.model
        else:
            model = None
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            calls=self.calls + other.calls,
            model=model,
            cost_usd=self.cost_usd + other.cost_usd,
            priced=self.priced and other.priced,
        )


# --------------------------------------------------------------------------- runs


class RunState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"  # nothing at work: only a person's decision (an approval step) is due
    CANCELLING = "cancelling"  # cancel asked; waiting for work that cannot be interrupted
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self not in (
            RunState.QUEUED,
            RunState.RUNNING,
            RunState.WAITING,
            RunState.CANCELLING,
        )


class StepState(enum.StrEnum):
    PENDING = "pending"
    WAITING = "waiting"  # ready, waiting for a free capable agent
    RUNNING = "running"
    RETRYING = "retrying"  # failed an attempt, sleeping before the next
    SUCCEEDED = "succeeded"
    CACHED = "cached"  # succeeded from the cache without running
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (
            StepState.SUCCEEDED,
            StepState.CACHED,
            StepState.FAILED,
            StepState.SKIPPED,
            StepState.CANCELLED,
        )

    @property
    def ok(self) -> bool:
        return self in (StepState.SUCCEEDED, StepState.CACHED)


RunTrigger = Literal["manual", "schedule", "trigger", "replay"]
"""Why a run started: a person or script, a schedule, a file trigger, or a replay."""


class Run(BaseModel):
    """One execution of a workflow."""

    id: str
    workflow_id: str
    workflow_name: str
    state: RunState = RunState.QUEUED
    inputs: dict[str, Any] = Field(default_factory=dict)
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    steps_total: int = 0
    steps_done: int = Field(0, description="steps in a final state, whatever it is")
    steps_succeeded: int = Field(0, description="succeeded or served from the cache")
    steps_failed: int = 0
    steps_skipped: int = 0
    steps_cancelled: int = 0
    replay_of: str | None = None
    replay_mode: Literal["failed", "all"] | None = None
    workflow_path: str | None = None
    run_dir: str | None = Field(None, description="scratch folder for the run's artefacts")
    owner_pid: int | None = None
    trigger: RunTrigger = Field("manual", description="why the run started")
    trigger_ref: str | None = Field(
        None, description="which schedule (workflow:name) or trigger file started it"
    )
    usage: Usage | None = Field(None, description="LLM tokens and cost of all its steps")

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at
        if end is None:
            import time

            end = time.time()
        return max(0.0, end - self.started_at)


class StepRun(BaseModel):
    """The state of one step within one run (its latest attempt)."""

    run_id: str
    step_id: str
    state: StepState = StepState.PENDING
    attempt: int = 0
    max_attempts: int = 1
    agent_id: str | None = None
    queued_at: float | None = Field(
        None, description="when the latest attempt began waiting for an agent"
    )
    started_at: float | None = Field(None, description="when the latest attempt began running")
    finished_at: float | None = None
    output: Any = None
    error: str | None = None
    exit_code: int | None = None
    cached: bool = False
    reused_from: str | None = Field(None, description="run id whose stored output was reused")
    pid: int | None = Field(None, description="process group of a running command attempt")
    pid_started: float | None = Field(None, description="that process's start time (identity)")
    usage: Usage | None = Field(None, description="LLM tokens and cost of all its attempts")

    @property
    def duration(self) -> float | None:
        """The one definition every view uses: the latest attempt, start to end (queue wait
        apart). None until the attempt ends; a live view adds its own clock to `started_at`."""
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.started_at)

    @property
    def queue_wait(self) -> float | None:
        """Time the latest attempt waited for a free capable agent before it started."""
        if self.queued_at is None or self.started_at is None:
            return None
        return max(0.0, self.started_at - self.queued_at)


class LogLine(BaseModel):
    """One line of a step's stdout/stderr (or engine note), as stored."""

    run_id: str
    step_id: str
    attempt: int
    stream: Literal["stdout", "stderr", "engine"]
    ts: float
    line: str


class Approval(BaseModel):
    """A person's decision asked for by an approval step, as stored (one row per run and step).

    Any process sharing the store can write the decision; the run's owner acts on it.
    """

    run_id: str
    step_id: str
    prompt: str
    requested_at: float
    timeout_at: float | None = None
    on_timeout: Literal["reject", "approve"] = "reject"
    decision: Literal["approved", "rejected"] | None = None
    decided_at: float | None = None
    by: str | None = Field(None, description="who decided: a user name, or `timeout`")
    via: str | None = Field(None, description="where from: cli, dashboard, socket, timeout")
    comment: str | None = None

    @property
    def pending(self) -> bool:
        return self.decision is None

    def output(self) -> dict[str, Any]:
        """What the step returns, for dependents (`steps.ID.output.approved`)."""
        return {
            "approved": self.decision == "approved",
            "decision": self.decision,
            "by": self.by,
            "via": self.via,
            "comment": self.comment,
            "decided_at": self.decided_at,
        }


class RunDetail(BaseModel):
    """A run with its definition and every step's state, for drill-down and replay."""

    run: Run
    workflow: Workflow
    steps: list[StepRun]
    children: list[StepRun] = Field(
        default_factory=list,
        description="rows of the children of map steps (`ID[i]`), as stored; empty for a run "
        "without a map step (and from an engine older than this field)",
    )


# --------------------------------------------------------------------------- events


class Event(BaseModel):
    """Every state change in the engine is one of these, numbered by `seq`."""

    seq: int
    ts: float
    type: str
    source: str
    priority: Priority = Priority.NORMAL
    correlation_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    foreign: bool = Field(
        False,
        description="recorded by another engine process sharing the store and relayed here; "
        "its number there is data['origin_seq']",
    )


class EventQuery(BaseModel):
    """Filters for event history; all optional, combined with AND."""

    type: str | None = Field(None, description="fnmatch pattern like step:*")
    since: float | None = Field(None, description="timestamp, inclusive")
    since_seq: int | None = Field(None, description="only events with a larger seq")
    correlation_id: str | None = None
    limit: int | None = Field(None, ge=1)


class EventStats(BaseModel):
    total: int = 0
    by_type: dict[str, int] = Field(default_factory=dict)
    queue_size: int = 0
    subscribers: int = 0
    handler_errors: int = 0
    last_seq: int = 0


# --------------------------------------------------------------------------- health & cache


class HealthStatus(enum.StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class ComponentStatus(BaseModel):
    id: str
    name: str
    kind: str
    status: HealthStatus = HealthStatus.UNKNOWN
    last_check: float | None = None
    latency: float | None = None
    message: str = ""


class SystemMetrics(BaseModel):
    ts: float
    process_cpu_percent: float = 0.0
    process_rss_bytes: int = 0
    process_open_files: int = 0
    host_cpu_percent: float = 0.0
    host_memory_percent: float = 0.0
    load_avg: tuple[float, float, float] = (0.0, 0.0, 0.0)


class CacheStats(BaseModel):
    namespace: str
    strategy: str
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    size: int = 0
    max_size: int = Field(0, description="capacity in entries; 0 when limited by bytes")
    bytes: int = 0
    max_bytes: int | None = Field(None, description="capacity in bytes, when limited by bytes")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
