"""Every binding of the dashboard with its key and what it does."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

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


def help_text(
    bindings: list[Binding], key_display: Callable[[Binding], str] = _plain_key_display
) -> Text:
    text = Text()
    text.append("voltui keys\n\n", style="bold")
    for b in bindings:
        keys = binding_keys(b, key_display)
        text.append(f"  {clean(keys, max_len=40):<16}", style="bold")  # keymap: a config file
        text.append(f"{b.description}\n")
    text.append("\nDAG symbols\n", style="bold")
    text.append(f"  {SYMBOLS}\n")
    text.append("\nescape or ? closes this help", style="dim")
    return text


class HelpScreen(ModalScreen[None]):
    """Lists the bindings it is given (the app passes its own BINDINGS)."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 80; max-width: 95%; height: auto; max-height: 90%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    HelpScreen Static { height: auto; }
    """
    BINDINGS = [Binding("escape,question_mark,q", "close", "Close", id="help.close")]

    def __init__(self, bindings: list[Binding]) -> None:
        super().__init__()
        self.bindings = bindings

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(help_text(self.bindings, self.app.get_key_display), id="help-body")
        yield Footer()

    def action_close(self) -> None:
        self.dismiss(None)
