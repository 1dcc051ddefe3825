"""`when:` conditions: small, safe expressions over a run's inputs and its steps' results.

    when: "${inputs.deploy} and steps.review.output.score >= 8"

`${...}` is accepted around any part for people used to template syntax; it means the same as
the bare expression inside. Names available: `inputs` (the run's inputs) and `steps` (each step
id maps to `{output, state, error}`); dotted access reads mapping keys (`steps.plan.output.n`),
and `steps["ids-with-dashes"]` works too.

Safety has two layers. `check` walks the parsed expression and allows only a fixed set of node
kinds (boolean logic, comparisons, arithmetic, literals, names, key access), so calls, lambdas,
comprehensions, imports, walrus and f-strings are rejected when the file loads, with a message
naming the offending fragment. `evaluate` then runs the expression with `simpleeval` (never
`eval`), with no functions at all and attribute access restricted to mapping keys, so even an
expression that slipped past `check` cannot reach Python objects.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Mapping
from typing import Any

from simpleeval import EvalWithCompoundTypes, InvalidExpression

from voltui.engine.errors import VoltuiError

NAMES = ("inputs", "steps")
"""The roots an expression may use."""

_CONSTANTS = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
}
"""YAML/JSON spellings people write in conditions, and Python's."""

_INTERPOLATION = re.compile(r"\$\{([^{}]*)\}")

_ALLOWED: tuple[type[ast.AST], ...] = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.BinOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.FloorDiv,
    ast.Mod,
    ast.Compare,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.In,
    ast.NotIn,
    ast.Is,
    ast.IsNot,
    ast.IfExp,
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.Attribute,
    ast.Subscript,
    ast.Slice,
    ast.List,
    ast.Tuple,
)

_WHAT: dict[type[ast.AST], str] = {
    ast.Call: "function calls",
    ast.Lambda: "lambdas",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.NamedExpr: "assignments (:=)",
    ast.JoinedStr: "f-strings",
    ast.Starred: "* unpacking",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Dict: "dict literals",
    ast.Set: "set literals",
    ast.Pow: "the ** operator",
    ast.BitAnd: "bitwise operators",
    ast.BitOr: "bitwise operators",
    ast.BitXor: "bitwise operators",
    ast.LShift: "bitwise operators",
    ast.RShift: "bitwise operators",
    ast.Invert: "bitwise operators",
    ast.MatMult: "the @ operator",
}


class ConditionError(VoltuiError):
    """A condition that cannot be evaluated against this run (missing key, wrong type)."""


def normalise(expr: str) -> str:
    """The expression with every `${...}` replaced by `(...)`."""
    return _INTERPOLATION.sub(lambda m: f"({m.group(1)})", expr)


@functools.lru_cache(maxsize=1024)
def _parse(source: str) -> ast.Expression:
    """One parse per distinct expression. Besides the saving, this keeps `ast` work off the
    run's hot path: CPython 3.11 can raise a spurious SystemError ("AST constructor recursion
    depth mismatch", python/cpython#106905) when threads build ASTs at the same time, as
    Python steps in worker threads may."""
    return ast.parse(source, mode="eval")


def check(expr: str) -> list[str]:
    """Problems that make `expr` unusable as a condition; empty when it is fine.

    Run when a workflow file loads, so an unsafe or broken condition never reaches a run.
    """
    return list(_check(expr))


@functools.lru_cache(maxsize=1024)
def _check(expr: str) -> tuple[str, ...]:
    if not expr.strip():
        return ("condition is empty; write an expression such as `inputs.deploy == true`",)
    if "${" in _INTERPOLATION.sub("", expr):
        return ("condition has a `${` without its closing `}`",)
    source = normalise(expr)
    try:
        tree = _parse(source.strip())
    except SyntaxError as exc:
        where = f" at column {exc.offset}" if exc.offset else ""
        return (f"condition {expr!r} is not a valid expression{where}: {exc.msg}",)
    text = source.strip()
    problems: list[str] = []

    def visit(node: ast.AST, around: str) -> None:
        # A rejected node is reported once, by the fragment it spans (operators span nothing,
        # so they are named by the expression around them); its children are not visited.
        fragment = ast.get_source_segment(text, node) or around
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            problems.append(
                f"condition uses `{fragment}`, but conditions cannot use names starting with `_`"
            )
            return
        if isinstance(node, ast.Name) and node.id not in NAMES and node.id not in _CONSTANTS:
            problems.append(
                f"condition uses unknown name `{node.id}`; use inputs.NAME or steps.ID.output "
                "(also steps.ID.state, steps.ID.error)"
            )
            return
        if not isinstance(node, _ALLOWED):
            what = _WHAT.get(type(node), f"{type(node).__name__} expressions")
            problems.append(f"condition uses `{fragment}`, but conditions cannot use {what}")
            return
        for child in ast.iter_child_nodes(node):
            visit(child, fragment)

    visit(tree, text)
    return tuple(dict.fromkeys(problems))


