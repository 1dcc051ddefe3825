"""Pick a workflow to start from the engine's catalogue (`list_workflows`)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from voltui.engine.api import WorkflowInfo
from voltui.safetext import clean


def _prompt(wf: WorkflowInfo) -> Text:
    text = Text()
    text.append(clean(wf.name, max_len=50), style="bold")
    text.append(f"  ({clean(wf.id, max_len=40)}, {wf.steps} steps)")
    if wf.description:
        text.append("\n  " + clean(wf.description, max_len=76), style="dim")
    return text


class StartScreen(ModalScreen[str | None]):
    """Dismisses with the chosen workflow id, or None on escape."""

    DEFAULT_CSS = """
    StartScreen { align: center middle; }
    StartScreen > Vertical {
        width: 90; max-width: 95%; height: auto; max-height: 90%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    StartScreen #start-title { margin-bottom: 1; }
    StartScreen OptionList { height: auto; max-height: 20; }
    """
    BINDINGS = [Binding("escape", "dismiss_none", "Close", id="start.close")]

    def __init__(self, workflows: list[WorkflowInfo]) -> None:
        super().__init__()
        self.workflows = workflows

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                Text("Start a workflow (enter to start with default inputs, escape to close)"),
                id="start-title",
            )
            if self.workflows:
                yield OptionList(*[Option(_prompt(wf), id=wf.id) for wf in self.workflows])
            else:
                yield Static(Text("No workflows found in the workflows folder."))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
