"""The selected run's DAG: steps grouped by dependency level, each with a state symbol, its
duration, agent and edges (`← b, c` for a fan-in, `→ 8` for a fan-out; nothing for a plain
chain), or (`v`) a compact grid of one cell per step.

A run may have thousands of steps, so the panel is a Line API widget (`ScrollView` +
`render_line`, as Textual's `Log` and `DataTable` and toolong's `LogLines`): it keeps a list of
row references and renders only the rows on screen, from the live `StepView`s. A 5,000-step run
costs a repaint what 30 rows cost. Each level has a summary line with its counts
(`▾ L3  ▶ 3 ✗ 1 ✓ 41 / 782`); a level of more than `FOLD_AT` steps starts folded, and a folded
level lists under its summary only the steps that need attention (failed, retrying, running).

The counts follow the run at the cost of what changed: the fold records the steps whose state
changed (`RunView.changed_steps`) and the panel adjusts its per-level counts for those alone.

A map step (dynamic fan-out) is one row whose note counts its children (`▸ ▶ 3 ✓ 41 ✗ 1 / 50`);
`enter` opens it (`▾`) into one row per child `ID[i]` under it (state, duration, attempt, agent,
last line or error), and `enter` on a child opens that child's log and attempts. Child rows are
row references like the others, built into text only while on screen, from the views the fold
keeps in `RunView.children`: a map of thousands costs a repaint what its visible rows cost.

Keys (on the focused panel): `j`/`k`/arrows move the cursor over levels, steps and children,
`g`/`G` and `Home`/`End` to the first and last row, `enter` opens the step (its log and
attempts), opens or folds a level or a map step, `l`/`h` (or right/left) open and fold the map
step under the cursor or else the cursor's level, `n`/`N` go to the next/previous failed step
and `a`/`A` to the next/previous active (running or retrying) one, children of an open map
step included.

Symbols carry the meaning so the panel reads without colour (NO_COLOR, screenshots, logs):
✓ succeeded, ✗ failed, ▶ running, ↻ retrying, … waiting, · pending, an en dash skipped,
■ cancelled, ◆ cached.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.visual import Visual

from voltui.engine.durations import format_duration
from voltui.engine.models import StepState
from voltui.safetext import clean
from voltui.states import look
from voltui.tui.state import RunView, StepView

NO_RUN = "No run selected. Start one with s, or pick one in the runs panel."

SYMBOL: dict[StepState, tuple[str, str]] = {
    state: (look(state).glyph, look(state).theme_style) for state in StepState
}
"""Glyph and theme style of each step state, from the one table in `voltui.states`."""

LEVEL_ORDER = (
    StepState.RUNNING,
    StepState.RETRYING,
    StepState.FAILED,
    StepState.SUCCEEDED,
    StepState.CACHED,
    StepState.CANCELLED,
    StepState.SKIPPED,
    StepState.WAITING,
    StepState.PENDING,
)
"""Order of the counts on a level's summary line: what needs attention first."""

ATTENTION_RANK = {StepState.FAILED: 0, StepState.RETRYING: 1, StepState.RUNNING: 2}
"""States that put a step under its folded level's summary, failed ones first."""
ACTIVE = frozenset({StepState.RUNNING, StepState.RETRYING})

FOLD_AT = 12
"""A level of more steps than this starts folded (its summary line and its steps in need of
attention); smaller ones start open."""
ATTENTION_ROWS = 5
"""Most steps listed under a folded level; a `… N more` line stands for the rest."""
AGENT_WIDTH = 14
"""Most columns of the agent cell; longer agent ids lose their middle to `…`. The cell is as
wide as the longest agent id seen in the run, up to this."""
ID_WIDTH = 40
"""Most columns of a step id in the level layout."""
STEP_CURSOR_STYLE = ".dag--cursor"
KEYS_HINT = "⏎ open  n failed  a running"
"""The focused panel's subtitle: its keys that are not in the footer."""


def step_symbol(step: StepView) -> tuple[str, str]:
    """The symbol text (with `n/m` for retries) and its theme style."""
    state = StepState(step.state)
    mark, style = SYMBOL[state]
    if state is StepState.RETRYING:
        mark = f"{mark} {step.attempt}/{step.max_attempts}"
    return mark, style


def _duration(step: StepView, now: float | None = None) -> str:
    """`StepView.elapsed`: the engine's attempt duration once finished, the time so far while
    running (one definition for every view)."""
    if step.started_at is None:
        return ""
    return format_duration(step.elapsed(time.time() if now is None else now))


def _note(step: StepView, state: StepState) -> str | None:
    """What a step row says after its agent: the error of a failed step, the retry and its
    error, the run whose result a replay reused, else the last output line."""
    if state is StepState.FAILED:
        return step.error
    if state is StepState.RETRYING:
        return f"retry {step.attempt}/{step.max_attempts}" + (
            f": {step.error}" if step.error else ""
        )
    if step.reused_from and state.ok:
        return f"reused from run {step.reused_from[:12]}"
    return step.last_line


def _group_of(child_id: str) -> str:
    """The map step of a child id: `review` of `review[3]`."""
    return child_id[: child_id.rfind("[")]


