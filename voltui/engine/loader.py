"""Workflow files (YAML or JSON) to `Workflow` models, with errors that point at the line.

People write these files by hand, so every mistake is reported as `line L, column C (path): what
is wrong; how to fix it`, never as a traceback or a raw pydantic dump. Positions come from the
YAML node tree (JSON is read for values by `json` and for positions by the YAML composer), and
pydantic's `loc` tuples are walked through that tree to find the line.
"""

from __future__ import annotations

import difflib
import json
import re
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from voltui.engine.errors import WorkflowFileError
from voltui.engine.inputs import describe_value, expected_text, fits_type, kind_of
from voltui.engine.models import IDENT_PATTERN, Workflow, validate_dag

WORKFLOW_SUFFIXES = (".yaml", ".yml", ".json")
"""File endings `load_workflow_dir` picks up."""

Loc = tuple[str | int, ...]

_EMPTY = "the file is empty; a workflow needs at least `id` and `steps`"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Problem:
    """One located problem; kept apart from its text so problems can be sorted by line."""

    __slots__ = ("column", "line", "text")

    def __init__(self, line: int | None, text: str, column: int | None = None) -> None:
        self.line = line
        self.column = column
        self.text = text

    @property
    def order(self) -> tuple[int, int]:
        return (self.line or 0, self.column or 0)


# --------------------------------------------------------------------------- public API


def load_workflow(path: str | Path) -> Workflow:
    """Read, parse and check one workflow file; `.json` is JSON, anything else YAML.

    Raises WorkflowFileError (never anything else for a bad file) whose message names the file
    and every problem found. The returned workflow's `source` is `str(path)`.
    """
    workflow, _root = _load_path(Path(path), str(path))
    return workflow


def load_workflow_text(text: str, label: str, *, fmt: Literal["yaml", "json"] = "yaml") -> Workflow:
    """Parse and check workflow text; `label` stands in for the file name in messages."""
    workflow, _root = _load_text(text, label, fmt)
    return workflow


def load_workflow_dir(folder: str | Path) -> tuple[list[Workflow], list[WorkflowFileError]]:
    """Load every workflow file directly in `folder`, sorted by name.

    A bad file does not stop the others: it lands in the error list. Hidden files (a leading
    dot, like editor backups) and sub-folders are skipped. A second file reusing a workflow id
    is an error naming both files, and only the first is returned, so ids stay unique. A
    missing folder is reported in the error list too, so callers have one path for problems.
    """
    base = Path(folder)
    try:
        entries = sorted(base.iterdir(), key=lambda p: p.name)
    except FileNotFoundError:
        return [], [WorkflowFileError(str(base), ["the folder does not exist"])]
    except NotADirectoryError:
        return [], [WorkflowFileError(str(base), ["this is a file, not a folder of workflows"])]
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return [], [WorkflowFileError(str(base), [f"the folder cannot be read ({reason})"])]

    workflows: list[Workflow] = []
    errors: list[WorkflowFileError] = []
    first_file: dict[str, str] = {}
    for entry in entries:
        if entry.name.startswith(".") or entry.suffix.lower() not in WORKFLOW_SUFFIXES:
            continue
        if entry.is_dir():
            continue
        label = str(entry)
        try:
            workflow, root = _load_path(entry, label)
        except WorkflowFileError as exc:
            errors.append(exc)
            continue
        if workflow.id in first_file:
            node = _locate(root, ("id",))
            where = format_location(("id",), *_position(node))
            errors.append(
                WorkflowFileError(
                    label,
                    [
                        f"{where}: workflow id {workflow.id!r} is already used by "
                        f"{first_file[workflow.id]}; each workflow needs its own id, "
                        "so rename one of them"
                    ],
                )
            )
            continue
        first_file[workflow.id] = label
        workflows.append(workflow)
    return workflows, errors


def workflow_json_schema() -> dict[str, Any]:
    """JSON Schema for workflow files, for editors (`# yaml-language-server: $schema=...`)."""
    schema = Workflow.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "voltui workflow",
        "description": (
            "A voltui workflow file: an id, optional inputs and defaults, and a list of steps "
            "forming a DAG through depends_on. Durations are seconds or strings like 250ms, "
            "5s, 10m, 1h, 1h30m."
        ),
    }


def format_location(loc: Sequence[str | int], line: int | None, column: int | None) -> str:
    """`line 14, column 9 (steps[1].retry.base_delay)`; parts that are unknown are left out.

    Lines and columns are 1-based, as editors show them.
    """
    path = format_path(loc)
    if line is None:
        return path or "top level"
    where = f"line {line}" if column is None else f"line {line}, column {column}"
    return f"{where} ({path})" if path else where


