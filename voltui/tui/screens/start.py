"""Start a workflow: pick it from the engine's catalogue, then fill in its inputs.

A workflow without inputs starts straight from `enter` on the list (the common case stays one
key). One with inputs opens a form with a field per input, prefilled with its default; every
field is checked as it is typed with the engine's own coercion (`coerce_value`), so what the
form accepts is exactly what `start_workflow` accepts, and the run cannot be started while a
field is wrong.

A workflow with a `budget:` also opens the form: its token and dollar limits are fields too,
prefilled with the file's, and a changed one becomes this run's own budget
(`StartRequest.budget`, the same as `voltui run --budget-usd`); an emptied one means no limit.

Everything shown comes from a workflow file, so all of it passes `clean` first, form fields
included: an Input writes its value to the terminal as it is. A default that `clean` would
change (an escape sequence, a bidi override) is not put in the field at all; the field stays
empty, which means "the default", and its placeholder shows the cleaned default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, OptionList, Static
from textual.widgets.option_list import Option

from voltui.engine.api import StartRequest, WorkflowInfo
from voltui.engine.inputs import coerce_value
from voltui.engine.models import BudgetSpec, InputSpec
from voltui.safetext import clean


class WorkflowList(OptionList):
    """The workflow list, with the cursor keys every dashboard list has (`j`/`k`, `g`/`G`)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False, id="nav.down"),
        Binding("k", "cursor_up", "Up", show=False, id="nav.up"),
        Binding("g", "first", "First", show=False, id="nav.first"),
        Binding("G", "last", "Last", show=False, id="nav.last"),
    ]


def _prompt(wf: WorkflowInfo) -> Text:
    text = Text()
    text.append(clean(wf.name, max_len=50), style="bold")
    text.append(f"  ({clean(wf.id, max_len=40)}, {wf.steps} steps")
    if wf.inputs:
        text.append(f", {len(wf.inputs)} input{'s' if len(wf.inputs) != 1 else ''}")
    text.append(")")
    if wf.description:
        text.append("\n  " + clean(wf.description, max_len=76), style="dim")
    return text