def _middle(text: str, width: int) -> str:
    """`text` in at most `width` columns, losing its middle: `transform_a` and `_b` differ."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def _run_header(view: RunView) -> list[Content]:
    run = view.run
    lines = [
        Content.assemble(
            (clean(run.workflow_name or run.workflow_id, max_len=60), "bold"),
            f"  {clean(run.id[:12])}  {run.state}",
        )
    ]
    if run.error:
        lines.append(Content.assemble(("error: ", "$error"), clean(run.error, max_len=200)))
    return lines


def _wrap(cells: Sequence[Content], width: int | None) -> list[Content]:
    """Cells joined by two spaces, on as many lines as `width` needs (a cell is never cut)."""
    lines: list[Content] = []
    line: list[Content] = []
    used = 0
    for cell in cells:
        n = cell.cell_length
        if line and width is not None and used + 2 + n > width:
            lines.append(Content("  ").join(line))
            line, used = [], 0
        used += n + (2 if line else 0)
        line.append(cell)
    if line:
        lines.append(Content("  ").join(line))
    return lines


def _tally_cells(counts: Mapping[StepState, int]) -> list[Content]:
    """`✓ 3 succeeded` for each state some step is in, in `SYMBOL` order: the run's progress at
    a glance, and the legend of the symbols it uses."""
    return [
        Content.assemble((mark, style), f" {counts[state]} {state}")
        for state, (mark, style) in SYMBOL.items()
        if counts.get(state)
    ]


# --------------------------------------------------------------------------- edges

MAX_LISTED = 4
"""Most dependencies named one by one after `←`; more are summarised as `N steps (first…last)`."""

EDGE_ID = 24
"""Characters of a step id named in an edge summary."""


def dag_edges(
    steps: Mapping[str, StepView], levels: Sequence[Sequence[str]]
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The DAG's edges worth drawing: `(parents, children)` of every step, in reading order.

    A dependency already implied by another one is left out (the transitive reduction, as in a
    Hasse diagram): `merge` after `split` and its eight shards, which all follow `split`, shows
    `← 8 steps (shard_0…shard_7)` and `split` shows `→ 8`, not 9 and 9. Dependencies on unknown
    steps and on the step itself are ignored, and a cycle (which the engine would have
    rejected) cannot loop: edges to steps later in reading order count no ancestors.

    Ancestor sets are Python ints used as bitsets over the reading order. Computed once per
    run (not per repaint): tens of milliseconds for 5,000 steps.
    """
    order = [sid for level in levels for sid in level if sid in steps]
    pos = {sid: i for i, sid in enumerate(order)}
    ancestors: dict[str, int] = {}
    parents: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {sid: [] for sid in order}
    for sid in order:
        deps = sorted(
            {d for d in steps[sid].depends_on if d in pos and d != sid}, key=pos.__getitem__
        )
        implied = 0
        for d in deps:
            implied |= ancestors.get(d, 0)
        mine = implied
        direct: list[str] = []
        for d in deps:
            bit = 1 << pos[d]
            mine |= bit
            if not implied & bit:
                direct.append(d)
                children[d].append(sid)
        ancestors[sid] = mine
        parents[sid] = direct
    return parents, children


def _edge_forms(parents: list[str], children: list[str]) -> list[str]:
    """What to write after a step, most informative first: `← a, b` (up to `MAX_LISTED`
    names), `← N steps (a…z)`, and last the bare `← N steps`; each followed by `→ N` for a
    fan-out. Empty when there is nothing to say."""
    fan_out = f"→ {len(children)}" if len(children) > 1 else ""
    n = len(parents)
    ins: list[str] = []
    if n and n <= MAX_LISTED:
        ins.append("← " + ", ".join(clean(p, max_len=EDGE_ID) for p in parents))
    if n > 1:
        first, last = clean(parents[0], max_len=EDGE_ID), clean(parents[-1], max_len=EDGE_ID)
        ins += [f"← {n} steps ({first}…{last})", f"← {n} steps"]
    if not ins:
        return [fan_out] if fan_out else []
    return [f"{i}  {fan_out}" if fan_out else i for i in ins]


def _place_edges(
    forms: list[str], inline_room: int | None, own_room: int | None
) -> tuple[str, str]:
    """`(inline, below)`: the edge text for the step's line or for a line of its own.

    Names beat lines: a form that names the steps goes inline if it fits, else on its own
    line; only when no such form fits anywhere does the bare count (the last form) stand in,
    inline if it fits. `None` rooms are unlimited.
    """

    def fits(form: str, room: int | None) -> bool:
        return room is None or len(form) <= room

    named, bare = (forms[:-1], forms[-1]) if len(forms) > 1 else (forms, "")
    for form in named:
        if fits(form, inline_room):
            return form, ""
    for form in named:
        if fits(form, own_room):
            return "", form
    if bare and fits(bare, inline_room):
        return bare, ""
    return "", bare or forms[-1]


# --------------------------------------------------------------------------- common prefix

COMPACT_ID = 10
"""Characters of a step id shown in a compact cell (longer ids lose their middle to `…`)."""

_SEPARATORS = "_-.:/"


def common_prefix(ids: list[str]) -> str:
    """The prefix all ids share, up to and including its last separator (`step_` of
    `step_001`, `step_002`), so compact cells show only the part that differs."""
    if len(ids) < 2:
        return ""
    lo, hi = min(ids), max(ids)  # the prefix these two share, every id in between shares
    n = 0
    while n < len(lo) and lo[n] == hi[n]:
        n += 1
    prefix = lo[:n]
    cut = max(prefix.rfind(sep) for sep in _SEPARATORS) + 1
    prefix = prefix[:cut]
    return prefix if all(len(i) > len(prefix) for i in ids) else ""


# --------------------------------------------------------------------------- the layout

Row = tuple[str, Any]
"""A row of the body: `("level", depth)`, `("step", step_id)`, `("edge", step_id)` (the edges
of a step on a line of their own), `("more", depth)` (steps of a folded level not listed),
`("child", "review[3]")` (a child of an open map step, under it) or `("grid", line)` (a line
of the compact grid)."""

_SELECTABLE = frozenset({"level", "step", "more", "child"})

CHILD_NOTE_ROOM = 16
"""Columns a child's row keeps for its error or last line: a narrower panel drops the child's
attempt and agent cells (the run detail has them) rather than its error."""
GROUP_OPEN = "▾"
GROUP_SHUT = "▸"
"""Marks a map step's counts: `enter` opens (▸) or folds (▾) the list of its children."""


