"""The `/` filter bar: one line under the panels, shown only while a filter is being typed.

It only edits text; the app applies the filter to the events panel (`EventsLog.set_filter`),
so the bar works the same whichever panel is maximised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Label


class FilterBar(Horizontal):
    """`enter` posts `Applied` with the text, `escape` posts `Cleared`; the app hides the bar."""

    DEFAULT_CSS = """
    FilterBar {
        height: 1;
        display: none;
        background: $panel;
    }
    FilterBar.-active { display: block; }
    FilterBar Label { width: auto; padding: 0 1; color: $accent; text-style: bold; }
    FilterBar Input {
        width: 1fr;
        height: 1;
        border: none;
        padding: 0;
        background: $panel;
    }
    FilterBar Input:focus { border: none; background-tint: $foreground 5%; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "clear", "Clear filter", id="filter.cancel"),
    ]

    @dataclass
    class Applied(Message):
        """The user pressed enter: filter the events with `text` (empty means no filter)."""

        text: str

    class Cleared(Message):
        """The user pressed escape: drop the text filter."""

    def compose(self) -> ComposeResult:
        yield Label("filter events /")
        yield Input(
            placeholder="regex over type, source, run, summary; ! inverts; enter applies; "
            "escape clears",
            id="filter-input",
            select_on_focus=False,
        )

    @property
    def input(self) -> Input:
        return self.query_one(Input)

    @property
    def active(self) -> bool:
        return self.has_class("-active")

    def open(self, text: str | None) -> None:
        """Show the bar with `text` (the filter in force) and focus the input."""
        self.add_class("-active")
        field = self.input
        field.value = text or ""
        field.cursor_position = len(field.value)
        field.focus()

    def close(self) -> None:
        self.remove_class("-active")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Applied(event.value))

    def action_clear(self) -> None:
        self.input.value = ""
        self.post_message(self.Cleared())