def format_path(loc: Sequence[str | int]) -> str:
    """`steps[2].depends_on[0]`: the dotted form people use to talk about a place in a file."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][\w\-]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


# --------------------------------------------------------------------------- reading


def _load_path(path: Path, label: str) -> tuple[Workflow, yaml.Node | None]:
    text = _read_text(path, label)
    fmt: Literal["yaml", "json"] = "json" if path.suffix.lower() == ".json" else "yaml"
    workflow, root = _load_text(text, label, fmt)
    workflow._source = label
    return workflow, root


def _read_text(path: Path, label: str) -> str:
    """The file as text; every way reading can fail becomes a WorkflowFileError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise WorkflowFileError(label, ["the file does not exist; check the path"]) from None
    except IsADirectoryError:
        raise WorkflowFileError(
            label,
            ["this is a folder, not a workflow file; give the path of a .yaml, .yml or .json file"],
        ) from None
    except PermissionError:
        raise WorkflowFileError(label, ["the file cannot be read (permission denied)"]) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise WorkflowFileError(label, [f"the file cannot be read ({reason})"]) from None
    try:
        # utf-8-sig drops a byte-order mark, which some Windows editors add and json rejects.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        column = len(raw[line_start : exc.start].decode("utf-8", errors="replace")) + 1
        where = format_location((), line, column)
        raise WorkflowFileError(
            label,
            [
                f"{where}: the file is not UTF-8 text (byte 0x{raw[exc.start]:02x} cannot be "
                "decoded); save it with UTF-8 encoding"
            ],
        ) from None


# --------------------------------------------------------------------------- parsing


def _load_text(text: str, label: str, fmt: Literal["yaml", "json"]) -> tuple[Workflow, Any]:
    if not text.strip():
        raise WorkflowFileError(label, [f"{format_location((), 1, 1)}: {_EMPTY}"])
    if fmt == "json":
        data, root, problems = _parse_json(text)
    else:
        data, root, problems = _parse_yaml(text)
    if isinstance(problems, str):
        raise WorkflowFileError(label, [problems])

    if not isinstance(data, dict):
        line, column = _position(root) if root is not None else (1, 1)
        where = format_location((), line, column)
        if root is None and fmt == "yaml":
            raise WorkflowFileError(
                label,
                [
                    f"{where}: the file is empty (only comments); "
                    "a workflow needs at least `id` and `steps`"
                ],
            )
        hint = (
            "; if these are the steps, put them under `steps:` and add an `id:`"
            if isinstance(data, list)
            else ""
        )
        raise WorkflowFileError(
            label,
            [
                f"{where}: the top level is {describe_value(data)}, but a workflow file must be "
                f"a mapping of fields starting with `id:` and `steps:`{hint}"
            ],
        )

    try:
        workflow = Workflow.model_validate(data)
    except ValidationError as exc:
        problems.extend(_validation_problems(exc, root))
        workflow = None
    except RecursionError:
        problems.append(_Problem(None, "the file nests too deeply (or an alias refers to itself)"))
        workflow = None
    if workflow is not None:
        problems.extend(_dag_problems(workflow, root))
        problems.extend(_input_problems(workflow, root))
    if problems or workflow is None:
        problems.sort(key=lambda p: p.order)
        raise WorkflowFileError(label, [p.text for p in problems])
    return workflow, root


def _parse_yaml(text: str) -> tuple[Any, yaml.Node | None, list[_Problem] | str]:
    """Compose once (for positions and duplicate keys), then construct values from that tree."""
    try:
        loader = yaml.SafeLoader(text)  # the reader rejects control characters right here
    except yaml.reader.ReaderError as exc:
        return None, None, _reader_error_message(exc, text)
    try:
        root = loader.get_single_node()
        problems = _duplicate_keys(root)
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        return None, None, _yaml_error_message(exc)
    except yaml.reader.ReaderError as exc:
        return None, None, _reader_error_message(exc, text)
    except yaml.YAMLError as exc:
        return None, None, f"not valid YAML: {exc}"
    except RecursionError:
        return None, None, "the file nests too deeply to read"
    finally:
        loader.dispose()
    return data, root, problems


