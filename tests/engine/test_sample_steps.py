"""The sample workflows' step code, run the way the agents will run it, without the engine.

Each workflow file is loaded with the real models, and its steps are executed in dependency
order by a tiny stand-in for the agents: Python steps are imported and called with a real
StepContext, command steps run as subprocesses with the documented env/stdin contract. So these
tests prove both the step code and the wiring written in the YAML files.
"""

from __future__ import annotations

import asyncio
import graphlib
import hashlib
import importlib
import inspect
import json
import os
import signal
import subprocess
import sys
import tarfile
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from voltui.engine.agents.base import StepContext
from voltui.engine.models import Step, Workflow, validate_dag

SAMPLES = Path(__file__).resolve().parents[2] / "sample-workflows"
EXPECTED = {
    "agent_review",
    "code_review",
    "development_pipeline",
    "fan_out",
    "flaky",
    "long_running",
    "simulated_load",
}
DEFAULT_CAPABILITIES = {
    "command": {"shell", "build", "test", "review", "deploy"},
    "python": {"python", "analysis", "planning", "coding", "review"},
    "simulated": {"simulated"},
    "approval": set(),  # asks a person; no agent runs it
}


class StepFailed(Exception):
    """A step attempt failed; carries what the engine would record."""

    def __init__(self, step_id: str, message: str, returncode: int | None = None) -> None:
        super().__init__(f"{step_id}: {message}")
        self.returncode = returncode
        self.message = message