class DagLayout:
    """What the DAG panel shows of one run, kept up to date at the cost of what changed.

    Holds per-level counts by state, the steps in need of attention per level, the fold state of
    each level and the list of body rows (row references, not text). Nothing here renders a
    row: `row_content` builds the text of one row on demand, for the rows on screen.
    """

    def __init__(self, view: RunView, width: int | None, compact: bool) -> None:
        self.view = view
        self.steps = view.steps
        self.levels: list[list[str]] = [
            [sid for sid in level if sid in view.steps]
            for level in (view.levels or [list(view.steps)])
        ]
        self.width = width
        self.compact = compact
        view.changed_steps.clear()  # everything is looked at now
        self.order: list[str] = [sid for level in self.levels for sid in level]
        self.pos: dict[str, int] = {sid: i for i, sid in enumerate(self.order)}
        self.level_of: dict[str, int] = {
            sid: depth for depth, level in enumerate(self.levels) for sid in level
        }
        self.known: dict[str, StepState] = {}
        self.counts: list[dict[StepState, int]] = [{} for _ in self.levels]
        self.total: dict[StepState, int] = {}
        self.attention: list[dict[str, None]] = [{} for _ in self.levels]
        self.failed: set[str] = set()
        self.active: set[str] = set()
        for sid in self.order:
            self._count(sid, StepState(self.steps[sid].state), +1)
        self.folded: list[bool] = [len(level) > FOLD_AT for level in self.levels]
        self.id_width = min(ID_WIDTH, max((len(clean(s)) for s in self.order), default=1))
        self.agent_width = 1
        for sid in self.order:
            self._see_agent(self.steps[sid])
        self._edges: tuple[dict[str, list[str]], dict[str, list[str]]] | None = None
        self._placed: dict[str, tuple[str, str]] = {}
        self._prefix: str | None = None
        self._cell_id_width: int | None = None
        self._grid: tuple[list[Row], dict[Row, int]] | None = None
        self.blocks: list[list[Row]] = []
        self.rows: list[Row] = []
        self.index: dict[Row, int] = {}
        """Where each selectable row is in `rows` (list layout only)."""
        self.selectable: list[Row] = []
        """Rows the cursor can be on, in order: levels, steps and `more` lines, or (compact)
        every step."""
        self.rank: dict[Row, int] = {}
        """Where each row is in `selectable`."""
        self._dirty_blocks: set[int] = set(range(len(self.levels)))
        self.expanded: dict[str, int] = {}
        """Open map steps, each with the number of child rows listed under it."""
        self.relayout(width)

    # ------------------------------------------------------------------ counts

    def _count(self, sid: str, state: StepState, sign: int) -> None:
        depth = self.level_of[sid]
        counts = self.counts[depth]
        counts[state] = counts.get(state, 0) + sign
        self.total[state] = self.total.get(state, 0) + sign
        attention = self.attention[depth]
        if sign > 0:
            self.known[sid] = state
            if state in ATTENTION_RANK:
                attention[sid] = None
            if state is StepState.FAILED:
                self.failed.add(sid)
            elif state in ACTIVE:
                self.active.add(sid)
        else:
            attention.pop(sid, None)
            self.failed.discard(sid)
            self.active.discard(sid)

    def _see_agent(self, step: StepView) -> bool:
        """Widen the agent cell for this step's agent; whether it grew."""
        if step.agent and len(step.agent) > self.agent_width < AGENT_WIDTH:
            self.agent_width = min(AGENT_WIDTH, len(clean(step.agent, max_len=200)))
            return True
        return False

    def sync(self) -> bool:
        """Take the steps the fold saw change; whether the rows changed (not just their text)."""
        changed = self.view.changed_steps
        if not changed:
            return False
        ids = list(changed)
        changed.clear()
        restructure = False
        wider = False
        for sid in ids:
            old = self.known.get(sid)
            step = self.steps.get(sid)
            if old is None or step is None:
                continue
            listed = self.expanded.get(sid)
            if listed is not None and listed != (step.map_total or 0):
                self.expanded[sid] = step.map_total or 0  # the map's children are known now
                self._dirty_blocks.add(self.level_of[sid])
                restructure = True
            wider |= self._see_agent(step)
            new = StepState(step.state)
            if new is old:
                continue
            self._count(sid, old, -1)
            self._count(sid, new, +1)
            depth = self.level_of[sid]
            if self.folded[depth] and (old in ATTENTION_RANK or new in ATTENTION_RANK):
                self._dirty_blocks.add(depth)
                restructure = True
        if wider:  # edges that fitted after the agent may no longer
            self._placed = {}
            self.relayout(self.width)
            return True
        if restructure:
            self._join()
        return restructure

    # ------------------------------------------------------------------ rows

    def relayout(self, width: int | None) -> None:
        """Every block again (a new width moves edges and re-wraps the grid)."""
        if width != self.width:
            self._placed = {}
        self.width = width
        self._dirty_blocks = set(range(len(self.levels)))
        self._join()

    def set_folded(self, depth: int, folded: bool) -> bool:
        if not 0 <= depth < len(self.levels) or self.folded[depth] == folded:
            return False
        self.folded[depth] = folded
        self._dirty_blocks.add(depth)
        self._join()
        return True

    def _join(self) -> None:
        if self.compact:  # the level blocks wait, still marked, for the way back
            per_line = self.per_line
            lines = (len(self.order) + per_line - 1) // per_line
            self.rows = [("grid", n) for n in range(lines)]
            self.index = {}
            if self._grid is None:
                grid: list[Row] = [("step", sid) for sid in self.order]
                self._grid = (grid, {row: n for n, row in enumerate(grid)})
            self.selectable, self.rank = self._grid
            return
        while len(self.blocks) < len(self.levels):
            self.blocks.append([])
        for depth in self._dirty_blocks:
            self.blocks[depth] = self._block(depth)
        self._dirty_blocks.clear()
        rows: list[Row] = []
        for block in self.blocks:
            rows += block
        self.rows = rows
        self.index = {row: n for n, row in enumerate(rows) if row[0] in _SELECTABLE}
        self.selectable = list(self.index)
        self.rank = {row: n for n, row in enumerate(self.selectable)}

    def _block(self, depth: int) -> list[Row]:
        rows: list[Row] = [("level", depth)]
        expanded = self.expanded
        if self.folded[depth]:
            listed = self.attention_listed(depth)
            for sid in listed:
                rows.append(("step", sid))
                if sid in expanded:
                    rows += self._child_rows(sid)
            if len(self.attention[depth]) > len(listed):
                rows.append(("more", depth))
            return rows
        for sid in self.levels[depth]:
            rows.append(("step", sid))
            if self.edges_of(sid)[1]:
                rows.append(("edge", sid))
            if sid in expanded:
                rows += self._child_rows(sid)
        return rows

    def _child_rows(self, sid: str) -> list[Row]:
        """One row per child of the open map step `sid`, started or not (row references: the
        text of a child is built only while its row is on screen)."""
        return [("child", f"{sid}[{i}]") for i in range(self.expanded[sid])]

    # ------------------------------------------------------------------ map groups

    def is_group(self, sid: str) -> bool:
        """Whether `sid` is a map step whose children can be listed under it."""
        step = self.steps.get(sid)
        return step is not None and step.map_total is not None

    def set_expanded(self, sid: str, expanded: bool) -> bool:
        """Open or fold the list of a map step's children; whether anything changed."""
        if expanded == (sid in self.expanded) or (expanded and not self.is_group(sid)):
            return False
        if expanded:
            self.expanded[sid] = self.steps[sid].map_total or 0
        else:
            del self.expanded[sid]
        self._dirty_blocks.add(self.level_of[sid])
        self._join()
        return True

    def attention_listed(self, depth: int) -> list[str]:
        """The steps listed under folded level `depth`: failed, retrying, then running ones,
        each in workflow order, at most `ATTENTION_ROWS`."""
        steps = self.steps
        pos = self.pos
        ranked = sorted(
            self.attention[depth],
            key=lambda sid: (ATTENTION_RANK.get(StepState(steps[sid].state), 3), pos[sid]),
        )
        return ranked[:ATTENTION_ROWS]

    def set_compact(self, compact: bool) -> None:
        """Switch between the level layout and the grid; counts and folds are kept."""
        if compact != self.compact:
            self.compact = compact
            self._join()

    @property
    def prefix(self) -> str:
        """The id prefix every step shares, left out of the grid's cells (computed once)."""
        if self._prefix is None:
            self._prefix = common_prefix(self.order)
        return self._prefix

    @property
    def cell_id_width(self) -> int:
        """Columns of the id part of a grid cell (computed once)."""
        if self._cell_id_width is None:
            n = len(self.prefix)
            longest = max((len(sid) for sid in self.order), default=n + 1) - n
            self._cell_id_width = max(1, min(COMPACT_ID, longest))
        return self._cell_id_width

    @property
    def per_line(self) -> int:
        """Cells per line of the compact grid."""
        return max(1, ((self.width or 80) + 1) // (self.cell_id_width + 3))

    # ------------------------------------------------------------------ edges

    def edges_of(self, sid: str) -> tuple[str, str]:
        """`(inline, below)` edge text of a step, for the current width (computed once)."""
        placed = self._placed.get(sid)
        if placed is not None:
            return placed
        if self._edges is None:
            self._edges = dag_edges(self.steps, self.levels)
        parents, children = self._edges
        depth = self.level_of[sid]
        above = self.levels[depth - 1] if depth else []
        ins = parents.get(sid, [])
        if len(ins) == 1 and len(above) == 1 and ins == above:
            ins = []  # a chain link: the level above says it all
        forms = _edge_forms(ins, children.get(sid, []))
        if not forms:
            placed = ("", "")
        else:
            limit = self.width
            used = 4 + self.id_width + 1 + 6 + 1 + self.agent_width + 2
            placed = _place_edges(
                forms,
                None if limit is None else limit - used,
                None if limit is None else limit - 3,
            )
        self._placed[sid] = placed
        return placed

    # ------------------------------------------------------------------ text

    def header(self) -> list[Content]:
        """The run's lines above the body: name, id and state, error, the tally."""
        lines = _run_header(self.view)
        cells = _tally_cells(self.total)
        if self.compact and self.prefix:
            cells.append(Content.styled(f"ids: {clean(self.prefix, max_len=40)}…", "$text-muted"))
        return lines + _wrap(cells, self.width)

    def row_content(self, row: Row, now: float | None, cursor: Row | None = None) -> Content:
        kind, key = row
        if kind == "step":
            return self._step_line(key, now)
        if kind == "level":
            return self._level_line(key)
        if kind == "edge":
            return Content.assemble("   ", (self.edges_of(key)[1], "$text-muted"))
        if kind == "more":
            more = len(self.attention[key]) - ATTENTION_ROWS
            return Content.styled(
                f"   … {more} more failed or running: enter opens L{key}", "$text-muted"
            )
        if kind == "grid":
            return self._grid_line(key, cursor)
        if kind == "child":
            return self._child_line(key, now)
        return Content("")

    def _level_line(self, depth: int) -> Content:
        counts = self.counts[depth]
        parts: list[str | tuple[str, str]] = [
            ("▸ " if self.folded[depth] else "▾ ", "$text-muted"),
            (f"L{depth}", "bold"),
            " ",
        ]
        for state in LEVEL_ORDER:
            n = counts.get(state)
            if n:
                mark, style = SYMBOL[state]
                parts += [" ", (mark, style), f" {n}"]
        parts.append((f" / {len(self.levels[depth])}", "$text-muted"))
        return Content.assemble(*parts)

    def _step_line(self, sid: str, now: float | None) -> Content:
        step = self.steps[sid]
        state = StepState(step.state)
        mark, style = SYMBOL[state]
        ident = _middle(clean(sid), self.id_width)
        head = f" {ident:<{self.id_width}} {_duration(step, now):>6} "
        agent = _middle(clean(step.agent or "-", max_len=200), self.agent_width)
        inline, _below = self.edges_of(sid)
        note = _note(step, state)
        parts: list[str | tuple[str, str]] = [" ", (mark, style), head]
        if step.map_total is not None and not self.compact:
            # A map holds no agent: its cell says what enter does (▸ opens, ▾ folds) and
            # counts the children, where a narrow panel still shows them.
            marker = GROUP_OPEN if sid in self.expanded else GROUP_SHUT
            counts = step.last_line or f"{step.map_total} children"
            parts += [f"{marker} ", (clean(counts, max_len=80), "$text-muted")]
            if inline:
                parts += ["  ", (inline, "$text-muted")]
            if note and note != counts:
                parts += ["  ", (clean(note, max_len=80), "$text-muted")]
            return Content.assemble(*parts)
        if inline or note:
            parts.append((f"{agent:<{self.agent_width}}", "$text-muted"))
        else:
            parts.append((agent, "$text-muted"))
        if inline:
            parts += ["  ", (inline, "$text-muted")]
        if note:
            parts += ["  ", (clean(note, max_len=80), "$text-muted")]
        return Content.assemble(*parts)

    def _child_line(self, cid: str, now: float | None) -> Content:
        """A child of an open map step: its state, id, duration, attempt, agent and last line
        (or error), indented under the map step."""
        parent = cid[: cid.rfind("[")]
        step = self.view.children.get(cid)
        total = self.expanded.get(parent, 0)
        width = min(ID_WIDTH, len(clean(parent)) + 2 + len(str(max(0, total - 1))))
        ident = _middle(clean(cid), width)
        if step is None:  # not started
            mark, style = SYMBOL[StepState.PENDING]
            return Content.assemble("   ", (mark, style), f" {ident}")
        state = StepState(step.state)
        mark, style = step_symbol(step)
        attempt = f"{step.attempt}/{step.max_attempts}" if step.attempt else "-"
        agent = _middle(clean(step.agent or "-", max_len=200), self.agent_width)
        parts: list[str | tuple[str, str]] = [
            "   ",
            (mark, style),
            f" {ident:<{width}} {_duration(step, now):>6}",
        ]
        used = 3 + len(mark) + 2 + width + 6
        if self.width is None or self.width >= used + 7 + len(agent) + CHILD_NOTE_ROOM:
            parts += [" ", (f"{attempt:>5}", "$text-muted"), " ", (agent, "$text-muted")]
        # else a narrow panel: the error or last line before the attempt and the agent
        note = _note(step, state)
        if note:
            parts += ["  ", (clean(note, max_len=120), "$text-muted")]
        return Content.assemble(*parts)

    def _grid_line(self, line: int, cursor: Row | None) -> Content:
        per_line = self.per_line
        width = self.cell_id_width
        cut = len(self.prefix)
        parts: list[str | tuple[str, str]] = []
        for n, sid in enumerate(self.order[line * per_line : (line + 1) * per_line]):
            step = self.steps[sid]
            mark, style = SYMBOL[StepState(step.state)]
            short = _middle(clean(sid[cut:]), width)
            if n:
                parts.append(" ")
            cell = f" {short:<{width}}"
            if cursor == ("step", sid):
                parts += [(mark, f"{style} {STEP_CURSOR_STYLE}"), (cell, STEP_CURSOR_STYLE)]
            else:
                parts += [(mark, style), cell]
        return Content.assemble(*parts)

    def grid_row_of(self, sid: str) -> int:
        return self.pos[sid] // self.per_line


# --------------------------------------------------------------------------- the widget


class DagView(ScrollView, can_focus=True, inherit_bindings=False):
    """The selected run's DAG, level by level or (`compact`) one cell per step; the app tells
    it which run to show with `refresh_from`.

    Rows are rendered on demand (`render_line`), from the live step views: the cost of a
    repaint is the rows on screen, whatever the size of the run.
    """

    ALLOW_MAXIMIZE = True
    COMPONENT_CLASSES: ClassVar[set[str]] = {"dag--cursor"}
    DEFAULT_CSS = """
    DagView {
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-gutter: stable;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        & > .dag--cursor { background: $block-cursor-blurred-background; }
        &:focus > .dag--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: $block-cursor-text-style;
        }
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        # Not in the footer (it must fit 80 columns): the panel's subtitle names them.
        Binding("enter", "select", "Open step, level or map step", show=False, id="dag.open"),
        Binding("n", "jump('failed', 1)", "Next failed", show=False, id="dag.next_failed"),
        Binding("N", "jump('failed', -1)", "Previous failed", show=False, id="dag.prev_failed"),
        Binding("a", "jump('active', 1)", "Next running", show=False, id="dag.next_active"),
        Binding("A", "jump('active', -1)", "Previous running", show=False, id="dag.prev_active"),
        Binding("j,down", "move(1)", "Down", show=False, id="dag.down"),
        Binding("k,up", "move(-1)", "Up", show=False, id="dag.up"),
        Binding("g,home", "edge(False)", "First row", show=False, id="dag.first"),
        Binding("G,end", "edge(True)", "Last row", show=False, id="dag.last"),
        Binding("pagedown", "page(1)", "Page down", show=False, id="dag.page_down"),
        Binding("pageup", "page(-1)", "Page up", show=False, id="dag.page_up"),
        Binding("l,right", "sideways(1)", "Open map step or level", show=False, id="dag.unfold"),
        Binding("h,left", "sideways(-1)", "Fold map step or level", show=False, id="dag.fold"),
    ]

    class StepChosen(Message):
        """`enter` on a step: the app opens the run on that step."""

        def __init__(self, run_id: str, step_id: str) -> None:
            super().__init__()
            self.run_id = run_id
            self.step_id = step_id

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.compact = False
        self._view: RunView | None = None
        self._steps: object = None
        self._levels: object = None
        self._layout: DagLayout | None = None
        self._header: list[Content] = [Content(NO_RUN)]
        self._cursor: Row | None = None
        self._painted: tuple[Any, list[tuple[str, Any]], int | None] | None = None
        self._contents: dict[int, Content] = {}
        self.fold_version = 0
        """Counts folds and unfolds (for benchmarks to see a key's effect)."""

    # ------------------------------------------------------------------ data in

    def refresh_from(self, view: RunView | None) -> None:
        """Show `view` (the selected run, or None): counts follow what changed; rows on
        screen are repainted only if what they show changed."""
        width = self._width()
        layout = self._layout
        if view is not self._view:
            self._watch(view)
        if view is None or not view.steps:
            self._view, self._layout, self._steps, self._levels = view, None, None, None
            self._cursor = None
            self._header = (
                [Content(NO_RUN)]
                if view is None
                else [*_run_header(view), Content.styled("loading steps…", "$text-muted")]
            )
            self._resize()
            self._repaint()
            return
        if (
            layout is None
            or view is not self._view
            or view.steps is not self._steps
            or view.levels is not self._levels
        ):
            new_run = self._view is None or view.run.id != self._view.run.id
            old_folds = None if layout is None or new_run else layout.folded
            old_groups = [] if layout is None or new_run else list(layout.expanded)
            self._view, self._steps, self._levels = view, view.steps, view.levels
            layout = self._layout = DagLayout(view, width, self.compact)
            if old_folds is not None and len(old_folds) == len(layout.folded):
                for depth, folded in enumerate(old_folds):
                    layout.set_folded(depth, folded)
            for sid in old_groups:
                layout.set_expanded(sid, True)
            if new_run:
                self._cursor = None
                self.scroll_to(y=0, animate=False, immediate=True)
        else:
            layout.sync()
            if width != layout.width:
                layout.relayout(width)
        self._header = layout.header()
        self._fix_cursor()
        self._resize()
        self._repaint()

    def _watch(self, view: RunView | None) -> None:
        """Tell the fold which run's step changes to record for this panel (and drop what it
        recorded for the run shown before), so runs nobody shows keep no change sets."""
        old = self._view
        if old is not None:
            old.watched = False
            old.changed_steps.clear()
        if view is not None:
            view.watched = True

    def _width(self) -> int | None:
        width = self.scrollable_content_region.width
        return width if width > 0 else None

    def _now(self) -> float | None:
        """The app's wall clock (`VoltApp.clock`) if it has one, so running steps are timed
        against the same "now" as the rest of the dashboard (fixed in screenshot tests, stopped
        while the engine is out of reach)."""
        clock = getattr(self.app, "clock", None)
        return clock() if callable(clock) else None

    # ------------------------------------------------------------------ rows

    @property
    def row_count(self) -> int:
        layout = self._layout
        return len(self._header) + (len(layout.rows) if layout is not None else 0)

    def _row(self, y: int) -> Content | None:
        """The text of row `y` of the whole body, header included."""
        header = self._header
        if y < len(header):
            return header[y]
        layout = self._layout
        if layout is None:
            return None
        y -= len(header)
        if y >= len(layout.rows):
            return None
        return layout.row_content(layout.rows[y], self._now(), self._cursor)

    def _resize(self) -> None:
        size = Size(self.scrollable_content_region.width, self.row_count)
        if size != self.virtual_size:
            self.virtual_size = size

    def _repaint(self) -> None:
        """Have Textual redraw the rows on screen whose text changed (or all of them after a
        scroll, a resize or a change of focus); a quiet panel writes nothing to the terminal.

        The rows' text is built here once and kept for `render_line`, so a row on screen is
        built once per repaint, whatever the size of the run.
        """
        top = int(self.scroll_y)
        height = self.scrollable_content_region.height
        contents: dict[int, Content] = {}
        shown: list[tuple[str, Any]] = []
        for y in range(top, min(self.row_count, top + height)):
            content = self._row(y)
            if content is not None:
                contents[y] = content
            shown.append(("", ()) if content is None else (content.plain, tuple(content.spans)))
        frame = (top, height, self.size, self.has_focus, self.compact)
        cursor_y = self._cursor_y()
        self._contents = contents
        last = self._painted
        self._painted = (frame, shown, cursor_y)
        if last is None or last[0] != frame or len(last[1]) != len(shown):
            self.refresh()
            return
        _frame, before, old_cursor = last
        lines = {top + n for n, (a, b) in enumerate(zip(before, shown, strict=True)) if a != b}
        if cursor_y != old_cursor:
            lines |= {
                y for y in (cursor_y, old_cursor) if y is not None and top <= y < top + height
            }
        for y in lines:
            self.refresh_line(y)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        index = int(self.scroll_y) + y
        content = self._contents.get(index)
        if content is None:
            content = self._row(index)
        layout = self._layout
        cursor_row = (
            self._cursor is not None
            and layout is not None
            and not layout.compact
            and index - len(self._header) == layout.index.get(self._cursor, -1)
        )
        style = self.get_visual_style("dag--cursor") if cursor_row else self.visual_style
        if content is None or width <= 0:
            return Strip.blank(width, self.visual_style.rich_style)
        strips = Visual.to_strips(self, content, width, 1, style, pad=True)
        return strips[0] if strips else Strip.blank(width, style.rich_style)

    def lines(self) -> list[Content]:
        """Every row (not only those on screen), as shown: for tests and copying."""
        return [content or Content("") for content in map(self._row, range(self.row_count))]

    def text(self) -> str:
        """Plain text of every row (not only those on screen), for tests and copying."""
        return "\n".join(content.plain.rstrip() for content in self.lines())

    # ------------------------------------------------------------------ cursor

    @property
    def cursor(self) -> Row | None:
        """The row under the cursor: `("step", id)`, `("level", depth)`, `("more", depth)` or
        `("child", "review[3]")`."""
        return self._cursor

    @property
    def cursor_step(self) -> str | None:
        cursor = self._cursor
        return cursor[1] if cursor is not None and cursor[0] == "step" else None

    def _fix_cursor(self) -> None:
        """Keep the cursor on a row that exists: a step that left its folded level's list
        hands the cursor to the level's summary."""
        layout = self._layout
        cursor = self._cursor
        if layout is None:
            self._cursor = None
            return
        if layout.compact:
            if cursor is not None and cursor[0] == "child":  # the grid has its map step
                cursor = self._cursor = ("step", _group_of(cursor[1]))
            if cursor is None or cursor[0] != "step":
                depth = cursor[1] if cursor is not None else 0
                level = layout.levels[depth] if depth < len(layout.levels) else []
                first = level[0] if level else (layout.order[0] if layout.order else None)
                self._cursor = None if first is None else ("step", first)
            return
        if cursor in layout.index:
            return
        if cursor is not None and cursor[0] == "child":
            cursor = ("step", _group_of(cursor[1]))  # its map step folded: the cursor goes up
            if cursor in layout.index:
                self._cursor = cursor
                return
        if cursor is not None and cursor[0] == "step" and cursor[1] in layout.level_of:
            self._cursor = ("level", layout.level_of[cursor[1]])
        elif layout.index:
            self._cursor = next(iter(layout.index))
        else:
            self._cursor = None

    def _cursor_y(self) -> int | None:
        layout = self._layout
        cursor = self._cursor
        if layout is None or cursor is None:
            return None
        if layout.compact:
            if cursor[0] != "step" or cursor[1] not in layout.pos:
                return None
            return len(self._header) + layout.grid_row_of(cursor[1])
        n = layout.index.get(cursor)
        return None if n is None else len(self._header) + n

    def move_cursor(self, row: Row) -> None:
        """Put the cursor on `row` (opening its folded level if the row is a hidden step) and
        scroll it into view."""
        layout = self._layout
        if layout is None:
            return
        if not layout.compact and row not in layout.index and row[0] in ("step", "child"):
            sid = row[1] if row[0] == "step" else _group_of(row[1])
            depth = layout.level_of.get(sid)
            if depth is None:
                return
            layout.set_folded(depth, False)
            if row[0] == "child":
                layout.set_expanded(sid, True)
            self.fold_version += 1
            self._resize()
        self._cursor = row
        self._fix_cursor()
        self._scroll_to_cursor()
        self._repaint()

    def _scroll_to_cursor(self) -> None:
        y = self._cursor_y()
        if y is None:
            return
        height = self.scrollable_content_region.height
        top = int(self.scroll_y)
        if y < top:
            self.scroll_to(y=y, animate=False, immediate=True)
        elif y >= top + height:
            self.scroll_to(y=y - height + 1, animate=False, immediate=True)
        elif y == len(self._header) and top:
            self.scroll_to(y=0, animate=False, immediate=True)  # the first row: show the header

    def _step_by(self, delta: int) -> None:
        """Move the cursor `delta` rows (in the compact grid, `delta` lines of cells)."""
        layout = self._layout
        if layout is None or not layout.selectable:
            return
        rows = layout.selectable
        if layout.compact:
            delta *= layout.per_line
        here = layout.rank.get(self._cursor, 0) if self._cursor is not None else 0
        self.move_cursor(rows[max(0, min(len(rows) - 1, here + delta))])

    def action_sideways(self, delta: int) -> None:
        """In the compact grid, `h`/`l` and the arrows move one cell; in the level layout they
        fold and open the cursor's level."""
        layout = self._layout
        if layout is None or not layout.compact:
            if delta > 0:
                self.action_unfold()
            else:
                self.action_fold()
            return
        rows = layout.selectable
        here = layout.rank.get(self._cursor, 0) if self._cursor is not None else 0
        if rows:
            self.move_cursor(rows[max(0, min(len(rows) - 1, here + delta))])

    # ------------------------------------------------------------------ actions

    def action_move(self, delta: int) -> None:
        self._step_by(delta)

    def action_page(self, direction: int) -> None:
        self._step_by(direction * max(1, self.scrollable_content_region.height - 1))

    def action_edge(self, last: bool) -> None:
        rows = self._layout.selectable if self._layout is not None else []
        if rows:
            self.move_cursor(rows[-1] if last else rows[0])
            if not last:
                self.scroll_to(y=0, animate=False, immediate=True)

    def action_select(self) -> None:
        """`enter`: open the step under the cursor, or open/fold the level."""
        layout = self._layout
        cursor = self._cursor
        if layout is None or cursor is None or self._view is None:
            return
        kind, key = cursor
        if kind == "step" and not layout.compact and layout.is_group(key):
            self._set_expanded(key, key not in layout.expanded)
        elif kind in ("step", "child"):
            self.post_message(self.StepChosen(self._view.run.id, key))
        elif kind == "level":
            self._set_folded(key, not layout.folded[key])
        elif kind == "more":
            self._set_folded(key, False)

    def action_unfold(self) -> None:
        """`l`: open the map step under the cursor, else the cursor's level."""
        group = self._cursor_group()
        if group is not None and group not in self._layout.expanded:  # type: ignore[union-attr]
            self._set_expanded(group, True)
            return
        depth = self._cursor_level()
        if depth is not None:
            self._set_folded(depth, False)

    def action_fold(self) -> None:
        """`h`: fold the open map step the cursor is on or in, else the cursor's level."""
        group = self._cursor_group()
        if group is not None and group in self._layout.expanded:  # type: ignore[union-attr]
            self._set_expanded(group, False)
            return
        depth = self._cursor_level()
        if depth is not None:
            self._set_folded(depth, True)

    def _cursor_group(self) -> str | None:
        """The map step the cursor is on (or on a child of), in the level layout."""
        layout = self._layout
        cursor = self._cursor
        if layout is None or cursor is None or layout.compact:
            return None
        kind, key = cursor
        if kind == "child":
            return _group_of(key)
        return key if kind == "step" and layout.is_group(key) else None

    def _set_expanded(self, sid: str, expanded: bool) -> None:
        """Open or fold a map step's children; folding puts the cursor back on the step."""
        layout = self._layout
        if layout is None or not layout.set_expanded(sid, expanded):
            return
        self.fold_version += 1
        if not expanded:
            self._cursor = ("step", sid)
        self._fix_cursor()
        self._resize()
        self._scroll_to_cursor()
        self._repaint()

    def action_jump(self, which: str, direction: int) -> None:
        """`n`/`N` (failed) and `a`/`A` (running or retrying): the next such step after the
        cursor in reading order, round to the start at the end. The children of an open map
        step count too (a look at each of them per key press, never per event)."""
        layout = self._layout
        if layout is None:
            return
        found = layout.failed if which == "failed" else layout.active
        wanted = {StepState.FAILED} if which == "failed" else ACTIVE
        pos = layout.pos
        ranked: list[tuple[float, Row]] = [(pos[sid], ("step", sid)) for sid in found]
        if not layout.compact:
            children = layout.view.children
            for group, n in layout.expanded.items():
                base = pos[group]
                for i in range(n):
                    cid = f"{group}[{i}]"
                    child = children.get(cid)
                    if child is not None and child.state in wanted:
                        ranked.append((base + (i + 1) / (n + 2), ("child", cid)))
        if not ranked:
            what = "failed" if which == "failed" else "running"
            self.app.bell()
            self.notify(f"no {what} step in this run", timeout=2, markup=False)
            return
        ranked.sort(key=lambda pair: pair[0])
        keys = [key for key, _row in ranked]
        here = self._cursor_pos()
        if direction > 0:
            n = bisect.bisect_right(keys, here)
        else:
            n = bisect.bisect_left(keys, here) - 1
        self.move_cursor(ranked[n % len(ranked)][1])

    def _cursor_pos(self) -> float:
        """Where the cursor is in reading order (a level's summary sits before its steps)."""
        layout = self._layout
        cursor = self._cursor
        if layout is None or cursor is None:
            return -1
        kind, key = cursor
        if kind == "step":
            return layout.pos.get(key, -1)
        if kind == "child":
            group = _group_of(key)
            index = int(key[len(group) + 1 : -1])
            return layout.pos.get(group, -1) + (index + 1) / (layout.expanded.get(group, 0) + 2)
        level = layout.levels[key] if 0 <= key < len(layout.levels) else []
        if not level:
            return -1
        first = layout.pos[level[0]] - 0.5
        return first if kind == "level" else layout.pos[level[-1]]

    def _cursor_level(self) -> int | None:
        layout = self._layout
        cursor = self._cursor
        if layout is None or cursor is None or layout.compact:
            return None
        kind, key = cursor
        if kind == "child":
            return layout.level_of.get(_group_of(key))
        return layout.level_of.get(key) if kind == "step" else key

    def _set_folded(self, depth: int, folded: bool) -> None:
        layout = self._layout
        if layout is None or layout.compact:
            return
        if layout.set_folded(depth, folded):
            self.fold_version += 1
            if folded:
                self._cursor = ("level", depth)
            self._fix_cursor()
            self._resize()
            self._scroll_to_cursor()
            self._repaint()

    def fold_all(self, folded: bool) -> None:
        """Fold or open every level (tests, and the largest runs)."""
        layout = self._layout
        if layout is None:
            return
        for depth in range(len(layout.levels)):
            layout.set_folded(depth, folded)
        self.fold_version += 1
        self._fix_cursor()
        self._resize()
        self._scroll_to_cursor()
        self._repaint()

    # ------------------------------------------------------------------ compact

    def set_compact(self, compact: bool) -> None:
        self.compact = compact
        layout = self._layout
        if layout is not None:
            layout.set_compact(compact)
            self._header = layout.header()
        self._fix_cursor()
        self._resize()
        self.scroll_to(y=0, animate=False, immediate=True)
        self._scroll_to_cursor()
        self._repaint()

    # ------------------------------------------------------------------ events

    def on_resize(self) -> None:
        self.refresh_from(self._view)  # the grid re-wraps; edges move onto or off step lines

    def on_focus(self) -> None:
        self.border_subtitle = KEYS_HINT
        self._repaint()

    def on_blur(self) -> None:
        self.border_subtitle = ""
        self._repaint()

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self._painted = None
        self._contents = {}

    def on_click(self, event: events.Click) -> None:
        """A click puts the cursor on the row (or the compact cell) clicked."""
        offset = event.get_content_offset(self)
        layout = self._layout
        if offset is None or layout is None:
            return
        y = int(self.scroll_y) + offset.y - len(self._header)
        if not 0 <= y < len(layout.rows):
            return
        row = layout.rows[y]
        if layout.compact:
            n = y * layout.per_line + offset.x // (layout.cell_id_width + 3)
            if n < len(layout.order):
                self.move_cursor(("step", layout.order[n]))
        elif row in layout.index:
            self.move_cursor(row)


def render_dag(
    view: RunView | None, width: int | None = None, *, now: float | None = None
) -> Content:
    """The whole level layout as one `Content` (every level open), for tests and for callers
    without a widget. The panel itself never builds this: it renders only the rows on screen.
    """
    if view is None:
        return Content(NO_RUN)
    if not view.steps:
        return Content("\n").join(
            [*_run_header(view), Content.styled("loading steps…", "$text-muted")]
        )
    changed = set(view.changed_steps)
    layout = DagLayout(view, width, compact=False)
    view.changed_steps |= changed  # a test's look must not steal the panel's news
    for depth in range(len(layout.levels)):
        layout.set_folded(depth, False)
    lines: Iterable[Content] = [
        *layout.header(),
        *(layout.row_content(row, now) for row in layout.rows),
    ]
    return Content("\n").join(lines)


def render_compact(view: RunView | None, width: int) -> Content:
    """The whole compact grid (one cell per step, wrapped to `width` columns) as one `Content`,
    for tests and for callers without a widget; the panel renders only the rows on screen."""
    if view is None or not view.steps:
        return render_dag(view, width)
    changed = set(view.changed_steps)
    layout = DagLayout(view, width, compact=True)
    view.changed_steps |= changed
    return Content("\n").join(
        [*layout.header(), *(layout.row_content(r, None) for r in layout.rows)]
    )
