"""Every binding of the dashboard with its key and what it does: the app's (and the runs
table's), then a section per panel with keys of its own (the DAG's), read from the bindings
themselves so the help never drifts from the keys."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from voltui.engine.models import StepState
from voltui.safetext import clean
from voltui.tui.widgets.dag import SYMBOL

SYMBOLS = "  ".join(
    f"{mark} {state}{' n/m' if state is StepState.RETRYING else ''}"
    for state, (mark, _) in SYMBOL.items()
)


def _plain_key_display(binding: Binding) -> str:
    return binding.key_display or binding.key


def binding_keys(binding: Binding, key_display: Callable[[Binding], str]) -> str:
    """The binding's keys as the footer shows them (`?` rather than `question_mark`): its
    `key_display` if set, else each of its keys through `key_display` (`App.get_key_display`)."""
    if binding.key_display:
        return binding.key_display
    keys = [k.strip() for k in binding.key.split(",") if k.strip()]
    return ", ".join(key_display(dataclasses.replace(binding, key=k)) for k in keys)


Section = tuple[str, Sequence[Binding]]
"""A titled list of bindings: a panel's own keys (`("DAG panel (2)", DagView's bindings)`)."""


def _binding_lines(
    text: Text, bindings: Sequence[Binding], key_display: Callable[[Binding], str]
) -> None:
    for b in bindings:
        keys = binding_keys(b, key_display)
        text.append(f"  {clean(keys, max_len=40):<16}", style="bold")  # keymap: a config file
        text.append(f"{b.description}\n")


def help_text(
    bindings: Sequence[Binding],
    key_display: Callable[[Binding], str] = _plain_key_display,
    sections: Sequence[Section] = (),
) -> Text:
    text = Text()
    text.append("voltui keys\n\n", style="bold")
    _binding_lines(text, bindings, key_display)
    for title, panel_bindings in sections:
        text.append(f"\n{title}\n", style="bold")
        _binding_lines(text, panel_bindings, key_display)
    text.append("\nDAG symbols\n", style="bold")
    text.append(f"  {SYMBOLS}\n")
    text.append("\nescape or ? closes this help", style="dim")
    return text


class HelpScreen(ModalScreen[None]):
    """Lists the bindings it is given (the app passes its own BINDINGS), then each section
    (a panel's own keys) under its title."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 80; max-width: 95%; height: auto; max-height: 90%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    HelpScreen Static { height: auto; }
    """
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close", id="help.close")]

    def __init__(self, bindings: Sequence[Binding], sections: Sequence[Section] = ()) -> None:
        super().__init__()
        self.bindings = bindings
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            body = help_text(self.bindings, self.app.get_key_display, self.sections)
            yield Static(body, id="help-body")
        yield Footer()

    def action_close(self) -> None:
        self.dismiss(None)
