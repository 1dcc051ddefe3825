"""`y`: what to copy from the dashboard, by focused panel (the app sends it with OSC 52).

Kept apart from the app so the choice is one small, tested function. Everything returned is
cleaned with `voltui.safetext.clean`: a copied error must not carry escape sequences into the
user's clipboard (and from there into a terminal).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from voltui.safetext import clean
from voltui.tui.widgets import AgentsTable, DagView, EventsLog, HealthTable, RunsTable
from voltui.tui.widgets._table import KeyedTable

if TYPE_CHECKING:
    from voltui.tui.app import VoltApp

MAX_CHARS = 10_000


def yank_text(app: VoltApp) -> str | None:
    """The text `y` copies on the dashboard: the selected run's id (runs panel, and anywhere
    else by default), its error if it has one (DAG), the agent id, the component's message, or
    the newest event line in view (events)."""
    focused = app.focused
    state = app.state
    if isinstance(focused, EventsLog):
        return focused.line_in_view()
    if isinstance(focused, HealthTable) and state is not None:
        component = state.components.get(focused.selected_key() or "")
        if component is None:
            return None
        return clean(f"{component.name}: {component.status} {component.message}".strip())
    if isinstance(focused, AgentsTable | KeyedTable) and not isinstance(focused, RunsTable):
        key = focused.selected_key()
        return clean(key) if key else None
    view = app.context_run()
    if view is None:
        return None
    if focused is not None and any(isinstance(a, DagView) for a in focused.ancestors_with_self):
        if view.run.error:
            return clean(view.run.error, max_len=MAX_CHARS)
    return view.run.id
