"""The development pipeline's steps, callable as voltui Python steps (`devpipe.steps:NAME`).

Every step takes one context object (voltui's StepContext, or `devpipe.cli`'s stand-in when run
as a command step) and returns a JSON-able output. Outputs name artefacts by absolute path so a
dependent step — or a replay that reuses this output — can find them; when an upstream output is
missing the step falls back to the fixed layout under the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from devpipe import core


class Context(Protocol):
    """The part of voltui's StepContext these steps use."""

    run_id: str
    attempt: int
    inputs: dict[str, Any]
    upstream: dict[str, Any]
    base_dir: Path
    run_dir: Path
    settings: dict[str, Any]

    @property
    def params(self) -> dict[str, Any]: ...

    def log(self, line: str) -> None: ...


def _artefact(ctx: Context, dep: str, key: str, default: str) -> Path:
    """Where an earlier step left a file: its output says so, else the fixed layout."""
    named = (ctx.upstream.get(dep) or {}).get(key)
    path = Path(named) if named else Path(default)
    return path if path.is_absolute() else ctx.run_dir / path


def _option(ctx: Context, name: str, default: Any) -> Any:
    """Params override inputs, so one workflow file can pin what another leaves to the user."""
    if name in ctx.params:
        return ctx.params[name]
    value = ctx.inputs.get(name)
    return default if value in (None, "") else value


async def requirement_analysis(ctx: Context) -> dict[str, Any]:
    """Parse the requirements into acceptance criteria; summarise with an LLM when configured."""
    source = Path(str(_option(ctx, "requirements", "sample_project/requirements.md")))
    if not source.is_absolute():
        source = ctx.base_dir / source
    name = _option(ctx, "project_name", None)
    spec = core.parse_requirements(source, name)
    for crit in spec["criteria"]:
        ctx.log(f"{crit['id']}: {crit['signature']}")

    spec["summary_text"], spec["summary_source"] = core.heuristic_summary(spec), "heuristic"
    if _option(ctx, "llm_summary", True) and ctx.settings.get("llm_base_url"):
        spec["summary_text"], spec["summary_source"] = await _llm_summary(ctx, spec)
    ctx.log(f"summary ({spec['summary_source']}): {spec['summary_text']}")

    path = core.write_json(ctx.run_dir / core.SPEC_FILE, spec)
    return {
        "spec": str(path),
        "name": spec["name"],
        "version": spec["version"],
        "criteria": [c["id"] for c in spec["criteria"]],
        "functions": [c["function"] for c in spec["criteria"]],
        "summary": spec["summary_text"],
        "summary_source": spec["summary_source"],
    }


async def _llm_summary(ctx: Context, spec: dict[str, Any]) -> tuple[str, str]:
    """Ask the configured model for a two-sentence summary; any failure keeps the heuristic."""
    fallback = (spec["summary_text"], "heuristic")
    try:
        from voltui.engine.agents.llm import chat_completion, llm_configured
    except ImportError as exc:
        ctx.log(f"LLM support unavailable ({exc}); using the heuristic summary")
        return fallback
    if not llm_configured(ctx.settings):
        return fallback
    criteria = "\n".join(f"{c['id']}: {c['text']}" for c in spec["criteria"])
    messages = [
        {"role": "system", "content": "You summarise software requirements for engineers."},
        {
            "role": "user",
            "content": f"Summarise in at most two sentences what {spec['name']} "
            f"{spec['version']} must do:\n{criteria}",
        },
    ]
    try:
        reply = await chat_completion(ctx.settings, messages, max_tokens=160, temperature=0.1)
    except Exception as exc:  # the pipeline must not depend on a remote model being up
        ctx.log(f"LLM summary failed ({type(exc).__name__}: {exc}); using the heuristic summary")
        return fallback
    text = " ".join(str(reply.get("text", "")).split())
    return (text, "llm") if text else fallback


def task_generation(ctx: Context) -> dict[str, Any]:
    """Split the criteria into a scaffold task plus implement and test tasks per criterion."""
    spec = core.read_json(
        _artefact(ctx, "requirement_analysis", "spec", core.SPEC_FILE), "requirements spec"
    )
    tasks = core.make_tasks(spec)
    for task in tasks:
        ctx.log(f"{task['id']} needs {task['capability']}: {task['title']}")
    path = core.write_json(ctx.run_dir / core.TASKS_FILE, {"spec": spec, "tasks": tasks})
    by_capability: dict[str, int] = {}
    for task in tasks:
        by_capability[task["capability"]] = by_capability.get(task["capability"], 0) + 1
    return {"tasks": str(path), "count": len(tasks), "by_capability": by_capability}