def _parse_json(text: str) -> tuple[Any, yaml.Node | None, list[_Problem] | str]:
    """Values from `json` (exact JSON semantics); positions from the YAML composer.

    JSON is nearly YAML; tabs are the common exception (YAML forbids them as indentation), and
    since JSON forbids raw tabs inside strings, swapping them for spaces keeps every column. If
    composing still fails, problems are reported by path alone.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = format_location((), exc.lineno, exc.colno)
        return None, None, f"{where}: not valid JSON: {exc.msg}{_json_hint(exc.msg)}"
    except RecursionError:
        return None, None, "the file nests too deeply to read"
    root: yaml.Node | None = None
    try:
        loader = yaml.SafeLoader(text.replace("\t", " "))
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except (yaml.YAMLError, RecursionError):
        root = None
    return data, root, _duplicate_keys(root)


_YAML_HINTS = (
    ("'\\t'", "YAML does not allow tabs for indentation; indent with spaces"),
    (
        "mapping values are not allowed here",
        "a `key: value` appears where a plain value was expected; check this line's "
        "indentation, or quote a value that contains ': '",
    ),
    ("expected <block end>", "this line's indentation does not line up with the lines above"),
    (
        "could not find expected ':'",
        "a `key: value` line is missing its colon, or a quote is never closed",
    ),
    ("expected ',' or ']'", "a [list] is not closed, or its items lack a comma between them"),
    ("expected ',' or '}'", "a {mapping} is not closed, or its items lack a comma between them"),
    ("undefined alias", "an alias (*name) refers to an anchor (&name) that is not defined"),
    (
        "could not determine a constructor",
        "voltui reads plain YAML; remove the !tag",
    ),
)


_UNCLOSED = {
    "while scanning a quoted scalar": "quoted string",
    "while parsing a flow sequence": "[list]",
    "while parsing a flow mapping": "{mapping}",
}


def _yaml_error_message(exc: yaml.MarkedYAMLError) -> str:
    problem = exc.problem or exc.context or "unreadable YAML"
    context = exc.context or ""
    if "expected a single document" in context and exc.problem_mark:
        where = format_location((), *_mark_position(exc.problem_mark))
        return (
            f"{where}: a second YAML document starts here (after ---); a workflow file holds "
            "exactly one, so remove the --- line or split the file"
        )
    hit_end = "end of stream" in problem or "<stream end>" in problem
    if hit_end and exc.context_mark:
        # The end of the file is a useless place to point at; where the thing opened is not.
        where = format_location((), *_mark_position(exc.context_mark))
        thing = _UNCLOSED.get(context, context.removeprefix("while ").strip() or "value")
        end = f" (the file ends at line {exc.problem_mark.line + 1})" if exc.problem_mark else ""
        return f"{where}: not valid YAML: the {thing} that starts here is never closed{end}"
    mark = exc.problem_mark or exc.context_mark
    where = format_location((), *_mark_position(mark))
    text = f"{where}: not valid YAML: {problem}"
    if context and exc.context_mark and mark and exc.context_mark.line != mark.line:
        text += (
            f" ({context} that starts at line {exc.context_mark.line + 1}, "
            f"column {exc.context_mark.column + 1})"
        )
    for needle, hint in _YAML_HINTS:
        if needle in problem:
            text += f"; {hint}"
            break
    return text


def _mark_position(mark: yaml.Mark | None) -> tuple[int | None, int | None]:
    return (mark.line + 1, mark.column + 1) if mark else (None, None)


def _reader_error_message(exc: yaml.reader.ReaderError, text: str) -> str:
    position = exc.position if isinstance(exc.position, int) else 0
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or " ")
    return (
        f"{format_location((), line, column)}: the file contains the control character "
        f"U+{code:04X}, which YAML does not allow; remove it"
    )


def _json_hint(msg: str) -> str:
    if msg.startswith("Expecting property name"):
        return "; keys need double quotes, and JSON allows no comma after the last item"
    if msg.startswith("Expecting ',' delimiter"):
        return "; a comma is missing between two items"
    if msg.startswith("Expecting value"):
        return "; a value is missing here (JSON has no trailing commas or comments)"
    if msg.startswith("Extra data"):
        return "; there is text after the end of the top-level object"
    if msg.startswith("Invalid control character"):
        return "; write tabs and newlines inside strings as \\t and \\n"
    return ""


# --------------------------------------------------------------------------- node tree


def _position(node: yaml.Node | None) -> tuple[int | None, int | None]:
    if node is None:
        return None, None
    return node.start_mark.line + 1, node.start_mark.column + 1


def _locate(root: yaml.Node | None, loc: Sequence[str | int], *, key: bool = False) -> Any:
    """The node at `loc`, or the deepest node on the way if the path leaves the tree.

    Stopping at the deepest node is what makes a missing field point at its parent mapping.
    With `key`, a final mapping key returns the key's node (for "unknown field" messages).
    """
    node = root
    if node is None:
        return None
    for n, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            found = None
            # The last of duplicated keys wins, as it does when values are constructed.
            for key_node, value_node in reversed(node.value):
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                    found = (key_node, value_node)
                    break
            if found is None:
                return node
            if key and n == len(loc) - 1:
                return found[0]
            node = found[1]
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            node = node.value[part]
        else:
            return node
    return node


def _duplicate_keys(root: yaml.Node | None) -> list[_Problem]:
    """Keys repeated within one mapping, which SafeLoader would silently collapse to the last."""
    problems: list[_Problem] = []
    visited: set[int] = set()
    stack: list[tuple[yaml.Node, Loc]] = [(root, ())] if root is not None else []
    while stack:
        node, loc = stack.pop()
        if id(node) in visited:  # aliases share nodes, and may even form loops
            continue
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], yaml.Node] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                    continue
                ident = (key_node.tag, key_node.value)
                child_loc = (*loc, key_node.value)
                if ident in first:
                    line, column = _position(key_node)
                    earlier = first[ident].start_mark.line + 1
                    problems.append(
                        _Problem(
                            line,
                            f"{format_location(child_loc, line, column)}: key "
                            f"`{key_node.value}` appears twice in this mapping (first at line "
                            f"{earlier}); YAML would silently keep only the last one, so remove "
                            "or rename one of them",
                            column,
                        )
                    )
                else:
                    first[ident] = key_node
                stack.append((value_node, child_loc))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*loc, i)) for i, item in enumerate(node.value))
    return problems


# --------------------------------------------------------------------------- types along a loc


def _unwrap(tp: Any) -> Any:
    """Strip `Annotated[...]` and `X | None` down to what a value must be."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
            continue
        if origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
        return tp


