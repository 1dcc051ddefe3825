"""Tables for a terminal of any width, or for a pipe.

On a terminal, columns give way in an order each table chooses: a flexible column (an error
message, a file path) shrinks first, down to its minimum; then whole columns are hidden one by
one (times before counts before notes), and a narrow one hidden early comes back if it fits
beside what stayed; identity columns (run id, workflow, state) stay, and only as a last resort
is a too-long identity cell cut, with an ellipsis. What was hidden is named under the table.
A cell never wraps, so a header can never come out one letter per line. Piped, every cell is
printed whole, separated by tabs: nothing is cut, and `cut -f` / `awk -F'\\t'` read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

GAP = 2


@dataclass(eq=False)  # compared by identity: columns are found in lists while fitting
class Column:
    """One column: its header, cells, and how it gives way on a narrow terminal."""

    header: str
    give_way: int | None = None
    """Order in which whole columns are hidden (1 first); None: never hidden."""
    flexible: bool = False
    """Shrinks (cut with an ellipsis) to `min_width` before any column is hidden."""
    min_width: int = 12
    last_resort: bool = False
    """An identity column that may be cut when nothing else is left to give."""
    justify: Literal["left", "right"] = "left"
    cut: Literal["end", "start"] = "end"
    """Which end an ellipsis replaces: paths keep their file name (`start`)."""
    cells: list[Text] = field(default_factory=list)

    def natural(self) -> int:
        return max([cell_len(self.header), *(c.cell_len for c in self.cells)])

    def narrowest(self) -> int:
        natural = self.natural()
        if self.flexible:
            return min(natural, max(self.min_width, cell_len(self.header)))
        return natural


@dataclass
class Layout:
    columns: list[Column]
    widths: list[int]
    hidden: list[str]


def fit(columns: Sequence[Column], width: int) -> Layout:
    """Choose visible columns and their widths for a terminal `width` cells wide."""
    visible = list(columns)

    def needed(cols: list[Column]) -> int:
        return sum(c.narrowest() for c in cols) + GAP * (len(cols) - 1)

    dropped: list[Column] = []
    droppable = sorted((c for c in visible if c.give_way is not None), key=lambda c: c.give_way)
    while needed(visible) > width and droppable:
        gone = droppable.pop(0)
        visible.remove(gone)
        dropped.append(gone)
    for col in reversed(dropped):  # a narrow column hidden before a wide one may fit again
        trial = [c for c in columns if c in visible or c is col]
        if needed(trial) <= width:
            visible = trial
    hidden = [c.header for c in dropped if c not in visible]
    widths = [c.narrowest() for c in visible]
    spare = width - needed(visible)
    for i, col in enumerate(visible):  # flexible columns take the room left, in order
        if col.flexible and spare > 0:
            grow = min(spare, col.natural() - widths[i])
            widths[i] += grow
            spare -= grow
    over = -spare
    for i, col in enumerate(visible):  # still too wide: cut identity cells, never below header
        if over <= 0:
            break
        if col.last_resort:
            floor = max(cell_len(col.header), 4)
            take = min(over, widths[i] - floor)
            if take > 0:
                widths[i] -= take
                over -= take
    return Layout(visible, widths, hidden)


def _cell(text: Text, width: int, col: Column) -> Text:
    cell = text.copy()
    if cell.cell_len > width:
        if col.cut == "start":
            plain = cell.plain
            while cell_len(plain) > width - 1:
                plain = plain[1:]
            cell = Text("…" + plain, style=cell.style)
        else:
            cell.truncate(width, overflow="ellipsis")
    pad = width - cell.cell_len
    if col.justify == "right":
        return Text(" " * pad) + cell
    return cell + Text(" " * pad)


def print_table(console: Console, title: str, columns: Sequence[Column], empty: str) -> None:
    """Print a titled table: fitted to the terminal, or tab-separated when piped."""
    rows = len(columns[0].cells) if columns else 0
    if not console.is_terminal:
        lines = [title, "\t".join(c.header for c in columns)]
        for r in range(rows):
            lines.append("\t".join(c.cells[r].plain.replace("\t", " ") for c in columns))
        if not rows:
            lines.append(empty)
        console.file.write("\n".join(lines) + "\n")  # not console.print: it expands tabs
        return
    console.print(Text(title, style="bold underline"))
    if not rows:
        console.print(Text(empty))
        return
    layout = fit(columns, console.width)
    gap = Text(" " * GAP)
    header = gap.join(
        _cell(Text(c.header, style="bold"), w, c)
        for c, w in zip(layout.columns, layout.widths, strict=True)
    )
    console.print(header, no_wrap=True, overflow="ellipsis", crop=True)
    for r in range(rows):
        line = gap.join(
            _cell(c.cells[r], w, c) for c, w in zip(layout.columns, layout.widths, strict=True)
        )
        console.print(line, no_wrap=True, overflow="ellipsis", crop=True)
    if layout.hidden:
        names = ", ".join(layout.hidden)
        console.print(Text(f"hidden at {console.width} columns: {names} (see --json)", "dim"))
