"""The one state -> glyph -> colour table (DESIGN.md rule 10), for every front end.

Run states and step states share their names (`running`, `failed`, `cancelled`, ...), so one
table keyed by the state's value serves both. Each state has:

- a glyph that carries the meaning without colour (NO_COLOR, screenshots, logs, copy and paste);
- a Textual theme variable (`$success`, `$error`, ...) for the dashboard, so every theme,
  including `ansi-dark`/`ansi-light`, colours states the same way in every panel;
- an ANSI colour name for Rich output in the CLI, which has no theme.

This module imports neither the engine, nor Textual, nor Rich: the CLI, the dashboard and tests
all read it, and the import-hygiene test keeps the engine free of UI code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StateLook:
    """How one state is shown."""

    glyph: str
    theme: str
    """Textual theme variable, e.g. `$success`."""
    ansi: str
    """Rich colour name for terminals without a theme (the CLI)."""
    bold: bool = False
    """Drawn bold: the states that ask for attention (running, failed, retrying)."""

    @property
    def theme_style(self) -> str:
        """A Textual style string, e.g. `bold $error` (for `Content` and CSS)."""
        return f"bold {self.theme}" if self.bold else self.theme

    @property
    def ansi_style(self) -> str:
        """A Rich style string, e.g. `bold red` (for the CLI)."""
        return f"bold {self.ansi}" if self.bold else self.ansi


STATES: dict[str, StateLook] = {
    # steps and runs
    "pending": StateLook("·", "$text-muted", "bright_black"),
    "queued": StateLook("·", "$text-muted", "bright_black"),
    "waiting": StateLook("…", "$text-muted", "yellow"),
    "running": StateLook("▶", "$accent", "cyan", bold=True),
    "retrying": StateLook("↻", "$warning", "yellow", bold=True),
    "succeeded": StateLook("✓", "$success", "green"),
    "cached": StateLook("◆", "$success", "green"),
    "failed": StateLook("✗", "$error", "red", bold=True),
    "skipped": StateLook("\u2013", "$text-muted", "bright_black"),  # en dash
    "cancelling": StateLook("□", "$warning", "magenta", bold=True),
    "cancelled": StateLook("■", "$warning", "magenta"),
    "interrupted": StateLook("!", "$warning", "magenta"),
}
"""Every run and step state. Unknown states (a newer engine) fall back to `UNKNOWN`."""

UNKNOWN = StateLook("?", "$text-muted", "bright_black")


def look(state: object) -> StateLook:
    """The look of a state (an enum member or its value); `UNKNOWN` for one not in the table."""
    return STATES.get(str(getattr(state, "value", state)), UNKNOWN)


def glyph(state: object) -> str:
    return look(state).glyph


def label(state: object) -> str:
    """`✓ succeeded`: glyph and name, readable without colour."""
    value = str(getattr(state, "value", state))
    return f"{look(value).glyph} {value}"


def component_class(state: object) -> str:
    """The Textual component class that colours a state in a table (`state--failed`)."""
    return f"state--{getattr(state, 'value', state)}"


def component_css(selector: str) -> str:
    """CSS giving each state's component class its theme colour under `selector`, so a
    DataTable can look the styles up with `get_component_rich_style` (rich cells cannot use
    theme variables directly)."""
    rules = [
        f"{selector} > .{component_class(name)} {{ color: {lk.theme};"
        f"{' text-style: bold;' if lk.bold else ''} }}"
        for name, lk in STATES.items()
    ]
    return "\n".join(rules)


COMPONENT_CLASSES: frozenset[str] = frozenset(component_class(name) for name in STATES)

CLI_STYLE: dict[str, tuple[str, str]] = {
    name: (lk.glyph, lk.ansi_style) for name, lk in STATES.items()
}
"""`state -> (glyph, Rich style)` for the CLI's tables and lines."""
