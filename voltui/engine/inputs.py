"""Workflow inputs: defaults, coercion of typed-in text, and one message for every mistake.

Inputs reach the engine as text from `--input KEY=VALUE` or a TUI form, or as JSON values from the
remote API, so each value is coerced to the type the workflow declares. All problems are
collected before raising, because fixing one typo per attempt is a poor way to start a run.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from voltui.engine.errors import InvalidInputError
from voltui.engine.models import InputSpec, Workflow

_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})

_EXPECTED = {
    "string": "text",
    "integer": "a whole number like 3",
    "number": "a number like 2.5",
    "boolean": "true or false (also yes/no, 1/0)",
}


def describe_value(value: Any) -> str:
    """How a value reads in an error message: its kind first, since the kind is usually the bug."""
    if value is None:
        return "null (nothing)"
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"the text {shown!r}"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} ({value})"


def kind_of(value: Any) -> str:
    """The kind of a value in words (`text`, `an integer`), for "is X, not Y" messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def fits_type(type_name: str, value: Any) -> bool:
    """Whether a value written in a workflow file already has the declared type.

    Files are checked strictly (no coercion): `default: "5"` for an integer input is more
    likely a mistake than an intention, and the file is the place to fix it.
    """
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "number":
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(float(value))
        )
    if type_name == "boolean":
        return isinstance(value, bool)
    return False


def expected_text(type_name: str) -> str:
    """Words for what a type accepts, shared by the loader and the coercion messages."""
    return _EXPECTED.get(type_name, type_name)


def coerce_value(spec: InputSpec, value: Any) -> Any:
    """Return `value` as the spec's type; raise ValueError with a message naming what was given.

    Strings are parsed because they come from command lines and forms; JSON numbers and booleans
    pass through when they already fit.
    """
    kind = spec.type
    if kind == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    elif kind == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
    elif kind == "number":
        number: float | int | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):
            text = value.strip()
            try:
                number = int(text)
            except ValueError:
                try:
                    number = float(text)
                except ValueError:
                    number = None
        if number is not None and math.isfinite(float(number)):
            return number
    elif kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            word = value.strip().lower()
            if word in _TRUE:
                return True
            if word in _FALSE:
                return False
    raise ValueError(f"expects {expected_text(kind)}, got {describe_value(value)}")


def _render_default(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


def describe_inputs(workflow: Workflow) -> str:
    """One sentence listing a workflow's inputs, so an error shows what would have worked."""
    if not workflow.inputs:
        return f"Workflow {workflow.id!r} takes no inputs."
    parts = []
    for name, spec in workflow.inputs.items():
        bits = [spec.type]
        if spec.required:
            bits.append("required")
        elif spec.default is None:
            bits.append("optional")
        else:
            bits.append(f"default {_render_default(spec.default)}")
        if spec.choices:
            bits.append("one of " + ", ".join(_render_default(c) for c in spec.choices))
        text = f"{name} ({', '.join(bits)})"
        if spec.description:
            text += f": {spec.description}"
        parts.append(text)
    return f"Inputs of workflow {workflow.id!r}: " + "; ".join(parts) + "."


def resolve_inputs(workflow: Workflow, given: Mapping[str, Any]) -> dict[str, Any]:
    """Every declared input with its final, typed value (given, coerced, or the default).

    A `None` value counts as not given, so a form's empty field falls back to the default.
    Raises InvalidInputError listing every problem and the workflow's inputs.
    """
    problems: list[str] = []
    declared = workflow.inputs
    for name in given:
        if name in declared:
            continue
        close = difflib.get_close_matches(name, list(declared), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"unknown input {name!r}{hint}")

    resolved: dict[str, Any] = {}
    for name, spec in declared.items():
        raw = given.get(name)
        if raw is None:
            if spec.required:
                problems.append(f"input {name!r} is required but was not given")
                continue
            value = spec.default
        else:
            try:
                value = coerce_value(spec, raw)
            except ValueError as exc:
                problems.append(f"input {name!r} {exc}")
                continue
        if value is None:  # an optional input left out
            resolved[name] = None
            continue
        if spec.choices is not None and value not in spec.choices:
            options = ", ".join(_render_default(c) for c in spec.choices)
            problems.append(
                f"input {name!r} must be one of {options}; got {_render_default(value)}"
            )
            continue
        resolved[name] = value

    if problems:
        raise InvalidInputError(
            f"Cannot start workflow {workflow.id!r}: "
            + "; ".join(problems)
            + ". "
            + describe_inputs(workflow)
        )
    return resolved


def parse_input_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """`KEY=VALUE` strings to a dict; the value keeps any `=` after the first and its spaces.

    A later pair wins over an earlier one with the same key, like repeated environment settings.
    """
    out: dict[str, str] = {}
    bad: list[str] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            bad.append(repr(pair))
            continue
        out[key] = value
    if bad:
        subject = f"input {bad[0]} is" if len(bad) == 1 else f"inputs {', '.join(bad)} are"
        raise InvalidInputError(
            f"{subject} not of the form KEY=VALUE; "
            "write it like --input path=src (quote the whole pair if the value has spaces)"
        )
    return out
