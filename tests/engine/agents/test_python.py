"""PythonAgent: importing step modules from the workflow folder and calling them."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from voltui.engine.agents.base import StepContext
from voltui.engine.agents.python import PythonAgent
from voltui.engine.errors import StepError
from voltui.engine.models import AgentSpec, Step

AGENT = PythonAgent(AgentSpec(id="py", kind="python"))

STEPS = """
import asyncio, dataclasses, pathlib, threading
import pydantic
from voltui.engine.errors import StepError

def double(ctx):
    ctx.log("doubling")
    ctx.emit("stderr", "a warning")
    return {"doubled": ctx.inputs["n"] * 2, "in_thread": threading.current_thread().name}

async def gather(ctx):
    await asyncio.sleep(0)
    ctx.log("async hello")
    return {"params": ctx.params, "upstream": ctx.upstream}

def constant():
    return 42

async def async_constant():
    return "async-42"

def keyword_only(*, ctx=None):
    return ctx is None

class Holder:
    @staticmethod
    def nested(ctx):
        return ctx.step.id

def helper_that_fails(value):
    raise ValueError(f"bad value {value}")

def fails(ctx):
    helper_that_fails(ctx.inputs["n"])

def gives_up(ctx):
    raise StepError("quota exhausted for today", retryable=False)

def exits(ctx):
    raise SystemExit(3)

def not_json(ctx):
    return {"lock": threading.Lock()}

class Report(pydantic.BaseModel):
    score: float
    tags: list[str]

@dataclasses.dataclass
class Point:
    x: int

def model(ctx):
    return {"report": Report(score=0.5, tags=["a"]), "point": Point(3), "path": pathlib.Path("/x")}

FINISHED = threading.Event()

def until_cancelled(ctx):
    ctx.log("started")
    stopped = ctx.cancel_event.wait(30)
    ctx.log("too late")  # dropped: the step is already cancelled
    FINISHED.set()
    return stopped

