"""Workflow files (YAML or JSON) to `Workflow` models, with errors that point at the line.

People write these files by hand, so every mistake is reported as `line L, column C (path): what
is wrong; how to fix it`, never as a traceback or a raw pydantic dump, and every mistake of a
file is reported in one pass: schema problems and DAG problems together, in line order, at most
`MAX_SHOWN` of them with a count of the rest.

Files also come from git checkouts and shared folders, so reading them is bounded
(`WorkflowLimits`): only regular files are read (a FIFO or `/dev/zero` would never end), up to a
size; text, nesting, alias expansion and step count have limits too, and the whole check is
linear in the size of the file. YAML is composed by libyaml when PyYAML has it (about ten times
faster than the pure-Python parser) and turned into values by `filetree.build_yaml`. JSON is
read for values by `json`; its positions come from the YAML composer, only when a problem needs
one. pydantic's `loc` tuples are walked through the node tree to find lines.
"""

from __future__ import annotations

import bisect
import contextlib
import difflib
import gc
import json
import os
import re
import stat
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, NoReturn, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from voltui.engine.errors import WorkflowFileError
from voltui.engine.filetree import (
    MERGE,
    TreeProblem,
    build_yaml,
    check_json,
    limit_hint,
    short,
)
from voltui.engine.inputs import describe_value, expected_text, fits_type, kind_of
from voltui.engine.limits import DEFAULT_LIMITS, WorkflowLimits
from voltui.engine.models import IDENT_PATTERN, InputSpec, Workflow, check_dag, validate_dag

WORKFLOW_SUFFIXES = (".yaml", ".yml", ".json")
"""File endings `load_workflow_dir` picks up."""

MAX_SHOWN = 20
"""Problems listed per file; the rest are counted, so a broken generated file stays readable."""

Loc = tuple[str | int, ...]

_EMPTY = "the file is empty; a workflow needs at least `id` and `steps`"
_Composer: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's composer when PyYAML was built with it (the wheels are); the Python one otherwise."""


@dataclass(slots=True)
class _Problem:
    """One located problem; kept apart from its text so problems can be sorted by line.

    `hint` is called only for the problems shown: a suggestion may search every step id, which
    is affordable for twenty problems, not for twenty thousand.
    """

    line: int | None
    text: str
    column: int | None = None
    hint: Callable[[], str] | None = None
    loc: Loc | None = None

    @property
    def order(self) -> tuple[int, int]:
        return (self.line or 0, self.column or 0)

    def render(self) -> str:
        return self.text + self.hint() if self.hint is not None else self.text


class LoadedFile(NamedTuple):
    """A workflow and where its `id` is written, for messages about clashing ids."""

    workflow: Workflow
    id_line: int | None
    id_column: int | None


# --------------------------------------------------------------------------- public API


def load_workflow(path: str | Path, *, limits: WorkflowLimits | None = None) -> Workflow:
    """Read, parse and check one workflow file; `.json` is JSON, anything else YAML.

    Raises WorkflowFileError (never anything else for a bad file) whose message names the file
    and every problem found. The returned workflow's `source` is `str(path)`. Blocking (it
    reads the file): from async code call it in a thread.
    """
    return load_file(path, limits=limits).workflow


def load_file(path: str | Path, *, limits: WorkflowLimits | None = None) -> LoadedFile:
    """`load_workflow`, also returning where the workflow's `id` is written."""
    path = Path(path)
    label = str(path)
    limits = limits or DEFAULT_LIMITS
    text = _read_text(path, label, limits)
    fmt: Literal["yaml", "json"] = "json" if path.suffix.lower() == ".json" else "yaml"
    loaded = _load_text(text, label, fmt, limits)
    loaded.workflow._source = label
    return loaded


def load_workflow_text(
    text: str,
    label: str,
    *,
    fmt: Literal["yaml", "json"] = "yaml",
    limits: WorkflowLimits | None = None,
) -> Workflow:
    """Parse and check workflow text; `label` stands in for the file name in messages."""
    limits = limits or DEFAULT_LIMITS
    if len(text) > limits.max_file_bytes:
        raise WorkflowFileError(label, [_too_large(len(text), limits)])
    return _load_text(text, label, fmt, limits).workflow