def _union_members(tp: Any) -> list[Any] | None:
    if get_origin(tp) in (Union, types.UnionType):
        return [a for a in get_args(tp) if a is not type(None)]
    return None


def _tag_name(tp: Any) -> str:
    """The name pydantic puts in `loc` for a union member (`list[str]`, `str`, `LLMCall`)."""
    tp = _unwrap(tp)
    if isinstance(tp, type) and get_origin(tp) is None:
        return tp.__name__
    return str(tp)


def _child_type(tp: Any, part: str | int) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field is not None else Any
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (list, tuple, set, frozenset) and isinstance(part, int):
        return args[0] if args else Any
    if origin is dict:
        return args[1] if len(args) == 2 else Any
    return Any


def _split_loc(loc: Sequence[str | int]) -> tuple[Loc, int | None, Any]:
    """Drop pydantic's union-member tags from `loc`, following the model's types.

    Returns the clean loc, the index in it where the first tag was dropped (None if none), and
    the declared type at the end of the loc.
    """
    tp: Any = Workflow
    clean: list[str | int] = []
    tag_at: int | None = None
    for part in loc:
        tp = _unwrap(tp)
        members = _union_members(tp)
        if members is not None:
            match = next((m for m in members if _tag_name(m) == part), None)
            if match is not None:
                tag_at = len(clean) if tag_at is None else tag_at
                tp = match
                continue
            tp = Any
        tp = _child_type(tp, part)
        clean.append(part)
    return tuple(clean), tag_at, _unwrap(tp)


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    _clean, _tag, tp = _split_loc(loc)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


# --------------------------------------------------------------------------- messages


