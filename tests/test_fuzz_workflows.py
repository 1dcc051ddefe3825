"""Property tests: whatever a workflow file holds, checking it ends in a verdict, not a crash.

Generated inputs: random YAML/JSON structures shaped like workflows (so they reach deep into
the schema and the DAG checks), random text, and mutations of the sample workflows (deleted,
repeated and swapped lines, inserted YAML syntax, anchors, tags, NaN, long numbers, control
characters). Each must either load or raise WorkflowFileError with at most twenty problems
and a bounded message; `voltui validate` on them exits 0 or 2, never a traceback. Whatever
loads must survive what the engine does next: a JSON round trip (the store) and the DAG
order (the scheduler and the DAG panel).

`VOLTUI_HYPOTHESIS=long` (the suite's switch, see conftest.py; `HYPOTHESIS_PROFILE=long` works
too) runs 5,000 examples per test (locally, minutes); by default 200 run, which keeps the suite
fast. These tests set their own counts because one loader check costs far less than the
server round trips of the other property tests.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voltui.engine.errors import WorkflowFileError
from voltui.engine.loader import MAX_SHOWN, load_workflow_text
from voltui.engine.models import Workflow, dag_levels, validate_dag

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "sample-workflows").glob("*.yaml"))
SAMPLE_TEXTS = [p.read_text(encoding="utf-8") for p in SAMPLES]

_PROFILES = {
    "ci": settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    ),
    "long": settings(
        max_examples=5000,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    ),
}
_CHOSEN = os.environ.get("VOLTUI_HYPOTHESIS") or os.environ.get("HYPOTHESIS_PROFILE") or "ci"
FUZZ = _PROFILES.get(_CHOSEN, _PROFILES["ci"])
"""Applied per test (not loaded globally), so other property tests keep their own settings."""

MAX_MESSAGE = 200 + MAX_SHOWN * 1200
"""A bound on a whole error message: the file name, twenty problems and the count line."""

FIELDS = [
    "id", "name", "description", "inputs", "timeout", "max_parallel", "retry", "steps",
    "type", "depends_on", "requires", "agent", "run", "params", "cache", "priority",
    "continue_on_failure", "command", "shell", "cwd", "env", "python", "llm", "simulated",
    "prompt", "duration", "jitter", "failure_rate", "output_lines", "max_attempts",
    "backoff", "base_delay", "max_delay", "retryable_errors", "ttl", "default", "choices",
    "optional", "<<",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["5s", "250ms", "1h30m", "soon", "-1", ".nan", "m:f", "a", "b", "a.b:c"]),
)
keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=8))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=6)),
    max_leaves=30,
)


@st.composite
def workflow_like(draw: st.DrawFn) -> dict[str, Any]:
    """A mapping shaped like a workflow, with random damage: most fields near-valid."""
    ids = draw(st.lists(st.sampled_from(["a", "b", "c", "d", "e", "x y", ""]), max_size=6))
    steps = []
    for step_id in ids:
        step: dict[str, Any] = {"id": step_id}
        kind = draw(st.sampled_from(["command", "python", "simulated", "llm", "junk"]))
        step["run"] = {
            "command": ["echo", step_id],
            "python": "pkg.mod:fn",
            "simulated": {"duration": draw(scalars)},
            "llm": {"prompt": draw(st.text(max_size=10))},
            "junk": draw(values),
        }[kind]
        step["depends_on"] = draw(st.lists(st.sampled_from([*ids, "zz", 3]), max_size=3))
        step.update(draw(st.dictionaries(keys, values, max_size=3)))
        steps.append(step)
    doc: dict[str, Any] = {"id": draw(st.sampled_from(["w", "bad id", 7])), "steps": steps}
    doc.update(draw(st.dictionaries(keys, values, max_size=3)))
    return doc


def dump(doc: Any, fmt: str, flow: bool) -> str:
    if fmt == "json":
        return json.dumps(doc, allow_nan=True, default=str)
    return yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=True, sort_keys=False)


TOKENS = [
    ":", ": ", "- ", "[", "]", "{", "}", ",", "'", '"', "#", "&a ", "*a", "<<: *a\n", "!!binary ",
    "!custom ", "\t", "\n", "---\n", ".nan", "-.inf", "9" * 5000, "2024-13-45", "\x00", "\x1b[2J",
    "\u202e", "\ufeff", "? ", "|\n", ">-\n", "%YAML 1.1\n", "@", "`", "0x", "1_0", "1:30",
    "depends_on: [", "steps:\n", "  - id: ", "\\ud800", "9" * 400, "!!bool ", "!!timestamp ",
    "!!int ", "!!float ", "!!str ", "!!null ", "!!map ", "!!seq ", "1e400", "1.0e+400",
]  # fmt: skip


@st.composite
def mutated_sample(draw: st.DrawFn) -> str:
    """A sample workflow with a few random edits: what a slip of the keyboard produces."""
    text = draw(st.sampled_from(SAMPLE_TEXTS))
    if draw(st.booleans()):
        with contextlib.suppress(yaml.YAMLError):
            text = json.dumps(yaml.safe_load(text), indent=draw(st.sampled_from([None, 2])))
    for _ in range(draw(st.integers(1, 4))):
        lines = text.split("\n")
        at = draw(st.integers(0, max(0, len(lines) - 1)))
        edit = draw(st.sampled_from(["delete", "repeat", "swap", "insert", "replace", "cut"]))
        if edit == "delete":
            del lines[at]
        elif edit == "repeat":
            lines.insert(at, lines[at])
        elif edit == "swap" and len(lines) > 1:
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        elif edit in ("insert", "replace"):
            line = lines[at]
            col = draw(st.integers(0, len(line)))
            token = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=4)))
            end = col + (draw(st.integers(0, 3)) if edit == "replace" else 0)
            lines[at] = line[:col] + token + line[end:]
        elif edit == "cut":
            lines = lines[:at]
        text = "\n".join(lines)
    return text


def check(text: str, fmt: str) -> None:
    """The property: a Workflow that survives the engine's next steps, or a bounded error."""
    try:
        workflow = load_workflow_text(text, f"fuzz.{fmt}", fmt=fmt)  # type: ignore[arg-type]
    except WorkflowFileError as exc:
        assert exc.problems, "an error without a problem"
        assert len(exc.problems) <= MAX_SHOWN
        assert exc.total == len(exc.problems) + exc.more
        assert len(str(exc)) <= MAX_MESSAGE, len(str(exc))
        return
    assert validate_dag(workflow) == []
    assert sum(len(level) for level in dag_levels(workflow)) == len(workflow.steps)
    stored = workflow.model_dump_json()  # what the run store keeps
    assert Workflow.model_validate_json(stored).id == workflow.id


