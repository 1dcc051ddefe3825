"""Python steps of the `agent_review` sample: plan, review one file (a map child), score,
publish. Everything works offline; `plan` asks the configured LLM when there is one."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Protocol

from codereview.checker import review

PLAN_SCHEMA = {
    "type": "object",
    "required": ["files"],
    "properties": {
        "files": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["path", "why"],
                "properties": {"path": {"type": "string"}, "why": {"type": "string"}},
            },
        }
    },
}
SKIP = {"__pycache__", ".git", ".venv", "node_modules"}
_AST = threading.Lock()
"""Map children run in worker threads; CPython 3.11 can fail building ASTs in several threads
at once (a spurious "AST constructor recursion depth mismatch", python/cpython#106905), so
the compile-and-lint part of a review runs one at a time."""


class Context(Protocol):
    """The part of voltui's StepContext these steps use."""

    inputs: dict[str, Any]
    upstream: dict[str, Any]
    base_dir: Path
    run_dir: Path
    settings: dict[str, Any]

    @property
    def params(self) -> dict[str, Any]: ...

    def log(self, line: str) -> None: ...


def _candidates(root: Path) -> list[Path]:
    return sorted(
        (p for p in root.rglob("*.py") if not SKIP & set(p.relative_to(root).parts)),
        key=lambda p: (-p.stat().st_size, str(p)),
    )


async def plan(ctx: Context) -> dict[str, Any]:
    """Pick the files to review: the model's choice when an LLM is configured (its JSON answer
    checked against PLAN_SCHEMA), else the largest files. Any LLM failure falls back."""
    root = (ctx.base_dir / str(ctx.inputs.get("source", "."))).resolve()
    limit = int(ctx.inputs.get("max_files", 6))
    files = _candidates(root)
    if not files:
        raise ValueError(f"no Python files under {root}")
    names = [str(p.relative_to(root)) for p in files]
    chosen = [{"path": n, "why": "one of the largest files"} for n in names[:limit]]
    source = "heuristic"
    picked = await _ask_llm(ctx, names, limit)
    if picked:
        chosen, source = picked, "llm"
    ctx.log(f"planned {len(chosen)} of {len(names)} files ({source})")
    return {"root": str(root), "tasks": chosen, "source": source}


async def _ask_llm(ctx: Context, names: list[str], limit: int) -> list[dict[str, str]] | None:
    try:
        from voltui.engine.agents.llm import chat_completion, check_answer, llm_configured
    except ImportError:
        return None
    if not llm_configured(ctx.settings):
        return None
    prompt = (
        f"Pick at most {limit} of these Python files that most deserve a code review and say "
        'why in a few words. Answer only JSON: {"files": [{"path": ..., "why": ...}]}.\n'
        + "\n".join(names[:200])
    )
    try:
        reply = await chat_completion(
            ctx.settings,
            [{"role": "user", "content": prompt}],
            max_tokens=400,
            ctx=ctx,  # type: ignore[arg-type]  # rate limits, budget and usage of the run
        )
        answer = check_answer(reply["text"], PLAN_SCHEMA)
    except Exception as exc:  # the review must not depend on a remote model being up
        ctx.log(f"LLM plan failed ({type(exc).__name__}: {exc}); using the largest files")
        return None
    known = set(names)
    picked = [f for f in answer["files"] if f["path"] in known][:limit]
    return picked or None


def review_file(ctx: Context) -> dict[str, Any]:
    """One map child: review `params.item.path` and score it 0-10 (10 = no findings)."""
    item = ctx.params["item"]
    root = Path(ctx.upstream["plan"]["root"])
    path = (root / item["path"]).resolve()
    if root not in path.parents:
        raise ValueError(f"{item['path']!r} is outside the reviewed folder")
    with _AST:
        report = review(path)
    findings = len(report["findings"])
    score = 0.0 if not report["ok"] else max(0.0, 10.0 - findings * 10.0 / max(report["lines"], 10))
    ctx.log(f"{item['path']}: {findings} findings, score {score:.1f}")
    return {
        "path": item["path"],
        "why": item.get("why"),
        "findings": findings,
        "score": round(score, 2),
        "counts": report["counts"],
    }


def score(ctx: Context) -> dict[str, Any]:
    """Average the children's scores (a failed child counts 0) and write the report."""
    results = ctx.upstream["review"]
    scores = [r["score"] if r else 0.0 for r in results]
    total = round(sum(scores) / len(scores), 2) if scores else 0.0
    report = {"score": total, "files": results}
    out = ctx.run_dir / "agent_review.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    ctx.log(f"score {total} over {len(scores)} files -> {out.name}")
    return {"score": total, "files": len(scores), "report": str(out)}


def publish(ctx: Context) -> dict[str, Any]:
    """Write REVIEW.md with the approval that allowed it."""
    decision = ctx.upstream["approve_deploy"]
    report = json.loads(Path(ctx.upstream["score"]["report"]).read_text(encoding="utf-8"))
    lines = [f"# Review (score {report['score']})", ""]
    for r in report["files"]:
        if r:
            lines.append(f"- `{r['path']}`: {r['findings']} findings, score {r['score']}")
    lines += ["", f"Approved by {decision['by']} via {decision['via']}."]
    if decision.get("comment"):
        lines.append(f"Comment: {decision['comment']}")
    target = ctx.run_dir / "published" / "REVIEW.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"published": str(target)}
