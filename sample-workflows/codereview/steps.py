"""Python steps of the `code_review` sample: generate a module, deploy it with its review.

The generation output holds a run-independent relative path, the content hash and the source
itself, so it is identical for identical inputs: that is what lets the engine's step cache serve
the review of unchanged code, and what lets deployment check the review matches the code.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from string import Template
from typing import Any, Protocol

TEMPLATES = Path(__file__).resolve().parent / "templates"


class Context(Protocol):
    """The part of voltui's StepContext these steps use."""

    run_id: str
    inputs: dict[str, Any]
    upstream: dict[str, Any]
    run_dir: Path

    @property
    def params(self) -> dict[str, Any]: ...

    def log(self, line: str) -> None: ...


class ReviewError(Exception):
    """The code and its review do not fit together; deploying would ship unreviewed code."""


def _flag(value: Any) -> bool:
    """Booleans arrive as bools from the engine but as strings from environment variables."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def generate_module(ctx: Context) -> dict[str, Any]:
    """Write generated/<module_name>.py from the template (plus demo issues if asked)."""
    name = str(ctx.inputs.get("module_name") or "inventory")
    if not re.fullmatch(r"[A-Za-z_]\w*", name):
        raise ValueError(f"module_name {name!r} is not a Python identifier")
    source = Template((TEMPLATES / "module.py.tmpl").read_text("utf-8")).substitute(name=name)
    if _flag(ctx.inputs.get("with_issues", True)):
        source += (TEMPLATES / "issues.py.tmpl").read_text("utf-8")
    if _flag(ctx.inputs.get("break_syntax", False)):
        source += (TEMPLATES / "broken.py.tmpl").read_text("utf-8")
    relative = f"generated/{name}.py"
    target = ctx.run_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(source, encoding="utf-8")
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    ctx.log(f"wrote {relative} ({source.count(chr(10))} lines, sha256 {digest[:12]})")
    return {
        "path": relative,
        "module": name,
        "sha256": digest,
        "lines": source.count("\n"),
        "source": source,
    }


def deploy(ctx: Context) -> dict[str, Any]:
    """Copy the reviewed module and its review report into run_dir/deploy."""
    generated = ctx.upstream["code_generation"]
    review = ctx.upstream["code_review"]
    if review.get("sha256") != generated["sha256"]:
        raise ReviewError(
            f"the review is of sha256 {str(review.get('sha256'))[:12]}, the code is "
            f"{generated['sha256'][:12]}: refusing to deploy unreviewed code"
        )
    if not review.get("ok"):
        raise ReviewError(f"the review failed: {review.get('syntax_error')}")
    deploy_dir = ctx.run_dir / "deploy"
    deploy_dir.mkdir(parents=True, exist_ok=True)
    module = deploy_dir / f"{generated['module']}.py"
    module.write_text(generated["source"], encoding="utf-8")
    if hashlib.sha256(module.read_bytes()).hexdigest() != generated["sha256"]:
        raise ReviewError(f"{module} does not match the reviewed content after writing")
    report = deploy_dir / "review_report.json"
    report.write_text(
        json.dumps({"run_id": ctx.run_id, "module": module.name, **review}, indent=2) + "\n",
        encoding="utf-8",
    )
    lines = [f"# Review of {module.name}", "", f"sha256 `{generated['sha256']}`", ""]
    lines += [f"- line {f['line']}: **{f['rule']}** {f['message']}" for f in review["findings"]]
    lines += ["", f"{len(review['findings'])} finding(s); compiles: yes", ""]
    (deploy_dir / "REVIEW.md").write_text("\n".join(lines), encoding="utf-8")
    ctx.log(f"deployed {module.name} with {len(review['findings'])} review finding(s)")
    return {
        "deployed": str(module),
        "report": str(report),
        "summary": str(deploy_dir / "REVIEW.md"),
        "findings": len(review["findings"]),
        "counts": review.get("counts", {}),
    }