def agent_assignment(ctx: Context) -> dict[str, Any]:
    """Plan each task onto the least-loaded capable agent (params.agents overrides the pool)."""
    plan = core.read_json(_artefact(ctx, "task_generation", "tasks", core.TASKS_FILE), "tasks")
    agents = ctx.params.get("agents") or core.DEFAULT_AGENTS
    assignments = core.assign_tasks(plan["tasks"], agents)
    by_agent: dict[str, list[str]] = {}
    for item in assignments:
        by_agent.setdefault(item["agent"], []).append(item["id"])
    for agent, ids in sorted(by_agent.items()):
        ctx.log(f"{agent}: {', '.join(ids)}")
    path = core.write_json(
        ctx.run_dir / core.ASSIGNMENTS_FILE, {"spec": plan["spec"], "assignments": assignments}
    )
    return {"assignments": str(path), "by_agent": {a: len(i) for a, i in by_agent.items()}}


def task_execution(ctx: Context) -> dict[str, Any]:
    """Generate the library and its unittest tests from templates into run_dir/project."""
    plan = core.read_json(
        _artefact(ctx, "agent_assignment", "assignments", core.ASSIGNMENTS_FILE), "assignments"
    )
    project = ctx.run_dir / core.PROJECT_DIR
    result = core.execute_tasks(plan["spec"], plan["assignments"], project, ctx.run_id, ctx.log)
    record = {"spec": plan["spec"], "project": str(project), **result}
    core.write_json(ctx.run_dir / core.EXECUTION_FILE, record)
    for name in result["files"]:
        ctx.log(f"wrote {core.PROJECT_DIR}/{name}")
    return {
        "project": str(project),
        "execution": str(ctx.run_dir / core.EXECUTION_FILE),
        "files": result["files"],
        "tasks_done": len(result["tasks"]),
    }


def validation(ctx: Context) -> dict[str, Any]:
    """Run the generated tests; fail unless all pass and every criterion has a passing test."""
    record = core.read_json(
        _artefact(ctx, "task_execution", "execution", core.EXECUTION_FILE), "execution record"
    )
    project = Path(record["project"])
    runner = str(_option(ctx, "runner", "auto"))
    report = core.run_tests(project, record["spec"]["criteria"], runner)
    report["project"] = str(project)
    path = core.write_json(ctx.run_dir / core.VALIDATION_FILE, report)
    for line in report["output_tail"]:
        ctx.log(line)
    if not report["ok"]:
        why = (
            f"tests failed (exit {report['returncode']})"
            if report["returncode"]
            else f"criteria without a passing test: {', '.join(report['criteria_missing'])}"
        )
        raise core.PipelineError(f"validation failed: {why}; report in {path}")
    return {
        "report": str(path),
        "execution": record.get("execution") or str(ctx.run_dir / core.EXECUTION_FILE),
        "runner": report["runner"],
        "passed": report["passed"],
        "criteria_proven": report["criteria_proven"],
    }


def deployment(ctx: Context) -> dict[str, Any]:
    """Package the validated project as dist/<name>-<version>.tar.gz with a sha256 manifest."""
    report = core.read_json(
        _artefact(ctx, "validation", "report", core.VALIDATION_FILE), "validation report"
    )
    if not report.get("ok"):
        raise core.PipelineError("refusing to deploy: the validation report is not ok")
    record = core.read_json(
        _artefact(ctx, "validation", "execution", core.EXECUTION_FILE), "execution record"
    )
    spec = record["spec"]
    result = core.package_project(
        Path(report["project"]),
        ctx.run_dir / core.DIST_DIR,
        spec["name"],
        spec["version"],
        {
            "run_id": ctx.run_id,
            "criteria": [c["id"] for c in spec["criteria"]],
            "tests": {"runner": report["runner"], "passed": report["passed"]},
        },
    )
    ctx.log(f"packaged {result['package']} ({result['size']} bytes, sha256 {result['sha256']})")
    return result
