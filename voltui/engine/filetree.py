"""A parsed workflow file turned into plain values, in one pass that checks every bound.

PyYAML's own constructor recurses as deep as the file goes (RecursionError), expands nothing
but checks nothing either (a "billion laughs" alias bomb sails through until the run is
stored), raises bare ValueErrors and KeyErrors on some scalars (`2024-13-45`, a 5,000-digit
number, `!!bool maybe`) and, on a large file, spends most of its time in bookkeeping.
`build_yaml` replaces it for workflow files: one walk over the composed node tree, never deeper
than the depth limit, that builds the same values (YAML 1.1 scalars, merge keys, shared
aliases) about three times faster and, on the way, reports duplicate keys, non-finite numbers,
unsupported tags, overlong text, too-deep nesting and alias expansion past the limits, each at
its node.
`check_json` does the same checks on values `json.loads` built.

Problems come back as `TreeProblem`s; a `fatal` one (a limit) means the values must not be
validated further, because doing so would cost what the limit exists to prevent.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from voltui.engine.limits import WorkflowLimits

Loc = tuple[str | int, ...]

_T = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = _T + "str", _T + "int", _T + "float", _T + "bool", _T + "null"
TIMESTAMP, SEQ, MAP, MERGE = _T + "timestamp", _T + "seq", _T + "map", _T + "merge"

_PLAIN = "voltui reads plain values (text, numbers, true/false, null, lists and mappings)"


@dataclass(slots=True)
class TreeProblem:
    """One problem found while building values; `node` (if any) gives its position."""

    loc: Loc
    text: str
    node: Node | None = field(default=None, repr=False)  # its repr is the whole subtree
    fatal: bool = False


def short(value: Any, limit: int = 60) -> str:
    """`repr` of a value cut to `limit` characters, so no message grows with the file."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def limit_hint(name: str) -> str:
    return f"(limits.{name}); raise it under [limits] in voltui.toml if the file is right"


def too_long_text(length: int, limits: WorkflowLimits) -> str:
    return (
        f"this text is {length:,} characters long, over the limit of "
        f"{limits.max_string_length:,} {limit_hint('max_string_length')}"
    )


def too_deep_text(limits: WorkflowLimits) -> str:
    return (
        f"the file nests lists and mappings deeper than {limits.max_depth} levels here "
        f"{limit_hint('max_depth')}"
    )


def not_finite_text(written: str) -> str:
    return (
        f"{written} is not a finite number; NaN and infinity are not allowed, so write an "
        "ordinary number (or leave the field out)"
    )


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if value is None:
        return "null"
    return f"the {type(value).__name__} {short(value)}"


# --------------------------------------------------------------------------- YAML


Where = tuple[Any, ...] | None
"""A place as a linked list `(parent, key)`: two words per value instead of a whole `loc`."""


def loc_of(path: Where) -> Loc:
    parts: list[str | int] = []
    while path is not None:
        path, part = path
        parts.append(part)
    return tuple(reversed(parts))


def build_yaml(root: Node, limits: WorkflowLimits) -> tuple[Any, list[TreeProblem]]:
    """The values of the node tree `root`, and every problem met while building them.

    Shared nodes (anchors and aliases) become shared values, as with PyYAML; their expanded
    size and depth still count against the limits, so an alias bomb is caught without being
    expanded. A node that contains itself through an alias is a problem, not a loop. The walk
    recurses, but never deeper than `limits.max_depth` (at most 200), so it cannot exhaust the
    stack whatever the file holds.
    """
    return _Builder(limits).build(root)