@pytest.fixture(autouse=True)
def _samples_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python steps import from the workflow folder, as the python agent arranges."""
    monkeypatch.syspath_prepend(str(SAMPLES))


def load(name: str) -> Workflow:
    return Workflow.model_validate(yaml.safe_load((SAMPLES / name).read_text()))


def defaults(workflow: Workflow, **overrides: Any) -> dict[str, Any]:
    inputs = {k: spec.default for k, spec in workflow.inputs.items()}
    inputs.update(overrides)
    return inputs


def ctx_quiet(stream: str, line: str) -> None:
    """Default output sink: drop the line."""


def context(
    workflow: Workflow,
    step_id: str,
    run_dir: Path,
    upstream: dict[str, Any],
    inputs: dict[str, Any],
    *,
    attempt: int = 1,
    settings: dict[str, Any] | None = None,
    lines: list[str] | None = None,
) -> StepContext:
    # Re-validate the step from its dict form, as a loader reading the file would.
    step = Step.model_validate(workflow.step(step_id).model_dump(exclude_unset=True))
    return StepContext(
        run_id="test-run",
        step=step,
        attempt=attempt,
        inputs=inputs,
        upstream={d: upstream[d] for d in step.depends_on},
        base_dir=SAMPLES,
        run_dir=run_dir,
        emit=(lambda _stream, line: lines.append(line)) if lines is not None else ctx_quiet,
        settings=settings or {},
    )


def run_command(ctx: StepContext, env_extra: dict[str, str] | None = None) -> tuple[Any, str]:
    """Run a command step per the contract; returns (output, stdout) or raises StepFailed."""
    argv = list(ctx.step.run.command or [])
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    env = {
        **os.environ,
        "VOLTUI_RUN_ID": ctx.run_id,
        "VOLTUI_STEP_ID": ctx.step.id,
        "VOLTUI_ATTEMPT": str(ctx.attempt),
        "VOLTUI_RUN_DIR": str(ctx.run_dir),
        "VOLTUI_WORKFLOW_DIR": str(ctx.base_dir),
        **{f"VOLTUI_INPUT_{k.upper()}": str(v) for k, v in ctx.inputs.items()},
        **{f"VOLTUI_PARAM_{k.upper()}": str(v) for k, v in ctx.params.items()},
        **ctx.step.run.env,
        **(env_extra or {}),
    }
    proc = subprocess.run(
        argv,
        input=json.dumps(ctx.payload()),
        cwd=ctx.base_dir / (ctx.step.run.cwd or "."),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise StepFailed(ctx.step.id, proc.stderr.strip(), proc.returncode)
    lines = proc.stdout.strip().splitlines()
    try:
        output = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        output = None
    return output, proc.stdout


def run_step(ctx: StepContext) -> Any:
    """Execute one step the way its agent kind would."""
    kind = ctx.step.run.kind
    assert set(ctx.step.requires) <= DEFAULT_CAPABILITIES[kind], (
        f"{ctx.step.id} requires {ctx.step.requires}, which no default {kind} agent has"
    )
    if kind == "command":
        return run_command(ctx)[0]
    assert kind == "python", f"{ctx.step.id}: unexpected kind {kind}"
    module_name, func_name = (ctx.step.run.python or "").split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        result = func(ctx)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
    except Exception as exc:
        raise StepFailed(ctx.step.id, f"{type(exc).__name__}: {exc}") from exc
    json.dumps(result)  # outputs must be JSON-able
    return result


def run_workflow(
    workflow: Workflow, run_dir: Path, inputs: dict[str, Any], stop_after: str | None = None
) -> dict[str, Any]:
    """Every step in dependency order; outputs by step id."""
    outputs: dict[str, Any] = {}
    order = graphlib.TopologicalSorter({s.id: s.depends_on for s in workflow.steps})
    for step_id in order.static_order():
        outputs[step_id] = run_step(context(workflow, step_id, run_dir, outputs, inputs))
        if step_id == stop_after:
            break
    return outputs


# --------------------------------------------------------------------------- all files


def test_every_sample_workflow_validates() -> None:
    files = sorted(SAMPLES.glob("*.yaml"))
    ids = set()
    for path in files:
        workflow = Workflow.model_validate(yaml.safe_load(path.read_text()))
        assert validate_dag(workflow) == [], path.name
        assert workflow.id == path.stem
        ids.add(workflow.id)
        for step in workflow.steps:
            caps = DEFAULT_CAPABILITIES[step.run.kind]
            assert set(step.requires) <= caps, f"{path.name}:{step.id} needs {step.requires}"
            assert (step.run.kind == "simulated") == (workflow.id == "simulated_load"), step.id
    assert ids >= EXPECTED


def test_samples_have_the_promised_shape() -> None:
    fan = load("fan_out.yaml")
    branches = [s for s in fan.steps if s.depends_on == ["split"]]
    assert len(branches) >= 8 and fan.max_parallel == 8
    assert set(fan.step("merge").depends_on) >= {b.id for b in branches}
    flaky = load("flaky.yaml").step("unstable_fetch")
    assert flaky.retry is not None and flaky.retry.max_attempts == 4
    assert flaky.retry.backoff == "exponential" and flaky.retry.base_delay == 0.5
    assert load("code_review.yaml").step("code_review").cache.ttl == 3600  # type: ignore[union-attr]
    sim = load("simulated_load.yaml")
    assert len(sim.steps) >= 18
    assert any(
        s.run.simulated and s.run.simulated.fail_attempts == 1 and s.retry for s in sim.steps
    )
    dev = load("development_pipeline.yaml")
    assert {s.run.kind for s in dev.steps} == {"python", "command"}
    assert all(s.timeout and s.name for s in dev.steps) and dev.retry is not None


# --------------------------------------------------------------------------- development pipeline


def test_development_pipeline_builds_a_tested_package(tmp_path: Path) -> None:
    workflow = load("development_pipeline.yaml")
    outputs = run_workflow(workflow, tmp_path, defaults(workflow))

    analysis = outputs["requirement_analysis"]
    assert analysis["criteria"] == [f"AC-{n}" for n in range(1, 7)]
    assert analysis["summary_source"] == "heuristic"
    assert outputs["task_generation"]["count"] == 13
    assert set(outputs["agent_assignment"]["by_agent"]) == {"python", "shell-1", "shell-2"}
    assert outputs["validation"]["criteria_proven"] == analysis["criteria"]
    assert outputs["validation"]["passed"] >= 12

    deployed = outputs["deployment"]
    package = Path(deployed["package"])
    assert package == tmp_path / "dist" / "textkit-0.1.0.tar.gz" and package.is_file()
    manifest = json.loads(Path(deployed["manifest"]).read_text())
    assert manifest["sha256"] == hashlib.sha256(package.read_bytes()).hexdigest()
    assert manifest["sha256"] == deployed["sha256"]

    # The shipped tarball stands alone: unpack it and run its tests with plain unittest.
    unpacked = tmp_path / "unpacked"
    with tarfile.open(package) as tar:
        names = tar.getnames()
        tar.extractall(unpacked, filter="data")
    assert "textkit-0.1.0/textkit/__init__.py" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    proc = subprocess.run(
        [sys.executable, "-m", "unittest", "discover", "-s", "tests", "-t", "."],
        cwd=unpacked / "textkit-0.1.0",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stderr


def test_validation_fails_on_a_broken_implementation_and_blocks_deployment(
    tmp_path: Path,
) -> None:
    workflow = load("development_pipeline.yaml")
    inputs = defaults(workflow, runner="unittest")
    outputs = run_workflow(workflow, tmp_path, inputs, stop_after="task_execution")
    module = tmp_path / "project" / "textkit" / "__init__.py"
    source = module.read_text()
    module.write_text(source.replace("return len(text.split())", "return len(text.split(' '))"))

    with pytest.raises(StepFailed) as failed:
        run_step(context(workflow, "validation", tmp_path, outputs, inputs))
    assert failed.value.returncode == 1
    assert "validation failed: tests failed" in failed.value.message
    report = json.loads((tmp_path / "validation" / "report.json").read_text())
    assert report["runner"] == "unittest" and not report["ok"]
    assert "AC-2" not in report["criteria_proven"] and "AC-1" in report["criteria_proven"]

    # Deployment reads the report, not just the upstream output, and refuses.
    fake_upstream = {"validation": {"report": str(tmp_path / "validation" / "report.json")}}
    with pytest.raises(StepFailed, match="refusing to deploy"):
        run_step(context(workflow, "deployment", tmp_path, fake_upstream, inputs))
    assert not (tmp_path / "dist").exists()


def test_analysis_uses_a_configured_llm_and_survives_its_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[dict[str, str]]] = []

    async def chat_completion(settings: dict[str, Any], messages: list[dict[str, str]], **kw: Any):
        calls.append(messages)
        if settings.get("fail"):
            raise ConnectionError("endpoint down")
        return {"text": "  textkit slugs,\n counts and wraps text. "}

    fake = types.ModuleType("voltui.engine.agents.llm")
    fake.chat_completion = chat_completion  # type: ignore[attr-defined]
    fake.llm_configured = lambda settings: bool(settings.get("llm_base_url"))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "voltui.engine.agents.llm", fake)
    workflow = load("development_pipeline.yaml")
    inputs = defaults(workflow)

    settings = {"llm_base_url": "http://127.0.0.1:9/v1"}
    ctx = context(workflow, "requirement_analysis", tmp_path, {}, inputs, settings=settings)
    out = run_step(ctx)
    assert out["summary_source"] == "llm"
    assert out["summary"] == "textkit slugs, counts and wraps text."
    assert "AC-6" in calls[0][-1]["content"]

    lines: list[str] = []
    ctx = context(
        workflow, "requirement_analysis", tmp_path, {}, inputs,
        settings={**settings, "fail": True}, lines=lines,
    )  # fmt: skip
    out = run_step(ctx)
    assert out["summary_source"] == "heuristic" and out["criteria"][0] == "AC-1"
    assert any("endpoint down" in line for line in lines)


def test_requirements_without_function_names_are_rejected(tmp_path: Path) -> None:
    from devpipe.core import PipelineError, parse_requirements

    bad = tmp_path / "requirements.md"
    bad.write_text("Name: demo\n\n## Acceptance criteria\n\n1. It should be fast.\n")
    with pytest.raises(PipelineError, match="does not name its function"):
        parse_requirements(bad)


# --------------------------------------------------------------------------- code review


def test_code_review_reports_findings_and_deploys(tmp_path: Path) -> None:
    workflow = load("code_review.yaml")
    outputs = run_workflow(workflow, tmp_path, defaults(workflow))
    review = outputs["code_review"]
    assert review["ok"] and review["file"] == "inventory.py"
    assert {"long-line", "todo", "missing-docstring", "bare-except"} <= set(review["counts"])
    # Run-independent output, so the engine's cache can serve it to the next run.
    assert str(tmp_path) not in json.dumps(outputs["code_generation"])
    deployed = Path(outputs["deployment"]["deployed"])
    assert deployed == tmp_path / "deploy" / "inventory.py"
    assert hashlib.sha256(deployed.read_bytes()).hexdigest() == review["sha256"]
    report = json.loads((tmp_path / "deploy" / "review_report.json").read_text())
    assert report["findings"] == review["findings"]


def test_code_review_fails_only_on_syntax_errors(tmp_path: Path) -> None:
    workflow = load("code_review.yaml")
    clean = defaults(workflow, with_issues=False)
    outputs = run_workflow(workflow, tmp_path / "clean", clean)
    assert outputs["code_review"]["findings"] == []

    broken = defaults(workflow, break_syntax=True)
    out = run_workflow(workflow, tmp_path / "broken", broken, stop_after="code_generation")
    with pytest.raises(StepFailed) as failed:
        run_step(context(workflow, "code_review", tmp_path / "broken", out, broken))
    assert failed.value.returncode == 1 and "was never closed" in failed.value.message


def test_code_review_deploy_refuses_code_that_was_not_reviewed(tmp_path: Path) -> None:
    workflow = load("code_review.yaml")
    inputs = defaults(workflow)
    outputs = run_workflow(workflow, tmp_path, inputs, stop_after="code_review")
    outputs["code_generation"] = {**outputs["code_generation"], "sha256": "0" * 64}
    with pytest.raises(StepFailed, match="refusing to deploy unreviewed code"):
        run_step(context(workflow, "deployment", tmp_path, outputs, inputs))


# --------------------------------------------------------------------------- fan out


def test_fan_out_shards_measure_every_file_once(tmp_path: Path) -> None:
    workflow = load("fan_out.yaml")
    outputs = run_workflow(workflow, tmp_path, defaults(workflow))
    shards = [outputs[f"shard_{i}"] for i in range(8)]
    assert all(isinstance(s, dict) and s["index"] == i for i, s in enumerate(shards))
    assert sum(1 for s in shards if s["files"]) >= 8  # enough files for every branch

    report = json.loads((tmp_path / "fan_out_report.json").read_text())
    assert report["totals"]["files"] == outputs["split"]["files"] == outputs["merge"]["files"]
    by_path = {f["path"]: f for f in report["files"]}
    readme = SAMPLES / "README.md"
    assert by_path["README.md"]["sha256"] == hashlib.sha256(readme.read_bytes()).hexdigest()
    assert by_path["README.md"]["lines"] == len(readme.read_text().splitlines())
    assert report["totals"]["lines"] == sum(f["lines"] for f in report["files"])


def test_fan_out_shard_script_prints_json(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one two\nthree\n")
    split = {"root": str(tmp_path), "patterns": ["*"], "files": 1, "shards": [[], ["a.txt"]]}
    proc = subprocess.run(
        [sys.executable, "-m", "fanout.shard"],
        input=json.dumps({"params": {"index": 1}, "upstream": {"split": split}}),
        cwd=SAMPLES,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["index"], out["files"], out["lines"], out["words"]) == (1, 1, 2, 3)


# --------------------------------------------------------------------------- flaky & long running


def test_flaky_step_fails_twice_then_succeeds(tmp_path: Path) -> None:
    workflow = load("flaky.yaml")
    for attempt in (1, 2):
        ctx = context(workflow, "unstable_fetch", tmp_path, {}, {}, attempt=attempt)
        with pytest.raises(StepFailed) as failed:
            run_command(ctx)
        assert f"transient failure on attempt {attempt}" in failed.value.message
    ctx = context(workflow, "unstable_fetch", tmp_path, {}, {}, attempt=3)
    fetched, _ = run_command(ctx)
    requirements = SAMPLES / "sample_project" / "requirements.md"
    assert fetched["attempt"] == 3
    assert fetched["sha256"] == hashlib.sha256(requirements.read_bytes()).hexdigest()
    after = run_step(context(workflow, "use_result", tmp_path, {"unstable_fetch": fetched}, {}))
    assert after == {"attempts_needed": 3, "sha256": fetched["sha256"]}


def test_long_running_progress_reports_and_stops_on_sigterm(tmp_path: Path) -> None:
    step = load("long_running.yaml").step("progress")
    argv = [sys.executable if a == "python" else a for a in step.run.command or []]
    env = {**os.environ, "VOLTUI_INPUT_SECONDS": "60", "VOLTUI_PARAM_INTERVAL": "0.2"}
    proc = subprocess.Popen(
        argv, cwd=SAMPLES, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("tick 1/300 (0%): 1229 primes below 10000")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143
    assert "cancelled at tick" in err