def load_workflow_dir(
    folder: str | Path, *, limits: WorkflowLimits | None = None
) -> tuple[list[Workflow], list[WorkflowFileError]]:
    """Load every workflow file directly in `folder`, sorted by name.

    A bad file does not stop the others: it lands in the error list. Hidden files (a leading
    dot, like editor backups) and sub-folders are skipped. A second file reusing a workflow id
    is an error naming both files, and only the first is returned, so ids stay unique. A
    missing folder is reported in the error list too, so callers have one path for problems.
    For a folder listed again and again, keep a `Catalogue`: it re-reads only changed files.
    """
    from voltui.engine.catalogue import Catalogue  # it builds on this module

    return Catalogue(folder, limits=limits).list()


def locate_in_file(
    path: str | Path, loc: Sequence[str | int], *, limits: WorkflowLimits | None = None
) -> tuple[int | None, int | None]:
    """Line and column of `loc` in a workflow file, or (None, None) if it cannot be found.

    For the rare message that needs a place after the file loaded (a workflow id another file
    already uses): positions are not kept with loaded workflows, since a node tree costs
    several times the file's size in memory.
    """
    path = Path(path)
    try:
        text = _read_text(path, str(path), limits or DEFAULT_LIMITS)
    except WorkflowFileError:
        return None, None
    if path.suffix.lower() == ".json":
        text = text.replace("\t", " ")
    return _Locator(lambda: _compose_quietly(text)).position(loc)


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
            out += f"[{short(part)}]"
    if len(out) > 120:  # only a path past the depth limit gets this long
        out = f"{out[:60]}...{out[-50:]}"
    return out


# --------------------------------------------------------------------------- reading


_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode: int) -> str | None:
    """Why a file of this mode is not read, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "this is a folder, not a workflow file; give the path of a .yaml, .yml or .json file"
    kind = next((name for test, name in _KINDS if test(mode)), "a special file")
    return (
        f"this is {kind}, not a regular file; workflows are read only from regular files, "
        "since reading a device or a pipe may never end"
    )


def _too_large(size: int, limits: WorkflowLimits) -> str:
    return (
        f"the file is {size:,} bytes, over the limit of {limits.max_file_bytes:,} "
        f"{limit_hint('max_file_bytes')}"
    )


def _os_problem(path: Path, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        if path.is_symlink():
            return "the file is a symbolic link to a file that does not exist"
        return "the file does not exist; check the path"
    if isinstance(exc, IsADirectoryError):
        return "this is a folder, not a workflow file; give the path of a .yaml, .yml or .json file"
    if isinstance(exc, PermissionError):
        return "the file cannot be read (permission denied)"
    return f"the file cannot be read ({exc.strerror or exc})"


_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)  # opening a FIFO must not wait for a writer
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def _read_bytes(path: Path, label: str, limits: WorkflowLimits) -> bytes:
    """The file's bytes, if it is a regular file within the size limit.

    `stat` first, so a device is refused without being opened (opening some has effects);
    then open without blocking and check the opened file again with `fstat`, since the path
    may have been swapped in between; then read at most one byte past the limit, since a
    file may grow (or a size may lie) after the check.
    """
    try:
        problem = _not_regular(os.stat(path).st_mode)
        if problem is None:
            fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise WorkflowFileError(label, [_os_problem(path, exc)]) from None
    if problem is not None:
        raise WorkflowFileError(label, [problem])
    try:
        info = os.fstat(fd)
        problem = _not_regular(info.st_mode)
        if problem is None and info.st_size > limits.max_file_bytes:
            problem = _too_large(info.st_size, limits)
        if problem is not None:
            raise WorkflowFileError(label, [problem])
        chunks: list[bytes] = []
        left = limits.max_file_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise WorkflowFileError(label, [_os_problem(path, exc)]) from None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if len(raw) > limits.max_file_bytes:
        raise WorkflowFileError(label, [_too_large(len(raw), limits)])
    return raw


def _read_text(path: Path, label: str, limits: WorkflowLimits) -> str:
    """The file as text; every way reading can fail becomes a WorkflowFileError."""
    raw = _read_bytes(path, label, limits)
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


_gc_lock = threading.Lock()
_gc_holders = 0
_gc_was_enabled = False


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a file is parsed and validated.

    Composing and validating a large file allocates millions of container objects, and each
    allocation burst triggers collections that walk the whole heap: on Python 3.11 that made
    a 20,000-step file 5x slower than with collection off, growing faster than the file. The
    values built here hold no reference cycles (alias loops are refused), so nothing is missed;
    collection resumes when the last concurrent load ends.
    """
    global _gc_holders, _gc_was_enabled
    with _gc_lock:
        if _gc_holders == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_holders += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if _gc_holders == 0 and _gc_was_enabled:
                gc.enable()


