"""The selected run's DAG: steps grouped by dependency level, each with a state symbol, its
duration, agent and edges (`← b, c` for a fan-in, `→ 8` for a fan-out; nothing for a plain
chain), or (`v`) a compact grid of one cell per step for DAGs of hundreds of steps.

Symbols carry the meaning so the panel reads without colour (NO_COLOR, screenshots, logs):
✓ succeeded, ✗ failed, ▶ running, ↻ retrying n/m, … waiting, · pending, an en dash
skipped, ■ cancelled, ◆ cached.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

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


def _run_header(view: RunView) -> list[str | Content | tuple[str, str]]:
    run = view.run
    parts: list[str | Content | tuple[str, str]] = [
        (clean(run.workflow_name or run.workflow_id, max_len=60), "bold"),
        f"  {clean(run.id[:12])}  {run.state}\n",
    ]
    if run.error:
        parts += [("error: ", "$error"), clean(run.error, max_len=200), "\n"]
    return parts


def _tally(view: RunView) -> list[tuple[str, str, str]]:
    """`(symbol, style, "count state")` for each state some step is in, in `SYMBOL` order: the
    run's progress at a glance, and the legend of the symbols it uses."""
    counts: dict[StepState, int] = {}
    for step in view.steps.values():
        state = StepState(step.state)
        counts[state] = counts.get(state, 0) + 1
    return [
        (mark, style, f"{counts[state]} {state}")
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

    Ancestor sets are Python ints used as bitsets over the reading order: about a
    millisecond for 300 steps, a small part of rendering them.
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


def render_dag(
    view: RunView | None, width: int | None = None, *, now: float | None = None
) -> Content:
    """The whole panel body as one `Content`; untrusted parts are added as plain strings
    (never parsed as markup), styles only from theme variables.

    Steps are listed level by level; edges follow a step's agent in a muted style: `← deps`
    where the layout alone does not tell which steps feed it (anything but the single step of
    the level above), and `→ N` on a step that fans out. An edge that does not fit in `width`
    columns on the step's line goes on a line of its own below it, in the shortest form that
    fits. `width` None means unlimited; `now` is the time running steps are measured to (the
    wall clock by default; a replay passes its own).
    """
    if view is None:
        return Content(NO_RUN)
    parts = _run_header(view)
    if not view.steps:
        parts.append(("loading steps…", "$text-muted"))
        return Content.assemble(*parts)
    limit = width if width and width > 0 else None
    used = 0
    for n, (mark, style, label) in enumerate(_tally(view)):
        cell = len(mark) + 1 + len(label)
        if n and limit is not None and used + 2 + cell > limit:
            parts.append("\n")
            used = 0
        elif n:
            parts.append("  ")
            used += 2
        parts += [(mark, style), f" {label}"]
        used += cell
    parts.append("\n")
    levels = [
        [sid for sid in level if sid in view.steps] for level in view.levels or [list(view.steps)]
    ]
    parents, children = dag_edges(view.steps, levels)
    id_width = max(len(clean(s)) for s in view.steps)
    marks = {sid: step_symbol(step) for sid, step in view.steps.items()}
    mark_width = max(len(mark) for mark, _style in marks.values())
    indent = " " * (mark_width + 2)  # edges below a step start under its id
    for depth, ids in enumerate(levels):
        heading = f"level {depth}  {len(ids)} steps" if len(ids) > 1 else f"level {depth}"
        parts.append((heading + "\n", "$text-muted"))
        above = levels[depth - 1] if depth else []
        for step_id in ids:
            step = view.steps[step_id]
            mark, style = marks[step_id]
            head = f" {clean(step_id):<{id_width}} {_duration(step, now):>6} "
            agent = clean(step.agent or "-", max_len=16)
            parts += [" ", (f"{mark:<{mark_width}}", style), head, (agent, "$text-muted")]
            ins = parents[step_id]
            if len(ins) == 1 and len(above) == 1 and ins == above:
                ins = []  # a chain link: the level above says it all
            forms = _edge_forms(ins, children[step_id])
            below = ""
            if forms:
                used = 1 + mark_width + len(head) + len(agent) + 2
                inline, below = _place_edges(
                    forms,
                    None if limit is None else limit - used,
                    None if limit is None else limit - len(indent),
                )
                if inline:
                    parts += ["  ", (inline, "$text-muted")]
            note = step.error if step.state == StepState.FAILED else step.last_line
            if note:
                parts += ["  ", (clean(note, max_len=80), "$text-muted")]
            parts.append("\n")
            if below:
                parts += [indent, (below, "$text-muted"), "\n"]
    return Content.assemble(*parts)


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


def render_compact(view: RunView | None, width: int) -> Content:
    """One cell per step (`symbol id`), level by level, wrapped to `width` columns.

    A 300-step run fits in a few dozen lines: a prefix shared by every id is shown once and
    left out of the cells, and a tally of states comes first so the run's progress reads at a
    glance. Retries show as the plain retry symbol (no n/m) to keep the cells aligned.
    """
    if view is None:
        return Content(NO_RUN)
    parts = _run_header(view)
    if not view.steps:
        parts.append(("loading steps…", "$text-muted"))
        return Content.assemble(*parts)
    for mark, style, label in _tally(view):
        parts += [(mark, style), f" {label}  "]
    ids = [sid for level in (view.levels or [list(view.steps)]) for sid in level]
    prefix = common_prefix(ids)
    if prefix:
        parts.append((f"ids: {clean(prefix, max_len=40)}…", "$text-muted"))
    parts.append("\n")
    id_width = min(COMPACT_ID, max((len(sid) - len(prefix) for sid in ids), default=1))
    cell = id_width + 3  # symbol, space, id, gap
    per_line = max(1, (width + 1) // cell)
    for n, step_id in enumerate(ids):
        step = view.steps.get(step_id)
        if step is None:
            continue
        mark, style = SYMBOL[StepState(step.state)]
        short = clean(step_id[len(prefix) :])
        if len(short) > id_width:  # keep both ends: `transform_a` and `_b` must differ
            head = (id_width - 1) // 2
            short = short[:head] + "…" + short[len(short) - (id_width - 1 - head) :]
        end = "\n" if (n + 1) % per_line == 0 or n + 1 == len(ids) else " "
        parts += [(mark, style), f" {short:<{id_width}}{end}"]
    return Content.assemble(*parts)


class DagView(VerticalScroll):
    """Scrollable view of one run's steps; the app tells it which run to show.

    `compact` switches between the level layout and the wrapped grid (`render_compact`). Both
    are laid out again when the panel is resized: the grid re-wraps, and edges that no longer
    fit on a step's line move to a line of their own.
    """

    ALLOW_MAXIMIZE = True

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.compact = False
        self._view: RunView | None = None
        # Kept rather than queried: a late refresh (a detail fetch finishing while the app
        # shuts down) must not fail on a body already removed.
        self._content = render_dag(None)
        self._body = Static(self._content, id="dag-body")

    def compose(self) -> ComposeResult:
        yield self._body

    def refresh_from(self, view: RunView | None) -> None:
        self._view = view
        # Reserve the scrollbar's columns, so a body that grows one is not laid out again.
        width = self.content_region.width - self.styles.scrollbar_size_vertical
        if self.compact:
            content = render_compact(view, max(1, width))
        else:
            content = render_dag(view, width if width > 0 else None, now=self._now())
        if content.plain != self._content.plain or content.spans != self._content.spans:
            # A layout pass redraws every panel; only a change of size needs one (a running
            # step's ticking duration does not).
            resize = _extent(content) != _extent(self._content)
            self._content = content
            self._body.update(content, layout=resize)

    def _now(self) -> float | None:
        """The app's wall clock (`VoltApp.clock`) if it has one, so running steps are timed
        against the same "now" as the rest of the dashboard (fixed in screenshot tests)."""
        clock = getattr(self.app, "clock", None)
        return clock() if callable(clock) else None

    def set_compact(self, compact: bool) -> None:
        self.compact = compact
        self.set_class(compact, "-compact")
        self.scroll_home(animate=False)
        self.refresh_from(self._view)

    def on_resize(self) -> None:
        self.refresh_from(self._view)  # the grid re-wraps; edges move onto or off step lines

    def text(self) -> str:
        """Plain text shown, for tests and copy."""
        return self._content.plain


def _extent(content: Content) -> tuple[int, int]:
    """Lines and widest line: what decides the body's size."""
    lines = content.plain.split("\n")
    return len(lines), max((len(line) for line in lines), default=0)
