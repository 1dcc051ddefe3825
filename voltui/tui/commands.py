"""The command palette (`ctrl+p` or `:`): the dashboard's actions, offered as they fit.

Commands follow the context the palette was opened in: "Cancel run" appears only for an active
run, "Replay view" only for a finished one, "Start workflow" once per workflow in the engine's
catalogue, and nothing that changes the engine in read-only mode. Theme switching and the other
system commands come from Textual's own provider, which stays registered next to this one.

Names and ids come from workflow files, so every prompt is built as `Content` from plain text
(Textual's `Matcher.highlight` would read the candidate as markup); help texts are escaped,
since the palette reads them as markup (`[demo] Simulated load` lost its `[demo]`).

The workflow list comes from the app's `WorkflowCatalogue`, fetched in the background, so the
palette opens without asking the engine anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from textual.command import DiscoveryHit, Hit, Hits, Matcher, Provider
from textual.content import Content
from textual.markup import escape

from voltui.engine.api import WorkflowInfo
from voltui.safetext import clean

if TYPE_CHECKING:
    from voltui.tui.app import VoltApp


MAX_RUN_COMMANDS = 50
"""Runs offered by "Open run" when searching (newest first); more would only add noise."""


@dataclass(frozen=True, slots=True)
class Command:
    """One palette entry; `discover` entries show before anything is typed."""

    name: str
    callback: Callable[[], Any]
    help: str
    discover: bool = True


def _highlight(matcher: Matcher, candidate: str) -> Content:
    """The candidate with the matched characters styled, never parsed as markup."""
    content = Content(candidate)
    score, offsets = matcher.fuzzy_search.match(matcher.query, candidate)
    if not score:
        return content
    for offset in offsets:
        if not candidate[offset].isspace():
            content = content.stylize(matcher.match_style, offset, offset + 1)
    return content


class VoltCommands(Provider):
    """Dashboard actions for the palette, fitted to the selected run and the screen."""

    _workflows: list[WorkflowInfo]

    async def startup(self) -> None:
        """The workflows as the app last fetched them (waits only for the very first fetch)."""
        self._workflows = await self._app.catalogue.get()

    @property
    def _app(self) -> VoltApp:
        return cast("VoltApp", self.app)

    def commands(self) -> list[Command]:
        """Everything that fits now, most useful first."""
        app = self._app
        on_dashboard = self.screen is app.screen_stack[0]
        writable = not app.read_only
        out: list[Command] = []
        view = app.context_run(self.screen)
        if view is not None:
            run = view.run
            short = clean(run.id[:12])
            if on_dashboard:
                out.append(
                    Command(f"Open run {short}", partial(app.action_detail, run.id), "Steps, logs")
                )
            if writable and not run.state.finished:
                out.append(Command(f"Cancel run {short}", app.action_cancel_run, "Asks to confirm"))
            if run.state.finished:
                if writable:
                    if run.state != "succeeded":
                        out.append(
                            Command(
                                f"Replay failed {short}",
                                partial(app.action_replay, "failed"),
                                "New run: failed and later steps again, the rest cached",
                            )
                        )
                    out.append(
                        Command(
                            f"Replay all {short}",
                            partial(app.action_replay, "all"),
                            "New run: every step again",
                        )
                    )
                if on_dashboard:
                    out.append(
                        Command(
                            f"Replay view {short}",
                            partial(app.action_replay_view, run.id),
                            "Step through the recorded events",
                        )
                    )
        if on_dashboard:
            out += [
                Command("Filter events…", app.action_filter, "Regex over the event stream"),
                Command("Clear event filters", app.action_clear_filter, "Show every event"),
                Command("Toggle compact DAG", app.action_toggle_compact, "One cell per step"),
                Command(
                    "Pause or resume events", app.action_toggle_pause, "Freeze the event stream"
                ),
            ]
            if view is not None:
                out.append(
                    Command(
                        f"Only events of run {clean(view.run.id[:12])}",
                        app.action_filter_run,
                        "Toggle the run filter",
                    )
                )
        if writable:
            out.append(Command("Start workflow…", app.action_start, "Pick a workflow and inputs"))
            for wf in self._workflows:
                wid = clean(wf.id, max_len=60)
                required = [n for n, spec in wf.inputs.items() if spec.required]
                if required:
                    callback: Callable[[], Any] = partial(app.action_start, wf.id)
                    help_text = f"asks for {', '.join(clean(n, max_len=20) for n in required)}"
                else:
                    callback = partial(app.start_workflow, wf.id)
                    help_text = clean(wf.name, max_len=60)
                out.append(Command(f"Start workflow {wid}", callback, help_text))
        if on_dashboard and app.state is not None:
            current = view.run.id if view is not None else None
            for rv in app.state.runs_newest_first()[:MAX_RUN_COMMANDS]:
                if rv.run.id != current:
                    name = clean(rv.run.workflow_name or rv.run.workflow_id, max_len=40)
                    out.append(
                        Command(
                            f"Open run {clean(rv.run.id[:12])} {name}",
                            partial(app.action_detail, rv.run.id),
                            str(rv.run.state),
                            discover=False,
                        )
                    )
        return out

    async def discover(self) -> Hits:
        for command in self.commands():
            if command.discover:
                yield DiscoveryHit(
                    Content(command.name),
                    command.callback,
                    text=command.name,
                    help=escape(command.help),
                )

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self.commands():
            score = matcher.match(command.name)
            if score > 0:
                yield Hit(
                    score,
                    _highlight(matcher, command.name),
                    command.callback,
                    text=command.name,
                    help=escape(command.help),
                )