def _load_text(
    text: str, label: str, fmt: Literal["yaml", "json"], limits: WorkflowLimits
) -> LoadedFile:
    if not text.strip():
        raise WorkflowFileError(label, [f"{format_location((), 1, 1)}: {_EMPTY}"])
    with _gc_paused():
        return _check(text, label, fmt, limits)


def _check(
    text: str, label: str, fmt: Literal["yaml", "json"], limits: WorkflowLimits
) -> LoadedFile:
    parsed = _parse_json(text, limits) if fmt == "json" else _parse_yaml(text, limits)
    if isinstance(parsed, str):
        raise WorkflowFileError(label, [parsed])
    data, locator, found = parsed
    problems = [locator.tree_problem(p) for p in found]
    if any(p.fatal for p in found):
        _fail(label, problems)  # past a limit: validating would cost what the limit prevents

    if not isinstance(data, dict):
        root = locator.root
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

    steps = data.get("steps")
    if isinstance(steps, list) and len(steps) > limits.max_steps:
        too_many = (
            f"the workflow has {len(steps):,} steps, over the limit of {limits.max_steps:,} "
            f"{limit_hint('max_steps')}"
        )
        _fail(label, [*problems, locator.at(("steps",), too_many)])

    workflow: Workflow | None = None
    checked: list[_Problem] = []
    try:
        workflow = Workflow.model_validate(data)
    except ValidationError as exc:
        checked += _validation_problems(exc, locator)
    except RecursionError:
        checked.append(_Problem(None, "the file nests too deeply (or an alias refers to itself)"))
    checked += _dag_problems(workflow, data, locator)
    checked += _input_problems(_inputs_of(workflow, data), locator)
    # A place the reader already reported (a NaN, a duplicate key) gets one message, not two.
    read = {p.loc for p in found}
    problems += [p for p in checked if p.loc is None or p.loc not in read]
    if problems or workflow is None:
        _fail(label, problems)
    line, column = locator.position(("id",)) if fmt == "yaml" else (None, None)
    return LoadedFile(workflow, line, column)


def _fail(label: str, problems: list[_Problem]) -> NoReturn:
    problems.sort(key=lambda p: p.order)
    shown = problems[:MAX_SHOWN]
    more = len(problems) - len(shown)
    raise WorkflowFileError(label, [p.render() for p in shown], more=more)


