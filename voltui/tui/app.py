"""VoltApp: the Textual dashboard over any `EngineAPI` (embedded or, later, remote).

The screen is a fold over events: one snapshot builds a `DashboardState`, a worker appends
every later event batch to a bounded deque, and a timer folds the deque into the state and
repaints only the panels that changed, inside one `batch_update`. A flood of events therefore
costs a few repaints, never one per event. Only EngineAPI methods are called, never engine
internals, so the same app works attached to a remote engine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from rich.text import Text
from textual import work
from textual.actions import ActionParseResult, parse
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid
from textual.dom import DOMNode
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Static

from voltui.engine.api import (
    EngineAPI,
    ReplayRequest,
    StartRequest,
    SubscriptionLagged,
)
from voltui.engine.errors import UserError
from voltui.engine.models import Event
from voltui.safetext import clean
from voltui.tui.screens import ConfirmScreen, HelpScreen, StartScreen
from voltui.tui.state import PANELS, DashboardState
from voltui.tui.widgets import (
    AgentsTable,
    CachePanel,
    DagView,
    EventsLog,
    HeaderBar,
    HealthTable,
    RunsTable,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_PENDING = 50_000
"""Events waiting for the next fold; beyond this the app resyncs from a fresh snapshot."""
SLOW_REFRESH = 1.0
"""Seconds between repaints of time-based figures (durations, uptime) with no new events."""
WRITE_ACTIONS = frozenset({"start", "cancel_run", "replay"})
"""Actions that change the engine; refused in read-only mode."""

PANEL_KEYS: tuple[tuple[str, str, str], ...] = (
    ("1", "runs", "Runs"),
    ("2", "dag", "DAG"),
    ("3", "agents", "Agents"),
    ("4", "events", "Events"),
    ("5", "health", "Health"),
    ("6", "cache", "Cache"),
)


class VoltApp(App[None]):
    """The voltui dashboard."""

    CSS_PATH = "app.tcss"
    TITLE = "voltui"
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [
        (0, "-tiny"),
        (60, "-narrow"),
        (110, "-normal"),
    ]
    VERTICAL_BREAKPOINTS: ClassVar[list[tuple[int, str]] | None] = [
        (0, "-tiny-h"),
        (20, "-short"),
        (32, "-tall"),
    ]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "start", "Start", id="start"),
        Binding("c", "cancel_run", "Cancel", id="cancel"),
        Binding("r", "replay('failed')", "Replay failed", id="replay_failed"),
        Binding("R", "replay('all')", "Replay all", id="replay_all"),
        Binding("space", "toggle_pause", "Pause events", id="pause"),
        Binding("m", "maximize_panel", "Maximise", id="maximize"),
        Binding("question_mark", "help", "Help", key_display="?", id="help"),
        Binding("q", "request_quit", "Quit", id="quit"),
        *[
            Binding(
                key, f"focus_panel('{panel}')", f"Focus {title}", show=False, id=f"focus.{panel}"
            )
            for key, panel, title in PANEL_KEYS
        ],
        Binding("tab", "app.focus_next", "Next panel", show=False, id="focus.next"),
        Binding("shift+tab", "app.focus_previous", "Previous panel", show=False, id="focus.prev"),
    ]

    def __init__(
        self, engine: EngineAPI, *, read_only: bool = False, refresh_hz: float = 10.0
    ) -> None:
        super().__init__()
        self.engine = engine
        self.read_only = read_only
        self.refresh_hz = refresh_hz
        self.state: DashboardState | None = None
        self.selected_run: str | None = None
        self._pending: deque[Event] = deque()
        self._resync = False
        self._want_select: str | None = None
        self._detail_loading: set[str] = set()
        self._last_slow = 0.0

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield HeaderBar(id="header")
        yield Static(Text("Terminal too small for voltui: make it at least 60x20."), id="too-small")
        with Grid(id="panels"):
            yield RunsTable(id="runs")
            yield DagView(id="dag")
            yield AgentsTable(id="agents")
            yield HealthTable(id="health")
            yield EventsLog(id="events")
            yield CachePanel(id="cache")
        yield Footer()

    async def on_mount(self) -> None:
        titles = {panel: f"{key} {title}" for key, panel, title in PANEL_KEYS}
        for panel, title in titles.items():
            if panel != "events":  # the events log manages its own title (PAUSED)
                self.query_one(f"#{panel}").border_title = title
        await self._take_snapshot()
        self.query_one(RunsTable).focus()
        self.run_worker(self._consume(), name="events", group="events", exclusive=True)
        self.set_interval(1 / max(0.5, self.refresh_hz), self._tick, name="fold")

    # ------------------------------------------------------------------ the fold

    async def _take_snapshot(self) -> None:
        self.state = DashboardState.from_snapshot(await self.engine.snapshot())
        self._pending.clear()
        self._resync = False
        with self.batch_update():
            self._refresh_panels(set(PANELS))

    async def _consume(self) -> None:
        """Append event batches to the deque; the timer does the folding."""
        while True:
            assert self.state is not None
            stream = self.engine.subscribe("*", since_seq=self.state.seq)
            try:
                async for batch in stream:
                    if len(self._pending) + len(batch) > MAX_PENDING:
                        self._resync = True  # the fold fell behind: cheaper to start again
                        break
                    self._pending.extend(batch)
                else:
                    return  # the engine closed the stream (it stopped)
            except SubscriptionLagged:
                self._resync = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("event subscription failed")
                self.notify(f"event stream lost: {exc}; retrying", severity="error", markup=False)
                await asyncio.sleep(1.0)
                continue
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()  # unsubscribe now, not whenever the generator is collected
            if self._resync:
                await self._take_snapshot()

    def _tick(self) -> None:
        if self.state is None or self._resync:
            return
        changed: set[str] = set()
        if self._pending:
            batch = list(self._pending)
            self._pending.clear()
            changed = set(self.state.apply(batch))
        now = time.monotonic()
        if now - self._last_slow >= SLOW_REFRESH:
            self._last_slow = now
            changed |= {"header", "runs", "dag"}
        if changed:
            with self.batch_update():
                self._refresh_panels(changed)

    def _refresh_panels(self, names: Iterable[str]) -> None:
        state = self.state
        if state is None:
            return
        names = set(names)
        if "header" in names:
            self.query_one(HeaderBar).refresh_from(state, read_only=self.read_only)
        if "health" in names:
            self.query_one(HealthTable).refresh_from(state)
        if "agents" in names:
            self.query_one(AgentsTable).refresh_from(state)
        if "runs" in names:
            runs = self.query_one(RunsTable)
            runs.refresh_from(state)
            if self._want_select is not None and self._want_select in runs.rows:
                runs.move_cursor(row=runs.get_row_index(self._want_select))
                self._want_select = None
            self._select_run(runs.selected_key())
            names.add("dag")
        if "dag" in names:
            self._refresh_dag()
        if "events" in names:
            self.query_one(EventsLog).refresh_from(state)
        if "cache" in names:
            self.query_one(CachePanel).refresh_from(state)

    # ------------------------------------------------------------------ selection

    def _select_run(self, run_id: str | None) -> None:
        if run_id == self.selected_run:
            return
        self.selected_run = run_id
        self._refresh_dag()

    def _refresh_dag(self) -> None:
        state = self.state
        view = state.runs.get(self.selected_run) if state and self.selected_run else None
        dag = self.query_one(DagView)
        if view is not None:
            dag.border_title = Text(f"2 DAG {view.run.id[:12]}")
            if not view.steps and view.run.id not in self._detail_loading:
                self._detail_loading.add(view.run.id)
                self.run_worker(self._load_detail(view.run.id), group="detail")
        else:
            dag.border_title = "2 DAG"
        dag.refresh_from(view)

    async def _load_detail(self, run_id: str) -> None:
        """Runs first seen in a snapshot have no DAG yet: fetch it once."""
        detail = await self._engine_call(self.engine.get_run(run_id))
        if detail is not None and self.state is not None:
            self.state.add_run_detail(detail)
            self._refresh_dag()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if isinstance(event.data_table, RunsTable) and event.row_key.value is not None:
            self._select_run(event.row_key.value)

    # ------------------------------------------------------------------ engine calls

    async def _engine_call(self, call: Awaitable[T]) -> T | None:
        """Await an engine call; a user mistake or a transport failure becomes a notification,
        never a crash of the dashboard."""
        try:
            return await call
        except UserError as exc:
            self.notify(str(exc), severity="error", timeout=8, markup=False)
        except Exception as exc:
            log.exception("engine call failed")
            self.notify(
                f"engine error: {clean(exc, max_len=300)}",
                severity="error",
                timeout=8,
                markup=False,
            )
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.read_only and action in WRITE_ACTIONS:
            return None  # shown greyed in the footer, and refused
        return True

    async def run_action(
        self,
        action: str | ActionParseResult,
        default_namespace: DOMNode | None = None,
        namespaces: Any = None,
    ) -> bool:
        handled = await super().run_action(action, default_namespace, namespaces)
        if not handled and self.read_only:
            _target, name, _params = parse(action) if isinstance(action, str) else action
            if name in WRITE_ACTIONS:
                self.notify(
                    "read-only mode: this dashboard cannot change the engine",
                    severity="warning",
                    markup=False,
                )
                return True
        return handled

    @work(group="action", exclusive=True)
    async def action_start(self) -> None:
        workflows = await self._engine_call(self.engine.list_workflows())
        if workflows is None:
            return
        choice = await self.push_screen_wait(StartScreen(workflows))
        if not choice:
            return
        run = await self._engine_call(self.engine.start_workflow(StartRequest(workflow=choice)))
        if run is not None:
            self._want_select = run.id
            self.notify(f"started {clean(run.workflow_name)} as run {run.id[:12]}", markup=False)

    def _selected_view_or_warn(self) -> Any:
        state = self.state
        view = state.runs.get(self.selected_run) if state and self.selected_run else None
        if view is None:
            self.notify("select a run in the runs panel first", severity="warning", markup=False)
        return view

    @work(group="action", exclusive=True)
    async def action_cancel_run(self) -> None:
        view = self._selected_view_or_warn()
        if view is None:
            return
        run = view.run
        if run.state.finished:
            self.notify(f"run {run.id[:12]} already {run.state}", severity="warning", markup=False)
            return
        question = Text(f"Cancel run {run.id[:12]} ({clean(run.workflow_name, max_len=60)})?")
        if await self.push_screen_wait(ConfirmScreen(question)):
            done = await self._engine_call(self.engine.cancel_run(run.id))
            if done is not None:
                self.notify(f"run {run.id[:12]} {done.state}", markup=False)

    @work(group="action", exclusive=True)
    async def action_replay(self, mode: Literal["failed", "all"]) -> None:
        view = self._selected_view_or_warn()
        if view is None:
            return
        request = ReplayRequest(run_id=view.run.id, mode=mode)
        run = await self._engine_call(self.engine.replay_run(request))
        if run is not None:
            self._want_select = run.id
            self.notify(f"replaying {view.run.id[:12]} ({mode}) as run {run.id[:12]}", markup=False)

    # ------------------------------------------------------------------ view actions

    def action_toggle_pause(self) -> None:
        events = self.query_one(EventsLog)
        events.set_paused(not events.paused)
        if not events.paused and self.state is not None:
            events.refresh_from(self.state)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            bindings = [b for b in self.BINDINGS if isinstance(b, Binding)]
            self.push_screen(HelpScreen(bindings))

    def action_focus_panel(self, panel: str) -> None:
        """Focus a panel; one hidden at this terminal size is shown maximised instead."""
        container: Widget = self.query_one(f"#{panel}")
        target = container.table if isinstance(container, CachePanel) else container
        if self.screen.maximized is not None:
            self.screen.minimize()
        if not container.display:
            self.screen.maximize(container, container=False)
        target.focus()

    def action_maximize_panel(self) -> None:
        if self.screen.maximized is not None:
            self.screen.minimize()
            self.call_after_refresh(self._refocus_visible)
        elif self.focused is not None:
            self.screen.maximize(self.focused)

    def _refocus_visible(self) -> None:
        """After un-maximising a panel that is hidden at this size, focus the runs panel."""
        focused = self.focused
        if focused is None or not all(
            a.display for a in focused.ancestors_with_self if isinstance(a, Widget)
        ):
            self.query_one(RunsTable).focus()

    @work(group="action", exclusive=True)
    async def action_request_quit(self) -> None:
        active = self.state.active_runs() if self.state else 0
        if active:
            question = Text(
                f"{active} run(s) are active. Quit anyway? An embedded engine stops them "
                "(they become interrupted and can be replayed)."
            )
            if not await self.push_screen_wait(ConfirmScreen(question)):
                return
        self.exit()


# ---------------------------------------------------------------------- development entry


def main_for_dev() -> None:
    """Run the dashboard on an embedded engine over the sample workflows (for development)."""
    from voltui.config import OrchestratorConfig
    from voltui.engine.orchestrator import Orchestrator

    root = Path(__file__).resolve().parents[2]
    db = Path(os.environ.get("VOLTUI_DB") or Path(tempfile.gettempdir()) / "voltui-dev" / "x.db")
    config = OrchestratorConfig(db=db, workflows_dir=root / "sample-workflows")

    async def run() -> None:
        orch = Orchestrator(config)
        await orch.start()
        try:
            await VoltApp(orch).run_async()
        finally:
            await orch.stop()

    asyncio.run(run())
