"""The development pipeline's real work, as plain functions over paths and dicts.

Nothing here knows about voltui: each function takes explicit paths and returns JSON-able data,
so the same code serves Python steps, command steps and tests. Artefacts live at fixed places
under the run folder (see the constants) and every step's output names the files it wrote, so a
later step — or a person looking at the run folder — can follow the trail.
"""

from __future__ import annotations

import graphlib
import gzip
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path
from string import Template
from typing import Any

SPEC_FILE = "analysis/requirements.json"
TASKS_FILE = "plan/tasks.json"
ASSIGNMENTS_FILE = "plan/assignments.json"
EXECUTION_FILE = "plan/execution.json"
PROJECT_DIR = "project"
VALIDATION_FILE = "validation/report.json"
DIST_DIR = "dist"

DEFAULT_AGENTS: dict[str, list[str]] = {
    "python": ["python", "analysis", "planning", "coding", "review"],
    "shell-1": ["shell", "build", "test", "review", "deploy"],
    "shell-2": ["shell", "build", "test", "review", "deploy"],
}
"""The embedded engine's default agents; the assignment step plans work onto these."""

_FUNCTION_REF = re.compile(r"`([A-Za-z_]\w*)\(([^`]*)\)`")
_ITEM = re.compile(r"^(\d+)\.\s+(.*)$")
_FIELD = re.compile(r"^(Name|Version):\s*(\S+)\s*$", re.MULTILINE)
_IDENT = re.compile(r"^[A-Za-z_]\w*$")


class PipelineError(Exception):
    """A step cannot do its job; the message is meant for the person reading the run log."""


# --------------------------------------------------------------------------- helpers


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, data: Any) -> Path:
    """Write atomically so a retried or cancelled step never leaves half a file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise PipelineError(f"{what} not found at {path}; did the earlier step run in this run?")
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- analysis


def _section(text: str, title: str) -> list[str]:
    """Lines of a `## title` section, up to the next heading of the same or higher level."""
    lines = text.splitlines()
    out: list[str] = []
    inside = False
    for line in lines:
        if line.startswith("#"):
            if inside:
                break
            inside = line.lstrip("#").strip().lower() == title.lower()
            continue
        if inside:
            out.append(line)
    return out


def parse_requirements(path: Path, project_name: str | None = None) -> dict[str, Any]:
    """Read a requirements file into name, version, summary and numbered acceptance criteria.

    Each criterion must name the function it specifies as `` `name(args)` `` so the code
    generator can find a template for it; a criterion without one is an error, not a silent gap.
    """
    if not path.is_file():
        raise PipelineError(f"requirements file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    fields = {k.lower(): v for k, v in _FIELD.findall(text)}
    name = project_name or fields.get("name")
    if not name or not _IDENT.match(name):
        raise PipelineError(
            f"project name {name!r} is not a Python identifier; set `Name:` in {path.name} "
            "or the project_name input"
        )
    version = fields.get("version", "0.0.0")
    summary = " ".join(line.strip() for line in _section(text, "Summary") if line.strip())
    summary = summary.split(". ")[0].rstrip(".") + "." if summary else f"The {name} library."

    items: list[list[str]] = []
    for line in _section(text, "Acceptance criteria"):
        match = _ITEM.match(line.strip()) if not line.startswith((" ", "\t")) else None
        if match:
            items.append([match.group(1), match.group(2).strip()])
        elif items and line.strip():
            items[-1][1] += " " + line.strip()
    if not items:
        raise PipelineError(f"{path.name} has no numbered items under '## Acceptance criteria'")

    criteria: list[dict[str, Any]] = []
    for number, body in items:
        ref = _FUNCTION_REF.search(body)
        if not ref:
            raise PipelineError(
                f"criterion {number} does not name its function as `name(args)`: {body[:80]!r}"
            )
        criteria.append(
            {
                "id": f"AC-{number}",
                "number": int(number),
                "function": ref.group(1),
                "signature": f"{ref.group(1)}({ref.group(2)})",
                "text": body,
            }
        )
    functions = [c["function"] for c in criteria]
    duplicates = sorted({f for f in functions if functions.count(f) > 1})
    if duplicates:
        raise PipelineError(f"functions specified by more than one criterion: {duplicates}")
    return {
        "name": name,
        "version": version,
        "summary": summary,
        "source": str(path),
        "templates": str(path.parent / "templates"),
        "criteria": criteria,
    }


def heuristic_summary(spec: dict[str, Any]) -> str:
    """The summary used when no LLM is configured: short, deterministic, and still informative."""
    names = ", ".join(c["function"] for c in spec["criteria"])
    count = len(spec["criteria"])
    return f"{spec['name']} {spec['version']}: {count} acceptance criteria covering {names}."


# --------------------------------------------------------------------------- planning


def make_tasks(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """One scaffold task, then per criterion an implementation task and a test task after it."""
    tasks: list[dict[str, Any]] = [
        {
            "id": "T00",
            "kind": "scaffold",
            "capability": "coding",
            "title": f"scaffold package {spec['name']} {spec['version']}",
            "criterion": None,
            "function": None,
            "depends_on": [],
        }
    ]
    for crit in spec["criteria"]:
        n = crit["number"]
        impl_id, test_id = f"T{n:02d}a", f"T{n:02d}b"
        tasks.append(
            {
                "id": impl_id,
                "kind": "implement",
                "capability": "coding",
                "title": f"implement {crit['signature']} ({crit['id']})",
                "criterion": crit["id"],
                "function": crit["function"],
                "depends_on": ["T00"],
            }
        )
        tasks.append(
            {
                "id": test_id,
                "kind": "test",
                "capability": "test",
                "title": f"write acceptance tests for {crit['function']} ({crit['id']})",
                "criterion": crit["id"],
                "function": crit["function"],
                "depends_on": [impl_id],
            }
        )
    return tasks


def assign_tasks(tasks: list[dict[str, Any]], agents: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Give each task to the least-loaded agent that has its capability (ties by agent id).

    This mirrors what the engine's load balancer does for steps, one level down: it plans which
    worker would own each piece of the generated project, and fails loudly when no agent can.
    """
    load = dict.fromkeys(sorted(agents), 0)
    out: list[dict[str, Any]] = []
    for task in tasks:
        capable = [a for a in sorted(agents) if task["capability"] in agents[a]]
        if not capable:
            raise PipelineError(
                f"no agent has capability {task['capability']!r} needed by task {task['id']} "
                f"(agents: {', '.join(f'{a}={caps}' for a, caps in sorted(agents.items()))})"
            )
        agent = min(capable, key=lambda a: (load[a], a))
        load[agent] += 1
        out.append({**task, "agent": agent})
    return out