class _Builder:
    """One walk over a node tree; see `build_yaml`."""

    def __init__(self, limits: WorkflowLimits) -> None:
        self.limits = limits
        self.max_depth = limits.max_depth
        self.max_str = limits.max_string_length
        self.max_values = limits.max_values
        self.constructor = SafeConstructor()
        self.problems: list[TreeProblem] = []
        self.memo: dict[int, tuple[Any, int, int]] = {}  # id(container) -> value, height, size
        self.active: set[int] = set()  # containers being built: meeting one again is a loop
        self.count = 1  # values so far, aliases expanded; a container counts its children
        self.deepest = 0  # deepest level reached so far in the container being built
        self.too_deep = False

    def build(self, root: Node) -> tuple[Any, list[TreeProblem]]:
        try:
            value = self.value(root, None, 1)
        except _TooMany:
            value = None
        return value, self.problems

    def value(self, node: Node, path: Where, depth: int) -> Any:
        kind = type(node)
        if kind is ScalarNode:
            return self.scalar(node, path)
        key = id(node)
        cached = self.memo.get(key)
        if cached is not None:  # an alias: reuse the value, but count what it expands to
            value, height, size = cached
            self.count += size - 1  # the value itself was counted by its container
            if self.count > self.max_values:
                self.problem(
                    path,
                    "YAML aliases here expand the file to more than "
                    f"{self.max_values:,} values, more than a file within "
                    "limits.max_file_bytes could hold; write the values out, or use fewer "
                    "nested aliases",
                    node,
                    fatal=True,
                )
                raise _TooMany
            reach = depth + height - 1
            if reach > self.max_depth:
                self.depth_problem(path, node)
            elif reach > self.deepest:
                self.deepest = reach
            return value
        if key in self.active:
            self.problem(
                path,
                "this value contains an alias to itself, so it never ends; write the value "
                "out instead of the alias",
                node,
                fatal=True,
            )
            return None
        if depth > self.max_depth:
            self.depth_problem(path, node)
            return None
        if node.tag != (SEQ if kind is SequenceNode else MAP):
            self.problem(path, _tag_text(node.tag), node)
            return None
        self.active.add(key)
        before, outer = self.count, self.deepest
        self.deepest = depth + 1 if node.value else depth
        child = depth + 1
        if kind is SequenceNode:
            self.count += len(node.value)
            value = [
                item.value
                if type(item) is ScalarNode and item.tag == STR and len(item.value) <= self.max_str
                else self.value(item, (path, i), child)
                for i, item in enumerate(node.value)
            ]
        else:
            value = self.mapping(node, path, child)
        height = self.deepest - depth + 1
        self.memo[key] = (value, height, self.count - before + 1)
        self.active.discard(key)
        self.deepest = max(outer, self.deepest)
        return value

    def mapping(self, node: MappingNode, path: Where, child: int) -> dict[Any, Any]:
        """Pairs to a dict: the last of duplicated keys wins (as in YAML), merges fill gaps."""
        result: dict[Any, Any] = {}
        merges: list[dict[Any, Any]] = []
        first: dict[Any, Node] | None = None
        pairs = node.value
        max_str = self.max_str
        self.count += 2 * len(pairs)
        for key_node, value_node in pairs:
            plain_key = type(key_node) is ScalarNode
            name = key_node.value if plain_key else "?"
            where = (path, name)
            if plain_key and key_node.tag == STR and len(name) <= max_str:
                key: Any = name
            elif plain_key and key_node.tag == MERGE:
                value = self.value(value_node, where, child)
                sources = value if isinstance(value, list) else [value]
                if all(isinstance(s, dict) for s in sources):
                    merges[:0] = sources  # earlier `<<` entries take precedence over later
                else:
                    self.problem(
                        where,
                        "`<<` merges a mapping (or a list of mappings) into this one, but "
                        f"here it is given {_kind(value)}",
                        key_node,
                    )
                continue
            else:
                key = self.value(key_node, where, child)
            if (
                type(value_node) is ScalarNode
                and value_node.tag == STR
                and len(value_node.value) <= max_str
            ):
                value = value_node.value
            else:
                value = self.value(value_node, where, child)
            try:
                seen = key in result
            except TypeError:
                self.problem(
                    path, f"a key must be a plain value such as text, not {_kind(key)}", key_node
                )
                continue
            if seen:
                if first is None:  # built once, on the first duplicate: 50,000 cost one pass
                    first = self.first_keys(pairs)
                earlier = first[key].start_mark.line + 1 if key in first else "?"
                self.problem(
                    where,
                    f"key `{short(name)[1:-1]}` appears twice in this mapping (first at line "
                    f"{earlier}); YAML would silently keep only the last one, so remove or "
                    "rename one of them",
                    key_node,
                )
            result[key] = value
        if not merges:
            return result
        merged: dict[Any, Any] = {}
        for source in reversed(merges):
            merged.update(source)
        merged.update(result)
        return merged

    def first_keys(self, pairs: list[tuple[Node, Node]]) -> dict[Any, Node]:
        first: dict[Any, Node] = {}
        for key_node, _value_node in pairs:
            if type(key_node) is ScalarNode and key_node.tag == STR:
                first.setdefault(key_node.value, key_node)
            elif type(key_node) is ScalarNode:
                try:
                    first.setdefault(self.constructor.construct_object(key_node), key_node)
                except Exception:  # a key that cannot be read was reported already
                    continue
        return first

    def scalar(self, node: ScalarNode, path: Where) -> Any:
        text = node.value
        if len(text) > self.max_str:
            self.problem(path, too_long_text(len(text), self.limits), node, fatal=True)
            return ""
        tag = node.tag
        if tag == STR or tag == MERGE:  # a merge key (`<<`) is resolved by its mapping
            return text
        constructor = self.constructor
        try:
            if tag == INT:
                return constructor.construct_yaml_int(node)
            if tag == FLOAT:
                number = constructor.construct_yaml_float(node)
                if not math.isfinite(number):
                    self.problem(path, not_finite_text(text), node)
                return number
            if tag == BOOL:
                return constructor.construct_yaml_bool(node)
            if tag == NULL:
                return None
            if tag == TIMESTAMP:
                return constructor.construct_yaml_timestamp(node)
        except (ValueError, OverflowError, LookupError, AttributeError, TypeError) as exc:
            # ValueError: 2024-13-45, a 5,000-digit number; the rest: an explicit tag on text
            # that is not of its kind (`!!bool maybe`, `!!timestamp x`, `!!int ""`).
            self.problem(path, _bad_scalar_text(tag, text, exc), node)
            return None
        self.problem(path, _tag_text(tag), node)
        return None

    def depth_problem(self, path: Where, node: Node) -> None:
        if not self.too_deep:  # the first place says it; the rest would repeat it
            self.too_deep = True
            self.problem(path, too_deep_text(self.limits), node, fatal=True)

    def problem(self, path: Where, text: str, node: Node, *, fatal: bool = False) -> None:
        self.problems.append(TreeProblem(loc_of(path), text, node, fatal))