def render_value(value: Any) -> str:
    """A default as the user would type it (`true`, not `True`; nothing for no default)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_text(spec: InputSpec) -> tuple[str, str]:
    """The form field's initial value and placeholder for an input, both safe to display.

    A default that is not plain printable text is left out of the field (an empty field means
    the default, so submitting still sends the default itself, unaltered) and shown cleaned in
    the placeholder instead.
    """
    if spec.required:
        return "", "required"
    default = render_value(spec.default)
    if clean(default) == default:
        return default, "empty: the default"
    return "", f"empty: the default ({clean(default, max_len=200)})"


def check_field(spec: InputSpec, raw: str) -> tuple[Any, str | None]:
    """The typed value of one field, or an error message; the same rules as `resolve_inputs`.

    An empty field means "not given": the default, or an error for a required input.
    """
    if raw == "" or (spec.type != "string" and not raw.strip()):
        if spec.required:
            return None, "required: type a value"
        return spec.default, None
    try:
        value = coerce_value(spec, raw)
    except ValueError as exc:
        return None, str(exc)
    if spec.choices is not None and value not in spec.choices:
        options = ", ".join(render_value(c) for c in spec.choices)
        return None, f"must be one of {options}"
    return value, None


BUDGET_FIELDS = {"tokens": "LLM budget of this run: tokens", "usd": "LLM budget of this run: US$"}


def budget_text(budget: BudgetSpec | None, which: str) -> str:
    value = getattr(budget, which, None) if budget is not None else None
    return "" if value is None else f"{value:g}" if which == "usd" else str(value)


def check_budget(which: str, raw: str) -> tuple[int | float | None, str | None]:
    """One budget field: empty is no limit; else a whole number of tokens or dollars above 0."""
    text = raw.strip().removeprefix("$") if which == "usd" else raw.strip()
    if not text:
        return None, None
    try:
        value: int | float = int(text) if which == "tokens" else float(text)
    except ValueError:
        what = "a whole number of tokens" if which == "tokens" else "an amount like 2.50"
        return None, f"expected {what}, or nothing for no limit"
    if not 0 < value < float("inf"):
        return None, "must be above 0 (or empty for no limit)"
    return value, None


def _label(name: str, spec: InputSpec) -> Text:
    text = Text()
    text.append(clean(name, max_len=40), style="bold")
    bits = [spec.type, "required" if spec.required else f"default {render_value(spec.default)}"]
    if spec.choices:
        bits.append("one of " + ", ".join(render_value(c) for c in spec.choices))
    text.append(f"  ({clean(', '.join(bits), max_len=120)})")
    if spec.description:
        text.append("\n" + clean(spec.description, max_len=160), style="dim")
    return text


class StartScreen(ModalScreen[StartRequest | None]):
    """Dismisses with a `StartRequest` (inputs typed and checked), or None on escape."""

    DEFAULT_CSS = """
    StartScreen { align: center middle; }
    StartScreen > Vertical {
        width: 90; max-width: 95%; height: auto; max-height: 90%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    StartScreen #start-title { margin-bottom: 1; }
    StartScreen OptionList { height: auto; max-height: 20; }
    StartScreen #start-form { height: auto; max-height: 1fr; display: none; }
    StartScreen.-form #start-form { display: block; }
    StartScreen.-form OptionList { display: none; }
    StartScreen .field-label { margin-top: 1; }
    StartScreen .field-error { color: $error; height: auto; }
    StartScreen .field-error.-empty { display: none; }
    StartScreen Input.-invalid { border: tall $error; }
    StartScreen #start-buttons { height: auto; margin-top: 1; align: left middle; }
    StartScreen #start-buttons Static { width: 1fr; color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="start.close"),
        Binding("ctrl+s", "submit", "Start", id="start.submit"),
    ]

    def __init__(self, workflows: list[WorkflowInfo], *, chosen: str | None = None) -> None:
        """`chosen` (a workflow id) opens that workflow's inputs form at once."""
        super().__init__()
        self.workflows = workflows
        self._initial = chosen
        self.chosen: WorkflowInfo | None = None
        """The workflow whose form is shown; None while picking."""
        self.errors: dict[str, str] = {}
        """Input name -> message, for the fields that are wrong right now."""
        self._fields: dict[str, str] = {}
        """Widget id suffix -> input name (input names are not always valid widget ids)."""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                Text("Start a workflow (enter to choose, escape to close)"), id="start-title"
            )
            if self.workflows:
                yield WorkflowList(*[Option(_prompt(wf), id=wf.id) for wf in self.workflows])
            else:
                yield Static(Text(self._no_workflows_hint()), id="start-empty")
            yield VerticalScroll(id="start-form")
        yield Footer()

    def _no_workflows_hint(self) -> str:
        """Name where the engine looked and how to point it elsewhere (issue: a bare 'none
        found' left people guessing which folder and which flag)."""
        engine = getattr(self.app, "engine", None)
        if getattr(engine, "connection", "embedded") == "embedded":
            return clean(
                "No workflows found. The dashboard offers the files of its workflows folder, by "
                f"default ./sample-workflows in the folder voltui was started from ({Path.cwd()}"
                "). Start voltui from the repository, pass --workflows DIR, or set "
                "workflows_dir in voltui.toml; `voltui run FILE` runs any workflow file."
            )
        return (
            "No workflows found on the server: it offers the files of its own workflows "
            "folder. Start it with `voltui serve --workflows DIR` (or set workflows_dir in its "
            "voltui.toml)."
        )

    async def on_mount(self) -> None:
        wf = next((w for w in self.workflows if w.id == self._initial), None)
        if wf is not None and (wf.inputs or wf.budget is not None):
            await self._open_form(wf)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """ctrl+s (start) only means something, and only shows, on the inputs form."""
        if action == "submit":
            return self.chosen is not None
        return True

    # ------------------------------------------------------------------ picking

    async def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        wf = next((w for w in self.workflows if w.id == event.option.id), None)
        if wf is None:
            return
        if not wf.inputs and wf.budget is None:
            self.dismiss(StartRequest(workflow=wf.id))
            return
        await self._open_form(wf)

    async def _open_form(self, wf: WorkflowInfo) -> None:
        self.chosen = wf
        self.errors = {}
        self._fields = {}
        form = self.query_one("#start-form", VerticalScroll)
        await form.remove_children()
        widgets: list[Static | Input | Horizontal] = []
        for index, (name, spec) in enumerate(wf.inputs.items()):
            key = f"f{index}"
            self._fields[key] = name
            widgets.append(Static(_label(name, spec), classes="field-label"))
            value, placeholder = field_text(spec)
            widgets.append(
                Input(
                    value=value,
                    placeholder=placeholder,
                    id=f"input-{key}",
                    select_on_focus=False,
                )
            )
            widgets.append(Static(Text(""), id=f"error-{key}", classes="field-error -empty"))
        if wf.budget is not None:
            for which, label in BUDGET_FIELDS.items():
                widgets.append(Static(Text(label, style="bold"), classes="field-label"))
                widgets.append(
                    Input(
                        value=budget_text(wf.budget, which),
                        placeholder="no limit",
                        id=f"budget-{which}",
                        select_on_focus=False,
                    )
                )
                widgets.append(
                    Static(Text(""), id=f"budget-error-{which}", classes="field-error -empty")
                )
        widgets.append(
            Horizontal(
                Button("Start (ctrl+s)", variant="primary", id="start-submit"),
                Static(Text("  escape: back to the list")),
                id="start-buttons",
            )
        )
        await form.mount_all(widgets)
        self.query_one("#start-title", Static).update(
            Text.assemble("Inputs of ", (clean(wf.name, max_len=60), "bold"))
        )
        self.add_class("-form")
        self.refresh_bindings()
        for key in self._fields:
            self._check(key)
        first = f"#input-{next(iter(self._fields))}" if self._fields else "#budget-tokens"
        self.query_one(first, Input).focus()

    def _back_to_list(self) -> None:
        self.chosen = None
        self.remove_class("-form")
        self.refresh_bindings()
        self.query_one("#start-title", Static).update(
            Text("Start a workflow (enter to choose, escape to close)")
        )
        options = self.query(OptionList)
        if options:
            options.first().focus()

    # ------------------------------------------------------------------ the form

    def _check(self, key: str) -> tuple[Any, str | None]:
        """Check one field and show (or clear) its message under it."""
        assert self.chosen is not None
        name = self._fields[key]
        field = self.query_one(f"#input-{key}", Input)
        value, error = check_field(self.chosen.inputs[name], field.value)
        label = self.query_one(f"#error-{key}", Static)
        if error is None:
            self.errors.pop(name, None)
            label.update(Text(""))
            label.add_class("-empty")
            field.remove_class("-invalid")
        else:
            self.errors[name] = error
            label.update(Text(f"{clean(name, max_len=40)} {clean(error, max_len=200)}"))
            label.remove_class("-empty")
            field.add_class("-invalid")
        return value, error

    def _check_budget(self, which: str) -> tuple[int | float | None, str | None]:
        field = self.query_one(f"#budget-{which}", Input)
        value, error = check_budget(which, field.value)
        label = self.query_one(f"#budget-error-{which}", Static)
        label.update(Text(error or ""))
        label.set_class(error is None, "-empty")
        field.set_class(error is not None, "-invalid")
        return value, error

    def _budget(self) -> tuple[BudgetSpec | None, str | None]:
        """This run's budget: only the limits changed from the file's (None: none changed),
        or the id of the first wrong field."""
        wf = self.chosen
        if wf is None or wf.budget is None:
            return None, None
        changed: dict[str, int | float | None] = {}
        for which in BUDGET_FIELDS:
            value, error = self._check_budget(which)
            if error is not None:
                return None, f"#budget-{which}"
            if value != getattr(wf.budget, which):
                changed[which] = value
        return (BudgetSpec(**changed) if changed else None), None  # type: ignore[arg-type]

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self.chosen is not None and event.input.id and event.input.id.startswith("input-"):
            self._check(event.input.id.removeprefix("input-"))
        elif self.chosen is not None and event.input.id and event.input.id.startswith("budget-"):
            self._check_budget(event.input.id.removeprefix("budget-"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter moves to the next field, then to the Start button (never starts by itself)."""
        event.stop()
        self.focus_next()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "start-submit":
            self.action_submit()

    def action_submit(self) -> None:
        wf = self.chosen
        if wf is None:
            return
        values: dict[str, Any] = {}
        first_bad: str | None = None
        for key, name in self._fields.items():
            value, error = self._check(key)
            if error is not None:
                first_bad = first_bad or key
            else:
                values[name] = value
        if first_bad is not None:
            self.query_one(f"#input-{first_bad}", Input).focus()
            return
        budget, bad_budget = self._budget()
        if bad_budget is not None:
            self.query_one(bad_budget, Input).focus()
            return
        self.dismiss(StartRequest(workflow=wf.id, inputs=values, budget=budget))

    def action_back(self) -> None:
        if self.chosen is not None:
            self._back_to_list()
        else:
            self.dismiss(None)
