"""A small code reviewer: py_compile plus simple lint findings, reported as JSON.

Run as a voltui command step (`python -m codereview.checker`, the module to review named by the
`code_generation` upstream output on stdin) or by hand (`python -m codereview.checker FILE`).
Findings never fail the step — a review reports, people decide — but a file that does not
compile does: exit code 1 with the syntax error on stderr.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import os
import py_compile
import re
import sys
import tempfile
import tokenize
from pathlib import Path
from typing import Any

_MARKER = re.compile(r"\b(TODO|FIXME|XXX|HACK)\b")


def _finding(rule: str, line: int, message: str, severity: str = "warning") -> dict[str, Any]:
    return {"rule": rule, "line": line, "message": message, "severity": severity}


def compile_check(path: Path) -> str | None:
    """The syntax error of `path` as one line, or None; bytecode goes to a throwaway folder."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            py_compile.compile(str(path), cfile=os.path.join(tmp, "out.pyc"), doraise=True)
        except py_compile.PyCompileError as exc:
            inner = exc.exc_value
            if isinstance(inner, SyntaxError):
                return f"{path.name}:{inner.lineno}:{inner.offset}: {inner.msg}"
            return " ".join(str(exc).split())
    return None


def lint(source: str, max_line_length: int = 100) -> list[dict[str, Any]]:
    """Long lines, trailing whitespace, TODO markers, missing docstrings and bare excepts."""
    findings: list[dict[str, Any]] = []
    for number, line in enumerate(source.splitlines(), start=1):
        if len(line) > max_line_length:
            findings.append(
                _finding("long-line", number, f"{len(line)} > {max_line_length} characters")
            )
        if line != line.rstrip():
            findings.append(_finding("trailing-whitespace", number, "trailing whitespace"))
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and (match := _MARKER.search(token.string)):
            findings.append(
                _finding("todo", token.start[0], f"{match.group(1)} left in code", "info")
            )
    tree = ast.parse(source)
    if ast.get_docstring(tree) is None:
        findings.append(_finding("missing-docstring", 1, "module has no docstring"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if not node.name.startswith("_") and ast.get_docstring(node) is None:
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                findings.append(
                    _finding(
                        "missing-docstring", node.lineno, f"{kind} {node.name} has no docstring"
                    )
                )
        elif isinstance(node, ast.ExceptHandler) and node.type is None:
            findings.append(
                _finding("bare-except", node.lineno, "bare except also catches KeyboardInterrupt")
            )
    return sorted(findings, key=lambda f: (f["line"], f["rule"]))


def review(path: Path, max_line_length: int = 100) -> dict[str, Any]:
    """Review one file; `ok` is False only when it does not compile."""
    data = path.read_bytes()
    report: dict[str, Any] = {
        "file": path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "lines": data.count(b"\n"),
        "max_line_length": max_line_length,
    }
    error = compile_check(path)
    if error:
        return {**report, "ok": False, "syntax_error": error, "findings": [], "counts": {}}
    findings = lint(data.decode("utf-8"), max_line_length)
    counts: dict[str, int] = {}
    for item in findings:
        counts[item["rule"]] = counts.get(item["rule"], 0) + 1
    return {**report, "ok": True, "syntax_error": None, "findings": findings, "counts": counts}


def _target_from_payload(payload: dict[str, Any]) -> Path:
    """The generated module named by the upstream output, restored from it if the file is gone.

    The upstream output carries the source, so a replayed or cached run whose run folder lacks the
    file still reviews exactly the content that was generated.
    """
    generated = (payload.get("upstream") or {}).get("code_generation")
    if not generated:
        raise SystemExit("error: no code_generation output upstream; give a FILE to review")
    run_dir = Path(payload.get("run_dir") or os.environ["VOLTUI_RUN_DIR"])
    path = run_dir / generated["path"]
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != generated["sha256"]:
        print(f"restoring {generated['path']} from the code_generation output", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generated["source"], encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codereview.checker", description=__doc__)
    parser.add_argument("file", nargs="?", type=Path, help="file to review (default: upstream)")
    parser.add_argument("--max-line-length", type=int, default=None)
    args = parser.parse_args(argv)
    payload: dict[str, Any] = {}
    if args.file is None and sys.stdin is not None and not sys.stdin.isatty():
        text = sys.stdin.read().strip()
        payload = json.loads(text) if text else {}
    params = payload.get("params") or {}
    limit = args.max_line_length or int(
        params.get("max_line_length") or os.environ.get("VOLTUI_PARAM_MAX_LINE_LENGTH") or 100
    )
    path = args.file or _target_from_payload(payload)
    result = review(path, limit)
    for item in result["findings"]:
        print(f"{result['file']}:{item['line']}: {item['rule']}: {item['message']}", flush=True)
    if not result["ok"]:
        print(f"error: {result['syntax_error']}", file=sys.stderr, flush=True)
        print(json.dumps(result, sort_keys=True), flush=True)
        return 1
    print(f"{result['file']}: compiles; {len(result['findings'])} finding(s)", flush=True)
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