# --------------------------------------------------------------------------- execution


def _template(templates: Path, relative: str) -> Template:
    path = templates / relative
    if not path.is_file():
        raise PipelineError(f"template {relative} not found in {templates}")
    return Template(path.read_text(encoding="utf-8"))


def execute_tasks(
    spec: dict[str, Any],
    assignments: list[dict[str, Any]],
    project: Path,
    run_id: str,
    log: Any = print,
) -> dict[str, Any]:
    """Run the planned tasks in dependency order and write the project they produce.

    The project folder is rebuilt from scratch so a retried attempt gives the same result.
    """
    templates = Path(spec["templates"])
    name, version = spec["name"], spec["version"]
    by_id = {t["id"]: t for t in assignments}
    order = list(
        graphlib.TopologicalSorter({t["id"]: t["depends_on"] for t in assignments}).static_order()
    )
    criteria = {c["id"]: c for c in spec["criteria"]}

    if project.exists():
        shutil.rmtree(project)
    (project / name).mkdir(parents=True)
    (project / "tests").mkdir()

    functions: list[str] = []
    tests: list[str] = []
    done: list[dict[str, Any]] = []
    for task_id in order:
        task = by_id[task_id]
        log(f"{task_id} [{task['agent']}] {task['title']}")
        if task["kind"] == "scaffold":
            values = {
                "name": name,
                "version": version,
                "summary": spec["summary"].replace('"', "'"),
                "run_id": run_id,
                "criteria": "\n".join(f"{c['number']}. {c['text']}" for c in spec["criteria"]),
            }
            for tmpl, dest in (
                ("pyproject.toml.tmpl", "pyproject.toml"),
                ("README.md.tmpl", "README.md"),
            ):
                (project / dest).write_text(
                    _template(templates, tmpl).substitute(values), encoding="utf-8"
                )
        elif task["kind"] == "implement":
            crit = criteria[task["criterion"]]
            body = templates / "functions" / f"{crit['function']}.py.tmpl"
            if not body.is_file():
                raise PipelineError(
                    f"no implementation template for {crit['function']} ({crit['id']}); add {body}"
                )
            functions.append(f"# {crit['id']}: {crit['signature']}\n" + body.read_text("utf-8"))
        elif task["kind"] == "test":
            crit = criteria[task["criterion"]]
            snippet = _template(templates, f"tests/{crit['function']}.py.tmpl")
            ac = f"ac{crit['number']}"
            tests.append(snippet.substitute(ac=ac))
        else:
            raise PipelineError(f"task {task_id} has unknown kind {task['kind']!r}")
        done.append({"id": task_id, "agent": task["agent"], "kind": task["kind"]})

    exports = [c["function"] for c in spec["criteria"]]
    module = _template(templates, "module.py.tmpl").substitute(
        name=name,
        version=version,
        summary=textwrap.fill(spec["summary"], 96),
        requirements=Path(spec["source"]).name,
        exports=json.dumps(sorted(exports)),
        functions="\n\n".join(f.rstrip() + "\n" for f in functions).rstrip(),
    )
    test_module = _template(templates, "tests.py.tmpl").substitute(
        name=name,
        version=version,
        imports=", ".join(sorted(exports)),
        tests="\n\n".join(t.rstrip() + "\n" for t in tests).rstrip() + "\n",
    )
    files = {
        project / name / "__init__.py": module,
        project / "tests" / f"test_{name}.py": test_module,
        project / "tests" / "__init__.py": "",
    }
    for path, source in files.items():
        try:
            compile(source, str(path), "exec")
        except SyntaxError as exc:
            raise PipelineError(f"generated {path.name} does not compile: {exc}") from exc
        path.write_text(source, encoding="utf-8")
    written = sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file())
    return {"files": written, "tasks": done}