def referenced_steps(expr: str) -> set[str]:
    """Step ids an expression reads (`steps.ID...` or `steps["ID"]...`), for DAG checks."""
    return set(_referenced(expr))


@functools.lru_cache(maxsize=1024)
def _referenced(expr: str) -> frozenset[str]:
    try:
        tree = _parse(normalise(expr).strip())
    except SyntaxError:
        return frozenset()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Subscript) and (
            isinstance(node.value, ast.Name) and node.value.id == "steps"
        ):
            if isinstance(node, ast.Attribute):
                found.add(node.attr)
            elif isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                found.add(node.slice.value)
    return frozenset(found)


def reference_problems(workflow: Any) -> list[tuple[int, tuple[str, ...], str]]:
    """Steps that `when:` or `map.over` read but that do not run before the step (unknown, or
    not upstream of it), as (step index, field path, message) for located errors.

    A step may only read steps it (transitively) depends on, or it would see them unfinished
    depending on timing. Each check walks back from the step and stops at the first match,
    so steps reading a direct dependency (the usual case) cost O(their edges).
    """
    by_id = {s.id: s for s in workflow.steps}
    out: list[tuple[int, tuple[str, ...], str]] = []
    for i, step in enumerate(workflow.steps):
        for where, expr in (("when",), step.when), (("map", "over"), step.map and step.map.over):
            if not expr:
                continue
            for ref in sorted(referenced_steps(expr)):
                label = ".".join(where)
                if ref not in by_id:
                    known = ", ".join(sorted(by_id)) or "none"
                    out.append((i, where, f"{label} reads unknown step {ref!r} (steps: {known})"))
                elif not _upstream(by_id, step.id, ref):
                    out.append(
                        (
                            i,
                            where,
                            f"{label} reads step {ref!r}, which does not run before "
                            f"{step.id!r}; add {ref!r} to its depends_on",
                        )
                    )
    return out


def _upstream(by_id: Mapping[str, Any], start: str, target: str) -> bool:
    seen: set[str] = set()
    stack = list(by_id[start].depends_on)
    while stack:
        sid = stack.pop()
        if sid == target:
            return True
        if sid in seen or sid not in by_id:
            continue
        seen.add(sid)
        stack.extend(by_id[sid].depends_on)
    return False


class _Evaluator(EvalWithCompoundTypes):
    """simpleeval, where `a.b` reads key `b` of mapping `a` and nothing else.

    simpleeval's own attribute access tries `getattr` first, so `output.items` on a dict would
    give the bound method instead of the key "items"; conditions only ever read JSON data.
    """

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        if node.attr.startswith("_"):
            raise ConditionError(f"`{node.attr}`: conditions cannot use names starting with `_`")
        value = self._eval(node.value)
        return _key(value, node.attr, ast.unparse(node.value))

    def _eval_subscript(self, node: ast.Subscript) -> Any:
        value = self._eval(node.value)
        key = self._eval(node.slice)
        if isinstance(value, Mapping):
            return _key(value, key, ast.unparse(node.value))
        if isinstance(value, list | tuple | str) and isinstance(key, int | slice):
            try:
                return value[key]
            except IndexError:
                raise ConditionError(
                    f"`{ast.unparse(node)}`: index {key} is out of range (length {len(value)})"
                ) from None
        raise ConditionError(f"`{ast.unparse(node)}`: cannot index a {_kind(value)} with {key!r}")


def _key(value: Any, key: Any, where: str) -> Any:
    if not isinstance(value, Mapping):
        raise ConditionError(f"`{where}` is a {_kind(value)}, not a mapping; it has no `{key}`")
    try:
        return value[key]
    except KeyError:
        known = ", ".join(sorted(str(k) for k in value)) or "none"
        raise ConditionError(f"`{where}` has no key {key!r} (keys: {known})") from None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def evaluate(expr: str, inputs: Mapping[str, Any], steps: Mapping[str, Any]) -> bool:
    """Whether the condition holds; see `value`."""
    return bool(value(expr, inputs, steps))


def value(
    expr: str, inputs: Mapping[str, Any], steps: Mapping[str, Any], *, what: str = "condition"
) -> Any:
    """The expression's value; raises ConditionError naming what could not be read.

    `steps` maps a step id to `{"output", "state", "error"}` (only the steps the caller wants
    visible; usually those the condition names).
    """
    problems = check(expr)
    if problems:
        raise ConditionError("; ".join(problems))
    names: dict[str, Any] = {"inputs": dict(inputs), "steps": dict(steps)}
    names.update(_CONSTANTS)
    evaluator = _Evaluator(functions={}, names=names)
    try:
        tree = _parse(normalise(expr).strip())
        return evaluator.eval(expr, previously_parsed=tree.body)
    except ConditionError as exc:
        raise ConditionError(f"{what} {expr!r}: {exc}") from None
    except (InvalidExpression, TypeError, ZeroDivisionError, ValueError) as exc:
        raise ConditionError(f"{what} {expr!r} cannot be evaluated: {exc}") from None
