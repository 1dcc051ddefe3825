"""The `/` filter bar: one line under the panels, shown only while a filter is being typed.

It only edits text; the app applies the filter, as it is typed, to the panel the bar was opened
for (`target`: the events log, or the runs table when it had the focus), so the bar works the
same whichever panel is maximised.
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
    """Each edit posts `Changed` (the filter applies as you type), `enter` posts `Applied`
    (keep it, close the bar), `escape` posts `Cleared`; the app hides the bar."""

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
        """The user pressed enter: keep filtering `target` with `text` (empty: no filter)."""

        text: str
        target: str = "events"

    @dataclass
    class Changed(Message):
        """The text changed: filter `target` with `text` now."""

        text: str
        target: str = "events"

    @dataclass
    class Cleared(Message):
        """The user pressed escape: drop `target`'s text filter."""

        target: str = "events"

    target = "events"
    """What the text filters: `events` or `runs`."""

    PLACEHOLDER = {
        "events": "regex over type, run, workflow, summary; ! inverts; enter keeps; escape clears",
        "runs": "regex over run id, workflow and state; ! inverts; enter keeps; escape clears",
    }

    def compose(self) -> ComposeResult:
        yield Label("filter events /")
        yield Input(
            placeholder=self.PLACEHOLDER["events"],
            id="filter-input",
            select_on_focus=False,
        )

    @property
    def input(self) -> Input:
        return self.query_one(Input)

    @property
    def active(self) -> bool:
        return self.has_class("-active")

    def open(self, text: str | None, target: str = "events") -> None:
        """Show the bar with `text` (the filter in force on `target`) and focus the input."""
        self.target = target
        self.query_one(Label).update(f"filter {target} /")
        self.add_class("-active")
        field = self.input
        field.placeholder = self.PLACEHOLDER.get(target, "")
        field.value = text or ""
        field.cursor_position = len(field.value)
        field.focus()

    def close(self) -> None:
        self.remove_class("-active")

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self.active:
            self.post_message(self.Changed(event.value, self.target))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Applied(event.value, self.target))

    def action_clear(self) -> None:
        self.input.value = ""
        self.post_message(self.Cleared(self.target))