def _parse_yaml(text: str, limits: WorkflowLimits) -> tuple[Any, _Locator, list[TreeProblem]] | str:
    """Compose once (for positions), then build values from that tree."""
    try:
        loader = _Composer(text)  # the pure-Python reader rejects control characters here
    except yaml.reader.ReaderError as exc:
        return _reader_error_message(exc, text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        return _yaml_error_message(exc)
    except yaml.reader.ReaderError as exc:
        return _reader_error_message(exc, text)
    except yaml.YAMLError as exc:
        return f"not valid YAML: {str(exc)[:300]}"
    except UnicodeEncodeError as exc:  # a lone surrogate in text handed to load_workflow_text
        return f"{_offset_location(text, exc.start)}: the text holds a lone surrogate character"
    except RecursionError:
        return "the file nests too deeply to read"
    finally:
        loader.dispose()
    if root is None:
        return None, _Locator(None), []
    data, found = build_yaml(root, limits)
    return data, _Locator(root), found


def _parse_json(text: str, limits: WorkflowLimits) -> tuple[Any, _Locator, list[TreeProblem]] | str:
    """Values from `json` (exact JSON semantics); positions from the YAML composer, on demand.

    JSON is nearly YAML; tabs are the common exception (YAML forbids them as indentation), and
    since JSON forbids raw tabs inside strings, swapping them for spaces keeps every column. If
    composing still fails, problems are reported by path alone.
    """
    duplicates: dict[int, list[str]] = {}

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(items)
        if len(obj) != len(items):
            seen: set[str] = set()
            duplicates[id(obj)] = [k for k, _ in items if k in seen or seen.add(k)]
        return obj

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        where = format_location((), exc.lineno, exc.colno)
        return f"{where}: not valid JSON: {exc.msg}{_json_hint(exc.msg)}"
    except RecursionError:
        return _json_too_deep(text, limits)
    except ValueError:  # a number with more digits than int() accepts
        long_number = re.search(r"\d{4000,}", text)
        where = _offset_location(text, long_number.start()) if long_number else "top level"
        digits = f"{len(long_number.group()):,} digits" if long_number else "too many digits"
        return f"{where}: this number has {digits}, more than can be read; quote it if it is text"
    found = check_json(data, limits, duplicates)
    return data, _Locator(lambda: _compose_quietly(text.replace("\t", " "))), found


def _compose_quietly(text: str) -> yaml.Node | None:
    """The node tree of `text`, or None if YAML cannot compose it (only positions are lost)."""
    try:
        loader = _Composer(text)
        try:
            return loader.get_single_node()  # type: ignore[no-any-return]
        finally:
            loader.dispose()
    except (yaml.YAMLError, RecursionError, UnicodeEncodeError):
        return None


def _json_too_deep(text: str, limits: WorkflowLimits) -> str:
    """Where JSON nests past the depth limit; only called once `json` gave up on the depth."""
    depth = 0
    for match in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limits.max_depth:
                where = _offset_location(text, match.start())
                return (
                    f"{where}: the file nests lists and objects deeper than {limits.max_depth} "
                    f"levels here {limit_hint('max_depth')}"
                )
        elif token in "]}":
            depth -= 1
    return "the file nests lists and objects too deeply to read"


def _offset_location(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return format_location((), line, column)


_YAML_HINTS = (
    ("'\\t'", "YAML does not allow tabs for indentation; indent with spaces"),
    ("tab character", "YAML does not allow tabs for indentation; indent with spaces"),
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
    ("did not find expected key", "this line's indentation does not line up with the lines above"),
    ("undefined alias", "an alias (*name) refers to an anchor (&name) that is not defined"),
    (
        "exceeded maximum nesting depth",
        "YAML readers stop at 1,000 levels of nesting; flatten the file",
    ),
)

_LIBYAML_WORDING = {
    # libyaml says the same things as the Python parser in other words; one wording for both.
    "mapping values are not allowed in this context": "mapping values are not allowed here",
}


_UNCLOSED = {
    "while scanning a quoted scalar": "quoted string",
    "while parsing a flow sequence": "[list]",
    "while parsing a flow mapping": "{mapping}",
}


def _yaml_error_message(exc: yaml.MarkedYAMLError) -> str:
    problem = exc.problem or exc.context or "unreadable YAML"
    problem = _LIBYAML_WORDING.get(problem, problem)
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
    if _Composer is not yaml.SafeLoader:  # libyaml counts UTF-8 bytes, not characters
        position = len(text.encode("utf-8", "surrogatepass")[:position].decode("utf-8", "ignore"))
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


_Pair = tuple[yaml.Node, yaml.Node]


class _Locator:
    """Finds the node at a pydantic `loc` in the node tree, in time independent of file size.

    Each mapping's keys are indexed the first time a path goes through it, so locating every
    one of 50,000 problems costs 50,000 short walks, not 50,000 scans of long mappings. For
    JSON the tree is composed only when the first position is asked for.
    """

    def __init__(self, root: yaml.Node | Callable[[], yaml.Node | None] | None) -> None:
        self._root = root
        self._keys: dict[int, tuple[dict[str, _Pair], list[yaml.Node]]] = {}

    @property
    def root(self) -> yaml.Node | None:
        if callable(self._root):
            self._root = self._root()
        return self._root

    def node(self, loc: Sequence[str | int], *, key: bool = False) -> yaml.Node | None:
        """The node at `loc`, or the deepest node on the way if the path leaves the tree.

        Stopping at the deepest node is what makes a missing field point at its parent
        mapping. With `key`, a final mapping key returns the key's node (for "unknown field").
        """
        node = self.root
        if node is None:
            return None
        for n, part in enumerate(loc):
            if isinstance(node, yaml.MappingNode):
                found = self._find(node, str(part))
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

    def _find(self, mapping: yaml.MappingNode, name: str) -> _Pair | None:
        own, merged = self._index(mapping)
        if name in own:
            return own[name]
        for source in merged:  # a key that only comes from a `<<: *anchor` lives there
            if isinstance(source, yaml.MappingNode) and name in self._index(source)[0]:
                return self._index(source)[0][name]
        return None

    def _index(self, mapping: yaml.MappingNode) -> tuple[dict[str, _Pair], list[yaml.Node]]:
        entry = self._keys.get(id(mapping))
        if entry is None:
            own: dict[str, _Pair] = {}
            merged: list[yaml.Node] = []
            for key_node, value_node in mapping.value:  # the last of duplicated keys wins
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                if key_node.tag == MERGE:
                    sources = (
                        value_node.value
                        if isinstance(value_node, yaml.SequenceNode)
                        else [value_node]
                    )
                    merged[:0] = sources
                else:
                    own[key_node.value] = (key_node, value_node)
            entry = self._keys[id(mapping)] = (own, merged)
        return entry

    def position(
        self, loc: Sequence[str | int], *, key: bool = False
    ) -> tuple[int | None, int | None]:
        return _position(self.node(loc, key=key))

    def at(self, loc: Loc, text: str, hint: Callable[[], str] | None = None) -> _Problem:
        """A problem about the value at `loc`."""
        line, column = self.position(loc)
        return _Problem(line, f"{format_location(loc, line, column)}: {text}", column, hint, loc)

    def tree_problem(self, problem: TreeProblem) -> _Problem:
        if problem.node is None:
            return self.at(problem.loc, problem.text)
        line, column = _position(problem.node)
        where = format_location(problem.loc, line, column)
        return _Problem(line, f"{where}: {problem.text}", column, loc=problem.loc)


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


def _validation_problems(exc: ValidationError, locator: _Locator) -> list[_Problem]:
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
            problems.append(_located(locator, err, clean, required_typo=clean in typo_of_missing))
            continue
        prefix = item
        group = union_groups[prefix]
        # An error inside a member (command[1] is not a string) shows what was meant; prefer it.
        deeper = [(e, c) for e, c in group if len(c) > len(prefix)]
        if deeper:
            problems.extend(_located(locator, e, c) for e, c in deeper)
            continue
        value = group[0][0].get("input")
        wanted = " or ".join(dict.fromkeys(_expected_kind(e) for e, _c in group))
        text = f"expected {wanted}, got {describe_value(value)}"
        parent = _model_at(prefix[:-1])
        field = parent.model_fields.get(str(prefix[-1])) if parent and prefix else None
        if field is not None and field.description:
            text += f" ({prefix[-1]}: {field.description})"
        problems.append(locator.at(prefix, text))
    return problems


def _singles(order: list[tuple[str, Any]]) -> list[tuple[str, tuple[ErrorDetails, Loc]]]:
    return [(kind, item) for kind, item in order if kind == "one"]


def _suggest_field(loc: Loc) -> str | None:
    """The allowed field closest to the unknown key at the end of `loc`, if any is close."""
    model = _model_at(loc[:-1])
    if model is None:
        return None
    word = str(loc[-1])
    close = difflib.get_close_matches(word, list(model.model_fields), n=3, cutoff=0.6)
    if not close:
        return None
    # Equal scores are common (`retries` is as close to `retry` as to `triggers`); difflib then
    # prefers the name that sorts last, so let the longer shared beginning decide instead.
    best = difflib.SequenceMatcher(None, word, close[0]).ratio()
    tied = [c for c in close if difflib.SequenceMatcher(None, word, c).ratio() == best]
    return max(tied, key=lambda c: _shared_start(word, c))


def _shared_start(a: str, b: str) -> int:
    """How many leading characters two names share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _located(
    locator: _Locator, err: ErrorDetails, loc: Loc, *, required_typo: bool = False
) -> _Problem:
    kind = err["type"]
    if kind == "missing":
        node = locator.node(loc)
        shown: Loc = loc[:-1]
    else:
        node = locator.node(loc, key=kind == "extra_forbidden")
        shown = loc
    line, column = _position(node)
    text = _error_text(err, loc, required_typo=required_typo)
    return _Problem(line, f"{format_location(shown, line, column)}: {text}", column, loc=loc)


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
        return f"{short(value)} is not allowed here; use one of {', '.join(options)}{hint}"
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == IDENT_PATTERN:
            return (
                f"{short(value)} is not a valid id; use letters, digits, `_`, `.` and `-`, "
                "starting with a letter or digit"
            )
        if name == "python":
            return (
                f"{short(value)} is not a function reference; write it as package.module:function"
            )
        return f"{short(value)} does not have the expected form ({ctx.get('pattern')})"
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
        return f"{short(value)} is {words} {ctx.get(key)}"
    if kind == "recursion_loop":
        return "this value refers to itself through a YAML alias; write it out instead"
    return _clean_msg(err["msg"])


_DAG_HINTS = (
    ("depends on itself", "; remove it from depends_on"),
    ("used twice", "; give each step its own id"),
    (
        "dependency cycle",
        "; no step can wait for itself, so remove one depends_on entry on this path",
    ),
)


def _dag_problems(
    workflow: Workflow | None, data: dict[str, Any], locator: _Locator
) -> list[_Problem]:
    """The DAG's problems; from the raw steps when the schema failed, so both come in one pass."""
    if workflow is not None:
        ids: list[str | None] = [s.id for s in workflow.steps]
        found = validate_dag(workflow)
    else:
        ids, depends_on = _raw_steps(data)
        found = check_dag(ids, depends_on)
    if not found:
        return []
    nearest = _Nearest(ids)
    problems = []
    for problem in found:
        loc = tuple(problem.loc)
        text = problem.message
        hint: Callable[[], str] | None = None
        if "unknown step" in text and len(loc) == 4:
            dep = _raw_dependency(workflow, data, loc)
            hint = lambda dep=dep: nearest.hint(dep)  # noqa: E731
        else:
            text += next((h for needle, h in _DAG_HINTS if needle in text), "")
        problems.append(locator.at(loc, text, hint))
    return problems


def _raw_steps(data: dict[str, Any]) -> tuple[list[str | None], list[list[str | None]]]:
    """Step ids and dependencies as written; None where the value is not even a string."""
    steps = data.get("steps")
    ids: list[str | None] = []
    depends_on: list[list[str | None]] = []
    for step in steps if isinstance(steps, list) else ():
        if not isinstance(step, dict):
            ids.append(None)
            depends_on.append([])
            continue
        step_id = step.get("id")
        ids.append(step_id if isinstance(step_id, str) else None)
        deps = step.get("depends_on")
        depends_on.append(
            [d if isinstance(d, str) else None for d in deps] if isinstance(deps, list) else []
        )
    return ids, depends_on


def _raw_dependency(workflow: Workflow | None, data: dict[str, Any], loc: Loc) -> str:
    _steps, i, _deps, j = loc
    if workflow is not None:
        return workflow.steps[int(i)].depends_on[int(j)]
    return str(data["steps"][int(i)]["depends_on"][int(j)])


class _Nearest:
    """Did-you-mean for unknown dependencies, in bounded time per question.

    `difflib` compares the word with every candidate, which for 50,000 steps takes up to a
    second per question. Above `FULL_SCAN` candidates only the step ids next to the word in
    sorted order, forwards and backwards, are compared: a typo keeps most of a name's
    beginning or most of its end, which puts the intended name among those neighbours.
    """

    FULL_SCAN = 1000
    NEIGHBOURS = 100

    def __init__(self, ids: Sequence[str | None]) -> None:
        self._ids = ids
        self._forward: list[str] | None = None
        self._backward: list[str] = []

    def matches(self, word: str) -> list[str]:
        if self._forward is None:
            self._forward = sorted({i for i in self._ids if i is not None})
            if len(self._forward) > self.FULL_SCAN:
                self._backward = sorted(i[::-1] for i in self._forward)
        if len(self._forward) <= self.FULL_SCAN:
            candidates = self._forward
        else:
            candidates = self._around(self._forward, word)
            candidates += [c[::-1] for c in self._around(self._backward, word[::-1])]
        return difflib.get_close_matches(word, dict.fromkeys(candidates), n=3)

    def _around(self, names: list[str], word: str) -> list[str]:
        at = bisect.bisect_left(names, word)
        return names[max(0, at - self.NEIGHBOURS) : at + self.NEIGHBOURS]

    def hint(self, word: str) -> str:
        close = self.matches(word)
        if not close:
            return "; fix the name or add that step"
        if len(close) == 1:
            return f"; did you mean {close[0]!r}?"
        return f"; did you mean {', '.join(map(repr, close[:-1]))} or {close[-1]!r}?"


_INPUTS: TypeAdapter[dict[str, InputSpec]] = TypeAdapter(dict[str, InputSpec])


def _inputs_of(workflow: Workflow | None, data: dict[str, Any]) -> dict[str, InputSpec] | None:
    """The declared inputs, also when another part of the file failed validation."""
    if workflow is not None:
        return workflow.inputs
    try:
        return _INPUTS.validate_python(data.get("inputs", {}))
    except ValidationError:
        return None  # reported by the schema already


def _listing(values: Sequence[Any], limit: int = 10) -> str:
    shown = ", ".join(short(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit:,} more" if len(values) > limit else "")


def _input_problems(inputs: dict[str, InputSpec] | None, locator: _Locator) -> list[_Problem]:
    """Defaults and choices that contradict the input's declared type (pydantic allows Any)."""
    problems: list[_Problem] = []
    for name, spec in (inputs or {}).items():
        base: Loc = ("inputs", name)
        declared = f"`type: {spec.type}`"
        if spec.default is not None and not fits_type(spec.type, spec.default):
            problems.append(
                locator.at(
                    (*base, "default"),
                    f"the default {short(spec.default)} is {kind_of(spec.default)}, which does "
                    f"not match {declared}; "
                    f"write {expected_text(spec.type)}, or change the type",
                )
            )
        if spec.choices is None:
            continue
        if not spec.choices:
            problems.append(
                locator.at(
                    (*base, "choices"),
                    "choices is empty; list the allowed values or remove it",
                )
            )
            continue
        for k, choice in enumerate(spec.choices):
            if not fits_type(spec.type, choice):
                problems.append(
                    locator.at(
                        (*base, "choices", k),
                        f"the choice {short(choice)} is {kind_of(choice)}, which does not match "
                        f"{declared}; "
                        f"write {expected_text(spec.type)}, or change the type",
                    )
                )
        if spec.default is not None and spec.default not in spec.choices:
            problems.append(
                locator.at(
                    (*base, "default"),
                    f"the default {short(spec.default)} is not one of the choices "
                    f"({_listing(spec.choices)}); add it to choices or pick one",
                )
            )
    return problems