class _TooMany(Exception):
    """Alias expansion passed the limit: stop building at once."""


def _tag_text(tag: str) -> str:
    shown = "!!" + tag.removeprefix(_T) if tag.startswith(_T) else tag
    return f"the tag {short(shown)[1:-1]} is not supported; {_PLAIN}, so remove the tag"


def _bad_scalar_text(tag: str, text: str, exc: Exception) -> str:
    if tag == INT and len(text) > sys.get_int_max_str_digits():
        return (
            f"this number has {len(text):,} digits, more than can be read; quote it if it is text"
        )
    if tag == TIMESTAMP and isinstance(exc, ValueError):
        return (
            f"{short(text)} looks like a date but is not a valid one ({exc}); "
            "quote it if it is text"
        )
    kind = {INT: "a whole number", FLOAT: "a number", BOOL: "true or false"}.get(tag, "a date")
    return f"{short(text)} cannot be read as {kind}; remove the tag or fix the value"


# --------------------------------------------------------------------------- JSON


def check_json(
    data: Any, limits: WorkflowLimits, duplicates: dict[int, list[str]]
) -> list[TreeProblem]:
    """The checks `build_yaml` makes, on values `json.loads` built (which has no aliases).

    `duplicates` maps `id(dict)` to the keys that object repeated (from `object_pairs_hook`).
    Also catches strings holding lone surrogates (from `\\ud800` escapes), which no terminal,
    JSON encoder or SQLite column would take later.
    """
    problems: list[TreeProblem] = []
    max_depth, max_str = limits.max_depth, limits.max_string_length
    stack: list[tuple[Any, Loc, int]] = [(data, (), 1)]
    while stack:
        value, loc, depth = stack.pop()
        if isinstance(value, str):
            _check_json_text(value, loc, limits, problems)
        elif isinstance(value, float):
            if not math.isfinite(value):
                written = "NaN" if math.isnan(value) else "-Infinity" if value < 0 else "Infinity"
                problems.append(TreeProblem(loc, not_finite_text(written)))
        elif isinstance(value, list | dict):
            if depth > max_depth:
                problems.append(TreeProblem(loc, too_deep_text(limits), fatal=True))
                return problems
            if isinstance(value, list):
                stack.extend((item, (*loc, i), depth + 1) for i, item in enumerate(value))
                continue
            for key in duplicates.get(id(value), ()):
                problems.append(
                    TreeProblem(
                        (*loc, key),
                        f"key {short(key)} appears twice in this object; JSON readers keep "
                        "only the last one, so remove or rename one of them",
                    )
                )
            for key, item in value.items():
                if len(key) > max_str:
                    problems.append(TreeProblem(loc, too_long_text(len(key), limits), fatal=True))
                    continue
                _check_json_text(key, loc, limits, problems)
                stack.append((item, (*loc, key), depth + 1))
    return problems


def _check_json_text(
    text: str, loc: Loc, limits: WorkflowLimits, problems: list[TreeProblem]
) -> None:
    if len(text) > limits.max_string_length:
        problems.append(TreeProblem(loc, too_long_text(len(text), limits), fatal=True))
    elif not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            problems.append(
                TreeProblem(
                    loc,
                    f"this text holds the escape \\u{ord(text[exc.start]):04x}, half of a "
                    "surrogate pair that is not a character; remove it",
                )
            )
