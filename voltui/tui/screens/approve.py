"""Approve or reject a waiting approval step, with an optional comment, after confirming."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from voltui.safetext import clean
from voltui.tui.state import PendingApproval


class DecisionScreen(ModalScreen[str | None]):
    """Dismisses with the comment ("" for none) on confirm, None on escape or No.

    The question names run, step, prompt and the decision, so a stray `a` or `x` can never
    decide anything without a second, deliberate key.
    """

    DEFAULT_CSS = """
    DecisionScreen { align: center middle; }
    DecisionScreen > Vertical {
        width: 70; max-width: 95%; height: auto; padding: 1 2;
        border: thick $warning; background: $surface;
    }
    DecisionScreen #decision-question { margin-bottom: 1; }
    DecisionScreen Input { margin-bottom: 1; }
    DecisionScreen Horizontal { height: auto; align: center middle; }
    DecisionScreen Button { margin: 0 2; }
    """
    BINDINGS = [Binding("escape", "answer(False)", "Back", id="decision.no")]

    def __init__(self, approval: PendingApproval, *, approve: bool) -> None:
        super().__init__()
        self.approval = approval
        self.approve = approve

    def compose(self) -> ComposeResult:
        verb = "Approve" if self.approve else "Reject"
        question = Text.assemble(
            (f"{verb} ", "bold"),
            f"step {clean(self.approval.step_id)} of run {self.approval.run_id[:12]}?\n",
            clean(self.approval.prompt),
        )
        with Vertical():
            yield Static(question, id="decision-question")
            yield Input(placeholder="comment (optional)", id="decision-comment", max_length=2000)
            with Horizontal():
                yield Button(f"{verb} (enter)", variant="warning", id="yes")
                yield Button("Back (esc)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip())

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "yes":
            self.dismiss(self.query_one(Input).value.strip())
        else:
            self.dismiss(None)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(self.query_one(Input).value.strip() if yes else None)