@FUZZ
@given(doc=workflow_like(), fmt=st.sampled_from(["yaml", "json"]), flow=st.booleans())
def test_generated_workflows_load_or_fail_cleanly(
    doc: dict[str, Any], fmt: str, flow: bool
) -> None:
    check(dump(doc, fmt, flow), fmt)


@FUZZ
@given(doc=values, fmt=st.sampled_from(["yaml", "json"]), flow=st.booleans())
def test_arbitrary_structures_load_or_fail_cleanly(doc: Any, fmt: str, flow: bool) -> None:
    check(dump(doc, fmt, flow), fmt)


@FUZZ
@given(text=mutated_sample())
def test_mutated_samples_load_or_fail_cleanly(text: str) -> None:
    check(text, "json" if text.lstrip().startswith("{") else "yaml")
    check(text, "yaml")


@FUZZ
@given(text=st.text(max_size=300), fmt=st.sampled_from(["yaml", "json"]))
def test_random_text_loads_or_fails_cleanly(text: str, fmt: str) -> None:
    check(text, fmt)


@settings(FUZZ, max_examples=max(20, FUZZ.max_examples // 10))
@given(text=st.one_of(mutated_sample(), workflow_like().map(lambda d: dump(d, "yaml", False))))
def test_voltui_validate_exits_0_or_2(text: str) -> None:
    """The real command, in process: every outcome is an exit code, never an exception."""
    from voltui.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        config = Path(tmp) / "voltui.toml"  # empty: default limits, whatever the machine has
        config.write_text("")
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = main(["validate", "--config", str(config), str(path)])
    assert code in (0, 2), out.getvalue()