def _validation_problems(exc: ValidationError, root: yaml.Node | None) -> list[_Problem]:
    """One problem per mistake; the alternatives of a union become one message, not several."""
    problems: list[_Problem] = []
    union_groups: dict[Loc, list[tuple[ErrorDetails, Loc]]] = {}
    order: list[tuple[str, Any]] = []
    for err in exc.errors(include_url=False):
        clean, tag_at, _tp = _split_loc(err["loc"])
        if tag_at is None:
            order.append(("one", (err, clean)))
            continue
        prefix = clean[:tag_at]
        if prefix not in union_groups:
            union_groups[prefix] = []
            order.append(("union", prefix))
        union_groups[prefix].append((err, clean))

    # A misspelt required field (`promt:`) shows up as both "missing" and "unknown field";
    # the did-you-mean of the second says it all, so the first is dropped.
    missing = {clean for kind, (err, clean) in _singles(order) if err["type"] == "missing"}
    typo_of_missing: dict[Loc, Loc] = {}
    for _kind, (err, clean) in _singles(order):
        if err["type"] == "extra_forbidden" and clean:
            suggestion = _suggest_field(clean)
            if suggestion is not None and (*clean[:-1], suggestion) in missing:
                typo_of_missing[clean] = (*clean[:-1], suggestion)
    covered = set(typo_of_missing.values())

    for kind, item in order:
        if kind == "one":
            err, clean = item
            if clean in covered and err["type"] == "missing":
                continue
            problems.append(_located(root, err, clean, required_typo=clean in typo_of_missing))
            continue
        prefix = item
        group = union_groups[prefix]
        # An error inside a member (command[1] is not a string) shows what was meant; prefer it.
        deeper = [(e, c) for e, c in group if len(c) > len(prefix)]
        if deeper:
            problems.extend(_located(root, e, c) for e, c in deeper)
            continue
        value = group[0][0].get("input")
        wanted = " or ".join(dict.fromkeys(_expected_kind(e) for e, _c in group))
        text = f"expected {wanted}, got {describe_value(value)}"
        parent = _model_at(prefix[:-1])
        field = parent.model_fields.get(str(prefix[-1])) if parent and prefix else None
        if field is not None and field.description:
            text += f" ({prefix[-1]}: {field.description})"
        node = _locate(root, prefix)
        line, column = _position(node)
        problems.append(_Problem(line, f"{format_location(prefix, line, column)}: {text}", column))
    return problems


def _singles(order: list[tuple[str, Any]]) -> list[tuple[str, tuple[ErrorDetails, Loc]]]:
    return [(kind, item) for kind, item in order if kind == "one"]


def _suggest_field(loc: Loc) -> str | None:
    """The allowed field closest to the unknown key at the end of `loc`, if any is close."""
    model = _model_at(loc[:-1])
    if model is None:
        return None
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return close[0] if close else None


def _located(
    root: yaml.Node | None, err: ErrorDetails, loc: Loc, *, required_typo: bool = False
) -> _Problem:
    kind = err["type"]
    if kind == "missing":
        node = _locate(root, loc)
        shown: Loc = loc[:-1]
    else:
        node = _locate(root, loc, key=kind == "extra_forbidden")
        shown = loc
    line, column = _position(node)
    text = _error_text(err, loc, required_typo=required_typo)
    return _Problem(line, f"{format_location(shown, line, column)}: {text}", column)


def _expected_kind(err: ErrorDetails) -> str:
    kind = err["type"]
    if kind.startswith("string"):
        return "a string"
    if kind.startswith("list") or kind.startswith("tuple"):
        return "a list"
    if kind.startswith("int"):
        return "a whole number"
    if kind.startswith("float"):
        return "a number"
    if kind.startswith("bool"):
        return "true or false"
    if kind.startswith(("dict", "model")):
        return "a mapping"
    return _clean_msg(err["msg"])