# --------------------------------------------------------------------------- validation

_PYTEST_PASSED = re.compile(r"^PASSED \S*::(test_\w+)", re.MULTILINE)
_UNITTEST_OK = re.compile(r"^(test_\w+) \([^)]*\)(?:\n(?!test_).*)? \.\.\. ok$", re.MULTILINE)
_AC_IN_TEST = re.compile(r"^test_ac(\d+)_")


def choose_runner(requested: str = "auto") -> str:
    if requested not in ("auto", "pytest", "unittest"):
        raise PipelineError(f"runner must be auto, pytest or unittest, not {requested!r}")
    if requested == "auto":
        return "pytest" if importlib.util.find_spec("pytest") else "unittest"
    return requested


def run_tests(
    project: Path, criteria: list[dict[str, Any]], runner: str = "auto", timeout: float = 120
) -> dict[str, Any]:
    """Run the generated tests in a child interpreter and check every criterion was proven.

    Passing tests are matched to criteria by their `test_acN_` names, so a project whose tests
    pass but leave a criterion untested still fails validation.
    """
    if not (project / "tests").is_dir():
        raise PipelineError(f"no tests folder in {project}; did task_execution run?")
    runner = choose_runner(runner)
    if runner == "pytest":
        argv = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rA",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(project),
            "tests",
        ]
    else:
        argv = [sys.executable, "-m", "unittest", "discover", "-v", "-s", "tests", "-t", "."]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        argv, cwd=project, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = proc.stdout + proc.stderr
    pattern = _PYTEST_PASSED if runner == "pytest" else _UNITTEST_OK
    passed = sorted(set(pattern.findall(output)))
    proven = sorted({int(m.group(1)) for t in passed if (m := _AC_IN_TEST.match(t))})
    missing = [c["id"] for c in criteria if c["number"] not in proven]
    return {
        "runner": runner,
        "command": argv[1:],
        "returncode": proc.returncode,
        "passed": len(passed),
        "passed_tests": passed,
        "criteria_proven": [f"AC-{n}" for n in proven],
        "criteria_missing": missing,
        "ok": proc.returncode == 0 and not missing,
        "output_tail": output.splitlines()[-40:],
    }


# --------------------------------------------------------------------------- packaging


def _clean(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Reproducible archives: no caches, fixed owner and time, so equal trees hash equal."""
    parts = Path(info.name).parts
    if "__pycache__" in parts or ".pytest_cache" in parts or info.name.endswith(".pyc"):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def package_project(
    project: Path, dist: Path, name: str, version: str, extra: dict[str, Any]
) -> dict[str, Any]:
    """Write `<name>-<version>.tar.gz` and `manifest.json` (with sha256) into `dist`."""
    if not project.is_dir():
        raise PipelineError(f"project folder {project} is missing; nothing to package")
    dist.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{version}"
    target = dist / f"{stem}.tar.gz"
    files = sorted(
        p
        for p in project.rglob("*")
        if p.is_file() and _clean(tarfile.TarInfo(str(p.relative_to(project))))
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            tar.add(path, arcname=f"{stem}/{path.relative_to(project)}", filter=_clean)
    with (
        target.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
    ):
        gz.write(buffer.getvalue())
    digest = sha256_file(target)
    manifest = {
        "name": name,
        "version": version,
        "package": str(target),
        "filename": target.name,
        "sha256": digest,
        "size": target.stat().st_size,
        "files": [{"path": str(p.relative_to(project)), "sha256": sha256_file(p)} for p in files],
        **extra,
    }
    manifest_path = write_json(dist / "manifest.json", manifest)
    return {
        "package": str(target),
        "manifest": str(manifest_path),
        "sha256": digest,
        "size": manifest["size"],
        "files": len(files),
    }