NOT_CALLABLE = 5
"""


@pytest.fixture
def module(tmp_path: Path) -> str:
    """A uniquely named step module in the workflow folder (sys.modules keeps modules)."""
    name = f"steps_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(STEPS)
    return name


def make_ctx(
    tmp_path: Path, target: str, **extra: Any
) -> tuple[StepContext, list[tuple[str, str]]]:
    lines: list[tuple[str, str]] = []
    step = Step.model_validate(
        {"id": "py-step", "run": {"python": target}, "params": extra.pop("params", {})}
    )
    ctx = StepContext(
        run_id="r1",
        step=step,
        attempt=1,
        inputs=extra.pop("inputs", {"n": 21}),
        upstream=extra.pop("upstream", {}),
        base_dir=tmp_path,
        run_dir=tmp_path,
        emit=lambda stream, line: lines.append((stream, line)),
    )
    return ctx, lines


async def test_sync_function_gets_ctx_and_runs_in_a_thread(tmp_path: Path, module: str) -> None:
    path_before = list(sys.path)
    ctx, lines = make_ctx(tmp_path, f"{module}:double")
    out = await AGENT.execute(ctx)
    assert out["doubled"] == 42
    assert out["in_thread"].startswith("voltui-python-py")  # the agent's own threads
    assert lines == [("stdout", "doubling"), ("stderr", "a warning")]
    assert sys.path == path_before  # base_dir only on sys.path while importing
    assert module in sys.modules


async def test_async_function_is_awaited(tmp_path: Path, module: str) -> None:
    ctx, lines = make_ctx(tmp_path, f"{module}:gather", params={"k": "v"}, upstream={"a": {"x": 1}})
    assert await AGENT.execute(ctx) == {"params": {"k": "v"}, "upstream": {"a": {"x": 1}}}
    assert lines == [("stdout", "async hello")]


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        ("constant", 42),
        ("async_constant", "async-42"),
        ("keyword_only", True),
        ("Holder.nested", "py-step"),
    ],
)
async def test_functions_without_positional_params_and_dotted_paths(
    tmp_path: Path, module: str, attr: str, expected: Any
) -> None:
    ctx, _ = make_ctx(tmp_path, f"{module}:{attr}")
    assert await AGENT.execute(ctx) == expected


async def test_package_module_in_base_dir(tmp_path: Path) -> None:
    pkg = f"pkg_{uuid.uuid4().hex[:10]}"
    (tmp_path / pkg / "sub").mkdir(parents=True)
    (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / pkg / "sub" / "__init__.py").write_text("")
    (tmp_path / pkg / "sub" / "tasks.py").write_text("def run(ctx):\n    return ctx.run_id\n")
    ctx, _ = make_ctx(tmp_path, f"{pkg}.sub.tasks:run")
    assert await AGENT.execute(ctx) == "r1"


async def test_exception_becomes_step_error_with_traceback(tmp_path: Path, module: str) -> None:
    ctx, lines = make_ctx(tmp_path, f"{module}:fails")
    with pytest.raises(StepError) as info:
        await AGENT.execute(ctx)
    assert str(info.value) == "ValueError: bad value 21"
    assert info.value.retryable
    stderr = [line for stream, line in lines if stream == "stderr"]
    assert stderr[0] == "Traceback (most recent call last):"
    assert stderr[-1] == "ValueError: bad value 21"
    text = "\n".join(stderr)
    assert f"{module}.py" in text and "helper_that_fails" in text
    assert "voltui/engine/agents/python.py" not in text  # only the step's own frames
    assert "concurrent/futures" not in text


async def test_step_error_from_the_step_passes_through(tmp_path: Path, module: str) -> None:
    ctx, _ = make_ctx(tmp_path, f"{module}:gives_up")
    with pytest.raises(StepError, match=r"^quota exhausted for today$") as info:
        await AGENT.execute(ctx)
    assert not info.value.retryable


async def test_system_exit_does_not_escape(tmp_path: Path, module: str) -> None:
    ctx, _ = make_ctx(tmp_path, f"{module}:exits")
    with pytest.raises(StepError, match="SystemExit: 3") as info:
        await AGENT.execute(ctx)
    assert info.value.exit_code == 3


async def test_non_json_return_value(tmp_path: Path, module: str) -> None:
    ctx, _ = make_ctx(tmp_path, f"{module}:not_json")
    with pytest.raises(StepError, match="not JSON-able") as info:
        await AGENT.execute(ctx)
    assert not info.value.retryable
    assert f"{module}:not_json" in str(info.value)


async def test_models_dataclasses_and_paths_are_converted(tmp_path: Path, module: str) -> None:
    ctx, _ = make_ctx(tmp_path, f"{module}:model")
    assert await AGENT.execute(ctx) == {
        "report": {"score": 0.5, "tags": ["a"]},
        "point": {"x": 3},
        "path": "/x",
    }


async def test_missing_module_is_not_retryable(tmp_path: Path) -> None:
    ctx, _ = make_ctx(tmp_path, "no_such_module_voltui:run")
    with pytest.raises(StepError) as info:
        await AGENT.execute(ctx)
    assert not info.value.retryable
    assert "no_such_module_voltui" in str(info.value)
    assert str(tmp_path) in str(info.value)


async def test_module_with_syntax_error_is_not_retryable(tmp_path: Path) -> None:
    name = f"broken_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text("def oops(:\n")
    ctx, _ = make_ctx(tmp_path, f"{name}:oops")
    with pytest.raises(StepError, match="SyntaxError") as info:
        await AGENT.execute(ctx)
    assert not info.value.retryable


@pytest.mark.parametrize("attr", ["missing", "Holder.missing", "NOT_CALLABLE"])
async def test_bad_attribute_is_not_retryable(tmp_path: Path, module: str, attr: str) -> None:
    ctx, _ = make_ctx(tmp_path, f"{module}:{attr}")
    with pytest.raises(StepError) as info:
        await AGENT.execute(ctx)
    assert not info.value.retryable
    assert attr.split(".")[-1] in str(info.value) or "not a function" in str(info.value)


async def test_cancel_sets_cancel_event_for_sync_step(tmp_path: Path, module: str) -> None:
    ctx, lines = make_ctx(tmp_path, f"{module}:until_cancelled")
    started = asyncio.Event()
    sink = ctx.emit

    def emit(stream: str, line: str) -> None:
        sink(stream, line)  # type: ignore[arg-type]
        if line == "started":
            started.set()

    ctx.emit = emit  # type: ignore[assignment]
    agent = PythonAgent(AgentSpec(id="py2", kind="python", capacity=1))
    task = asyncio.create_task(agent.execute(ctx))
    await asyncio.wait_for(started.wait(), 20)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ctx.cancel_event.is_set()
    # The thread notices the event, tries to log, and ends; its line must be dropped.
    assert await asyncio.to_thread(sys.modules[module].FINISHED.wait, 20)
    await asyncio.sleep(0)  # let any line it handed to the loop arrive
    assert ("stdout", "too late") not in lines
    # The cancelled thread is done, so the agent can run the next sync step.
    ctx2, _ = make_ctx(tmp_path, f"{module}:double")
    assert (await agent.execute(ctx2))["doubled"] == 42
    await agent.close()