def _clean_msg(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    # "Input should be..." reads better mid-sentence in lower case; "URL ..." must stay as is.
    if len(msg) > 1 and msg[1].islower():
        return msg[0].lower() + msg[1:]
    return msg


def _quote_hint(value: Any) -> str:
    if isinstance(value, bool):
        return "; YAML reads true/false/yes/no/on/off as booleans, so quote it if you meant text"
    if value is None or isinstance(value, list | tuple | dict):
        return ""
    return "; quote it if you meant text"


def _error_text(err: ErrorDetails, loc: Loc, *, required_typo: bool = False) -> str:
    """One readable sentence for a pydantic error: what is wrong and how to fix it.

    `required_typo` marks an unknown key whose suggestion is a missing required field.
    """
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    name = str(loc[-1]) if loc else "value"
    got = describe_value(value)

    if kind == "missing":
        return f"required field `{name}` is missing; add `{name}: ...` here"
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        listing = ", ".join(model.model_fields) if model else ""
        suggestion = _suggest_field(loc)
        if suggestion:
            required = " (a required field)" if required_typo else ""
            return (
                f"unknown field `{name}`; did you mean `{suggestion}`{required}? "
                f"Allowed here: {listing}"
            )
        return f"unknown field `{name}`; remove it or fix its spelling. Allowed here: {listing}"
    if kind == "string_type":
        return f"expected text, got {got}{_quote_hint(value)}"
    if kind in ("int_type", "int_parsing", "int_from_float", "int_parsing_size"):
        return f"expected a whole number, got {got}"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return f"expected a number, got {got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {got}"
    if kind in ("list_type", "tuple_type", "set_type"):
        hint = f"; write [{value}] for a list of one" if isinstance(value, str) else ""
        return f"expected a list (like [a, b], or one `- item` per line), got {got}{hint}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        model = _model_at(loc)
        fields = f" with fields like {', '.join(list(model.model_fields)[:8])}" if model else ""
        return f"expected a mapping of `key: value`{fields}, got {got}"
    if kind in ("literal_error", "enum"):
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        close = difflib.get_close_matches(str(value), options, n=1) if options else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{value!r} is not allowed here; use one of {', '.join(options)}{hint}"
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == IDENT_PATTERN:
            return (
                f"{value!r} is not a valid id; use letters, digits, `_`, `.` and `-`, "
                "starting with a letter or digit"
            )
        if name == "python":
            return f"{value!r} is not a function reference; write it as package.module:function"
        return f"{value!r} does not have the expected form ({ctx.get('pattern')})"
    if kind == "string_too_long":
        return f"the text is too long; at most {ctx.get('max_length')} characters"
    if kind == "too_short":
        if loc == ("steps",):
            return "a workflow needs at least one step under `steps`"
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"has too many items; at most {ctx.get('max_length')}"
    bounds = {
        "greater_than_equal": ("too small; it must be at least", "ge"),
        "greater_than": ("too small; it must be more than", "gt"),
        "less_than_equal": ("too large; it must be at most", "le"),
        "less_than": ("too large; it must be less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"{value!r} is {words} {ctx.get(key)}"
    if kind == "recursion_loop":
        return "this value refers to itself through a YAML alias; write it out instead"
    return _clean_msg(err["msg"])


def _problem_at(root: yaml.Node | None, loc: Loc, text: str) -> _Problem:
    line, column = _position(_locate(root, loc))
    return _Problem(line, f"{format_location(loc, line, column)}: {text}", column)


def _dag_problems(workflow: Workflow, root: yaml.Node | None) -> list[_Problem]:
    known = [s.id for s in workflow.steps]
    problems = []
    for problem in validate_dag(workflow):
        loc = tuple(problem.loc)
        text = problem.message
        if "unknown step" in text and len(loc) == 4:
            _steps, i, _deps, j = loc
            dep = workflow.steps[int(i)].depends_on[int(j)]
            close = difflib.get_close_matches(dep, known, n=1)
            text += f"; did you mean {close[0]!r}?" if close else "; fix the name or add that step"
        elif "depends on itself" in text:
            text += "; remove it from depends_on"
        elif "used twice" in text:
            text += "; give each step its own id"
        elif text.startswith("dependency cycle"):
            text += "; no step can wait for itself, so remove one depends_on entry on this path"
        problems.append(_problem_at(root, loc, text))
    return problems


def _input_problems(workflow: Workflow, root: yaml.Node | None) -> list[_Problem]:
    """Defaults and choices that contradict the input's declared type (pydantic allows Any)."""
    problems = []
    for name, spec in workflow.inputs.items():
        base: Loc = ("inputs", name)
        declared = f"`type: {spec.type}`"
        if spec.default is not None and not fits_type(spec.type, spec.default):
            problems.append(
                _problem_at(
                    root,
                    (*base, "default"),
                    f"the default {spec.default!r} is {kind_of(spec.default)}, which does not "
                    f"match {declared}; "
                    f"write {expected_text(spec.type)}, or change the type",
                )
            )
        if spec.choices is None:
            continue
        if not spec.choices:
            problems.append(
                _problem_at(
                    root,
                    (*base, "choices"),
                    "choices is empty; list the allowed values or remove it",
                )
            )
            continue
        for k, choice in enumerate(spec.choices):
            if not fits_type(spec.type, choice):
                problems.append(
                    _problem_at(
                        root,
                        (*base, "choices", k),
                        f"the choice {choice!r} is {kind_of(choice)}, which does not match "
                        f"{declared}; "
                        f"write {expected_text(spec.type)}, or change the type",
                    )
                )
        if spec.default is not None and spec.default not in spec.choices:
            problems.append(
                _problem_at(
                    root,
                    (*base, "default"),
                    f"the default {spec.default!r} is not one of the choices "
                    f"({', '.join(map(repr, spec.choices))}); add it to choices or pick one",
                )
            )
    return problems
