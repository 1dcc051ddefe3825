"""VoltApp: the Textual dashboard over any `EngineAPI` (embedded or, later, remote).

The screen is a fold over events: one snapshot builds a `DashboardState`, a worker appends
every later event batch to a bounded deque, and a timer folds the deque into the state and
repaints only the panels that changed, inside one `batch_update`. A flood of events therefore
costs a few repaints, never one per event. Only EngineAPI methods are called, never engine
internals, so the same app works attached to a remote engine.

The app exits when its terminal goes away (SIGHUP, or a hung-up / closed stdin), rather than
lingering as an orphan: Textual's input thread would otherwise spin on a hung-up terminal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import select
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from rich.text import Text
from textual import work
from textual.actions import ActionParseResult, parse
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Grid
from textual.content import Content
from textual.dom import DOMNode
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Static

from voltui import states
from voltui.engine.api import (
    ApprovalRequest,
    EngineAPI,
    ReplayRequest,
    StartRequest,
    SubscriptionLagged,
)
from voltui.engine.models import Event, Run
from voltui.safetext import clean, clean_multiline
from voltui.tui.calls import engine_call
from voltui.tui.catalogue import REFRESH_SECONDS, WorkflowCatalogue
from voltui.tui.commands import VoltCommands
from voltui.tui.screens import ConfirmScreen, DecisionScreen, HelpScreen, StartScreen
from voltui.tui.screens.replay import ReplayScreen
from voltui.tui.screens.run_detail import RunDetailScreen
from voltui.tui.screens.workflows import WorkflowsScreen
from voltui.tui.state import PANELS, DashboardState, RunView
from voltui.tui.theme import muted_variables
from voltui.tui.widgets import (
    AgentsTable,
    ApprovalBanner,
    CachePanel,
    DagView,
    EventsLog,
    FilterBar,
    HeaderBar,
    HealthTable,
    RunsTable,
)
from voltui.tui.yank import yank_text

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_PENDING = 50_000
"""Events waiting for the next fold; beyond this the app resyncs from a fresh snapshot."""
DEFAULT_REFRESH_HZ = 10.0
PANEL_TICKS: dict[str, float] = {
    "events": 2,
    "runs": 2.5,
    "dag": 2.5,
    "header": 5,
    "agents": 5,
    "health": 5,
    "cache": 5,
}
"""Fold-timer ticks between two repaints of a panel that keeps changing. The timer runs at
`refresh_hz` (`--refresh`), so with the default 10 Hz a flood repaints the events log at 5 Hz,
the runs and the DAG at 4 Hz and the rest at 2 Hz; a lower `refresh_hz` slows them all. A panel
that was quiet repaints at the next tick, and a key's effect is drawn at once, not on a tick."""
SLOW_REFRESH = 1.0
"""Seconds between repaints of time-based figures (durations, uptime) with no new events."""
WRITE_ACTIONS = frozenset({"start", "cancel_run", "replay", "decide"})
"""Actions that change the engine; refused in read-only mode."""
DASHBOARD_ACTIONS = frozenset(
    {
        "filter",
        "filter_run",
        "clear_filter",
        "toggle_compact",
        "toggle_pause",
        "maximize_panel",
        "focus_panel",
        "detail",
        "replay_view",
        "toggle_heartbeats",
        "workflows",
    }
)
"""Actions about the dashboard's panels: disabled (and hidden) on the run detail and replay
screens, which are plain screens and so still see the app's bindings."""
QUIT_CONFIRM = "quit-confirm"
"""Id of the "quit anyway?" dialog, so a second quit key does not stack another."""
TERMINAL_CHECK = 2.0
"""Seconds between checks that the terminal is still there (see `terminal_lost`)."""
LINK_UP = frozenset({"embedded", "connected"})
"""`EngineAPI.connection` values in which the dashboard's figures are live."""

PANEL_KEYS: tuple[tuple[str, str, str], ...] = (
    ("1", "runs", "Runs"),
    ("2", "dag", "DAG"),
    ("3", "agents", "Agents"),
    ("4", "events", "Events"),
    ("5", "health", "Health"),
    ("6", "cache", "Cache"),
)


def terminal_lost(fd: int) -> bool:
    """Whether `fd` (the terminal's input) has hung up or been closed.

    A hung-up tty (the SSH session or terminal window went away) and a pipe whose writer closed
    poll as POLLHUP/POLLERR without any read, so the check takes no input from Textual's
    reader. Textual's input thread treats an empty read as "no input yet" and would spin.
    """
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        events = poller.poll(0)
    except (OSError, ValueError):
        return True  # fd closed or invalid
    lost = select.POLLHUP | select.POLLERR | select.POLLNVAL
    return any(mask & lost for _fd, mask in events)


class _DiscardWriter:
    """Stands in for Textual's writer thread once the terminal is gone (see
    `VoltApp._terminal_gone`): accepts the driver's writes and drops them."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


@dataclasses.dataclass
class AppStats:
    """What the dashboard has done since it started (`VoltApp.stats`), for benchmarks and
    diagnostics. Figures only grow; compare two readings."""

    events_folded: int = 0
    """Events handed to `DashboardState.apply`."""
    ticks: int = 0
    """Runs of the fold timer."""
    repaints: dict[str, int] = dataclasses.field(default_factory=dict)
    """Repaints by panel name (`voltui.tui.state.PANELS`)."""
    resyncs: int = 0
    """Snapshot reloads after the first: the app fell behind, or its subscription lagged."""

    def copy(self) -> AppStats:
        return dataclasses.replace(self, repaints=dict(self.repaints))


class VoltApp(App[None]):
    """The voltui dashboard."""

    CSS_PATH = "app.tcss"
    TITLE = "voltui"
    COMMANDS = App.COMMANDS | {VoltCommands}
    ALLOW_IN_MAXIMIZED_VIEW = "Footer,HeaderBar,FilterBar"
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
    # The footer shows the everyday keys (it must fit 80 columns); `?` and the command palette
    # list the rest.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help", key_display="?", id="help"),
        Binding("s", "start", "Start", id="start"),
        Binding("c", "cancel_run", "Cancel", id="cancel"),
        Binding("r", "replay('failed')", "Replay failed", id="replay_failed"),
        Binding("R", "replay('all')", "Replay all", show=False, id="replay_all"),
        # Shown only while an approval waits (check_action), so they cost no footer space.
        Binding("a", "decide(True)", "Approve", id="approve"),
        Binding("x", "decide(False)", "Reject", id="reject"),
        Binding("enter", "detail", "Open run", show=False, id="detail"),
        Binding("p", "replay_view", "Replay view", show=False, id="replay_view"),
        Binding("slash", "filter", "Filter", key_display="/", id="filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="filter.clear"),
        Binding("f", "filter_run", "Only this run's events", show=False, id="filter.run"),
        Binding("space", "toggle_pause", "Pause events", id="pause"),
        Binding(
            "M",
            "toggle_heartbeats",
            "Show metrics and health checks",
            show=False,
            id="events.heartbeats",
        ),
        Binding("w", "workflows", "Workflows", show=False, id="workflows"),
        Binding("y", "yank", "Copy (id, error, line)", show=False, id="yank"),
        Binding("v", "toggle_compact", "Compact DAG", show=False, id="dag.compact"),
        Binding("m", "maximize_panel", "Maximise", show=False, id="maximize"),
        # Declaring the palette's binding replaces Textual's own ctrl+p one, so both are here;
        # only ctrl+p has priority (`:` must stay typeable in the filter and input fields).
        Binding("ctrl+p", "command_palette", "Commands", show=False, priority=True, id="palette"),
        Binding(
            "colon", "command_palette", "Commands", key_display=":", show=False, id="palette.colon"
        ),
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
        self,
        engine: EngineAPI,
        *,
        read_only: bool = False,
        refresh_hz: float = DEFAULT_REFRESH_HZ,
        keymap: dict[str, str] | None = None,
        embedded: bool = True,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`keymap` maps binding ids (see `BINDINGS`) to keys, e.g. `{"start": "n"}`, as in
        `OrchestratorConfig.keymap`. `embedded` says the engine runs in this process (quitting
        stops its runs) rather than being attached to.

        `clock` is the wall clock behind everything shown relative to "now" (uptime, durations
        of running steps and runs); `monotonic` times the app's own refreshes and the event
        rate. Tests pass fixed ones so that screenshots do not change from run to run."""
        super().__init__()
        self.engine = engine
        self.catalogue = WorkflowCatalogue(engine)
        """The engine's workflows, fetched in the background for the palette and `s`."""
        self._wall_clock = clock
        self.clock: Callable[[], float] = self._now
        """"Now" for everything shown relative to it: the wall clock, stopped while the
        engine is out of reach (see `DashboardState.frozen_at`)."""
        self.monotonic = monotonic
        # An attached client may be read-only because of the token it used, whatever was asked.
        self.read_only = read_only or getattr(engine, "read_only", False) is True
        self.refresh_hz = refresh_hz
        self.embedded = embedded
        if keymap:
            self.set_keymap(keymap)
        self.state: DashboardState | None = None
        self.selected_run: str | None = None
        self.filter_text: str | None = None
        """The `/` filter on the events panel (see `voltui.tui.state.compile_filter`)."""
        self.run_filter: str | None = None
        """Run id whose events alone the events panel shows (`f`), or None."""
        self._pending: deque[Event] = deque()
        self._resync = False
        self._want_select: str | None = None
        self._detail_loading: set[str] = set()
        self._last_slow = 0.0
        self._dirty: set[str] = set()
        """Panels changed since they were last repainted."""
        self._periods = dict(PANEL_TICKS)
        self._credit = dict(PANEL_TICKS)
        self.stats = AppStats()
        self._hangup_installed = False
        self._previous_hangup: Any = None
        self._terminal_lost = False
        self._link_lost = False
        """The engine was out of reach and the state not yet replaced since it came back."""
        self._approvals_shown: tuple[tuple[str, str], ...] = ()

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield HeaderBar(id="header")
        yield ApprovalBanner(id="approval-banner")
        yield Static(Text("Terminal too small for voltui: make it at least 60x20."), id="too-small")
        with Grid(id="panels"):
            yield RunsTable(id="runs")
            yield DagView(id="dag")
            yield AgentsTable(id="agents")
            yield HealthTable(id="health")
            yield EventsLog(id="events")
            yield CachePanel(id="cache")
        yield FilterBar(id="filter-bar")
        yield Footer(compact=True)

    async def on_mount(self) -> None:
        titles = {panel: f"{key} {title}" for key, panel, title in PANEL_KEYS}
        for panel, title in titles.items():
            if panel != "events":  # the events log manages its own title (PAUSED)
                self.query_one(f"#{panel}").border_title = title
        self._install_hangup_handler()
        if not self.is_headless:
            self.set_interval(TERMINAL_CHECK, self._check_terminal, name="terminal-check")
        await self._take_snapshot()
        self.query_one(RunsTable).focus()
        self.run_worker(self._consume(), name="events", group="events", exclusive=True)
        self.set_interval(1 / max(0.5, self.refresh_hz), self._tick, name="fold")
        self._refresh_catalogue()
        self.set_interval(REFRESH_SECONDS, self._refresh_catalogue, name="catalogue")

    def _refresh_catalogue(self) -> None:
        self.run_worker(self.catalogue.refresh(), name="catalogue", group="catalogue")

    def on_unmount(self) -> None:
        self._remove_hangup_handler()

    # ------------------------------------------------------------------ lost terminal

    def _install_hangup_handler(self) -> None:
        """SIGHUP (terminal closed, SSH dropped) exits cleanly, so an embedded engine stops its
        runs properly instead of the process dying mid-write or living on without a screen."""
        if not hasattr(signal, "SIGHUP"):
            return  # Windows
        try:
            previous = signal.getsignal(signal.SIGHUP)
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_hangup)
        except (NotImplementedError, RuntimeError, ValueError):
            return  # not the main thread, or a loop without signal support
        self._previous_hangup = previous
        self._hangup_installed = True

    def _remove_hangup_handler(self) -> None:
        """Give SIGHUP back to whoever had it (a test runner, an embedding program)."""
        if not self._hangup_installed:
            return
        self._hangup_installed = False
        try:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            if self._previous_hangup is not None:
                signal.signal(signal.SIGHUP, self._previous_hangup)
        except (NotImplementedError, RuntimeError, ValueError, TypeError):
            pass

    def _on_hangup(self) -> None:
        self._terminal_gone("terminal hung up (SIGHUP)")

    def _check_terminal(self) -> None:
        stdin = sys.__stdin__
        if stdin is None:
            return
        try:
            fd = stdin.fileno()
        except (OSError, ValueError):
            return
        if terminal_lost(fd):
            # A hung-up tty is also the output; a closed pipe on stdin leaves the screen usable.
            self._terminal_gone("terminal input closed or hung up", discard_output=os.isatty(fd))

    def _terminal_gone(self, why: str, *, discard_output: bool = True) -> None:
        """Exit without waiting on a terminal nobody reads any more.

        Textual's shutdown queues the "restore the terminal" sequences for its writer thread
        and waits for it; once the terminal's reader has gone, that thread is blocked on a
        full pty or dead from EIO, and the shutdown would wait forever (seen with tmux
        kill-server while runs were active). So output is discarded from here on. The kernel
        sends SIGCONT along with SIGHUP, which would make Textual restart application mode
        on the dead terminal: that handler goes back to the default first.
        """
        if self._terminal_lost:
            return
        self._terminal_lost = True
        log.warning("%s: exiting", why)
        if hasattr(signal, "SIGCONT"):
            try:
                signal.signal(signal.SIGCONT, signal.SIG_DFL)
            except ValueError:  # not the main thread
                pass
        driver = self._driver
        if (
            discard_output
            and driver is not None
            and getattr(driver, "_writer_thread", None) is not None
        ):
            driver._writer_thread = _DiscardWriter()  # type: ignore[attr-defined]
        self.exit(return_code=129)

    # ------------------------------------------------------------------ the fold

    async def _take_snapshot(self) -> None:
        if self.state is not None:
            self.stats.resyncs += 1
        self.state = DashboardState.from_snapshot(
            await self.engine.snapshot(), clock=self.monotonic
        )
        self._pending.clear()
        self._resync = False
        self._dirty.clear()
        self._detail_loading.clear()  # the new state has no DAGs yet: fetch them again
        with self.batch_update():
            self._refresh_panels(set(PANELS))
        # After the panels hold the new state: a panel that repaints itself on a style change
        # (the runs table does) must repaint from it, not from the stale one.
        self.screen_stack[0].remove_class("-stale")

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

    def _now(self) -> float:
        """The wall clock, or while the engine is out of reach the moment it was last known
        to be there: durations and uptime stop rather than run on with stale figures."""
        state = self.state
        if state is not None and state.frozen_at is not None:
            return state.frozen_at
        return self._wall_clock()

    def _watch_link(self) -> None:
        """While the engine is out of reach every panel is marked stale (dimmed, clocks
        stopped, "last update" in the header); when it is back, a fresh snapshot replaces the
        whole state before events resume (DESIGN.md rule 9). The remote client would resume
        the event stream by itself, but a restarted server's runs, agents, health and uptime
        are not in the events after the old seq."""
        state = self.state
        if state is None:
            return
        if self.engine.connection not in LINK_UP:
            self._link_lost = True
            if not state.stale:
                state.mark_stale(self.monotonic(), self._wall_clock())
                self.screen_stack[0].add_class("-stale")
                self._dirty |= {"header", "runs", "dag"}  # shown once more, clocks stopped
        elif self._link_lost:
            self._link_lost = False
            self.run_worker(self._resync_link(), name="resync", group="resync", exclusive=True)

    async def _resync_link(self) -> None:
        """The link is back: stop the old event stream, replace the state, then resubscribe
        from the new snapshot's seq."""
        self.workers.cancel_group(self, "events")
        try:
            await self._take_snapshot()
        except Exception as exc:  # lost again, or gone for good: stay stale, try on return
            log.warning("resync after reconnecting failed: %s", exc)
            self._link_lost = True
            return
        self.run_worker(self._consume(), name="events", group="events", exclusive=True)

    def _tick(self) -> None:
        """Fold what arrived, then repaint the panels that changed and whose turn it is."""
        self._watch_link()
        state = self.state
        if state is None or self._resync:
            return
        stats = self.stats
        stats.ticks += 1
        dirty = self._dirty
        if self._pending:
            batch = list(self._pending)
            self._pending.clear()
            stats.events_folded += len(batch)
            changed = state.apply(batch)
            if "dag" in changed and self.selected_run not in state.touched_runs:
                changed.discard("dag")  # the DAG shows the selected run only
            if changed:
                dirty |= changed
                dirty.add("header")  # the event rate
        now = self.monotonic()
        if now - self._last_slow >= SLOW_REFRESH:
            self._last_slow = now
            dirty.add("header")  # uptime
            if state.active_runs():
                dirty.add("runs")  # durations of the runs still going
                view = state.runs.get(self.selected_run or "")
                if view is not None and not view.run.state.finished:
                    dirty.add("dag")  # and of its running steps
        due = self._due(dirty)
        if due:
            dirty -= due
            with self.batch_update():
                self._refresh_panels(due)

    def _due(self, dirty: set[str]) -> set[str]:
        """The dirty panels whose turn it is (`PANEL_TICKS`). Each panel earns a tick's credit
        per tick, up to its period, and spends a period to repaint: a panel that changes all
        the time repaints at its own pace, one that was quiet repaints at the next tick."""
        due: set[str] = set()
        credit = self._credit
        for panel, period in self._periods.items():
            earned = credit[panel] + 1.0
            if panel in dirty and earned >= period:
                due.add(panel)
                earned -= period
            credit[panel] = min(earned, period)
        due |= dirty - credit.keys()  # a panel without a pace of its own: every tick
        return due

    def _refresh_panels(self, names: Iterable[str]) -> None:
        state = self.state
        if state is None or not self.is_running:
            return  # not started, or shutting down (the panels may be gone already)
        names = set(names)
        repaints = self.stats.repaints
        for name in names:
            if name != "dag":  # counted in _refresh_dag, which selection changes call too
                repaints[name] = repaints.get(name, 0) + 1
        if "header" in names:
            self.query_one(HeaderBar).refresh_from(
                state,
                read_only=self.read_only,
                embedded=self.embedded,
                connection=self.engine.connection,
            )
            self.query_one(ApprovalBanner).refresh_from(state, read_only=self.read_only)
            waiting = tuple(state.approvals)
            if waiting != self._approvals_shown:
                self._approvals_shown = waiting
                self.refresh_bindings()  # `a`/`x` appear in the footer while something waits
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
            if self._select_run(runs.selected_key()):
                names.discard("dag")  # just redrawn for the new selection
        if "dag" in names:
            self._refresh_dag()
        if "events" in names:
            self.query_one(EventsLog).refresh_from(state)
        if "cache" in names:
            self.query_one(CachePanel).refresh_from(state)

    # ------------------------------------------------------------------ selection

    def _select_run(self, run_id: str | None) -> bool:
        """Show `run_id`'s DAG; whether the selection changed."""
        if run_id == self.selected_run:
            return False
        self.selected_run = run_id
        self._refresh_dag()
        return True

    def _refresh_dag(self) -> None:
        if not self.is_running:
            return
        self.stats.repaints["dag"] = self.stats.repaints.get("dag", 0) + 1
        state = self.state
        view = state.runs.get(self.selected_run) if state and self.selected_run else None
        dag = self.query_one(DagView)
        if view is not None:
            run = view.run
            # The state first and whole: a narrow panel cuts the id, never the state.
            dag.border_title = Content.assemble(
                "2 DAG ",
                (states.label(run.state), states.look(run.state).theme_style),
                f" {clean(run.id[:8])}",
            )
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

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """`enter` (or a click on the highlighted row) in the runs panel opens the run."""
        if isinstance(event.data_table, RunsTable) and event.row_key.value is not None:
            event.stop()
            self._select_run(event.row_key.value)
            self.action_detail()

    def context_run(self, screen: Screen[Any] | None = None) -> RunView | None:
        """The run actions apply to: the one a run screen shows (`screen`, by default the
        active one), else the selected one."""
        state = self.state
        if state is None:
            return None
        run_id = getattr(screen or self.screen, "run_id", None)
        if not isinstance(run_id, str):
            run_id = self.selected_run
        return state.runs.get(run_id) if run_id else None

    # ------------------------------------------------------------------ engine calls

    async def _engine_call(self, call: Awaitable[T]) -> T | None:
        return await engine_call(self, call)

    def get_css_variables(self) -> dict[str, str]:
        """The theme's variables, with `$text-muted` kept between normal text and the
        background (see `voltui.tui.theme.muted_variables`)."""
        variables = muted_variables(super().get_css_variables())
        self.theme_variables = variables  # what `Content` styles (`$text-muted`) resolve with
        return variables

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Every toast, from any screen or widget, passes the sanitiser and is never markup:
        its text can hold run ids, names and error messages from a workflow file, a step or
        an attached server (an escape sequence there could retitle the terminal or write the
        clipboard)."""
        super().notify(
            clean_multiline(message, max_len=500),
            title=clean(title, max_len=80),
            severity=severity,
            timeout=timeout,
            markup=False,
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "decide" and not (self.state and self.state.approvals):
            return False  # nothing to decide: hidden rather than greyed
        if self.read_only and action in WRITE_ACTIONS:
            return None  # shown greyed in the footer, and refused
        if action in DASHBOARD_ACTIONS and self.screen is not self.screen_stack[0]:
            return False
        if action in ("cancel_run", "replay") and isinstance(self.screen, WorkflowsScreen):
            return False  # no run in view there: the keys would act on one out of sight
        if action == "clear_filter":  # escape does nothing else here, so bind it only then
            runs_filter = self.is_mounted and self.query_one(RunsTable).filter_text
            return bool(self.filter_text or self.run_filter or runs_filter)
        return True

    @property
    def escape_to_minimize(self) -> bool:
        """Escape in the filter bar clears the filter, even over a maximised panel."""
        if self.query_one(FilterBar).active and self.screen is self.screen_stack[0]:
            return False
        return super().escape_to_minimize

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Textual's commands, with its Quit asking first like `q` does."""
        for command in super().get_system_commands(screen):
            if command.title == "Quit":
                command = command._replace(callback=self.action_request_quit)
            yield command

    def bindings_with_keymap(self) -> list[Binding]:
        """The app's bindings, then the runs table's and the cursor keys every table shares,
        with the configured keymap applied (for the help screen)."""
        return self._with_keymap((*self.BINDINGS, *RunsTable.BINDINGS))

    def help_sections(self) -> list[tuple[str, list[Binding]]]:
        """The panels' own keys for the help screen, from their BINDINGS (keymap applied)."""
        return [("DAG panel (2)", self._with_keymap(DagView.BINDINGS))]

    def _with_keymap(self, bindings: Iterable[BindingType]) -> list[Binding]:
        """`bindings` (each id once) with the configured keymap applied."""
        keymap = self._keymap
        seen: set[str | None] = set()
        out: list[Binding] = []
        for b in bindings:
            if not isinstance(b, Binding) or (b.id is not None and b.id in seen):
                continue
            seen.add(b.id)
            # a remapped key drops the display of the key it replaces (`?` for `h`)
            out.append(
                dataclasses.replace(b, key=keymap[b.id], key_display=None) if b.id in keymap else b
            )
        return out

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
    async def action_start(self, workflow: str | None = None) -> None:
        """The start dialog, over all workflows or (from the palette) just `workflow`."""
        workflows = await self.catalogue.get()
        if not workflows and self.catalogue.error:
            self.notify(
                f"cannot list the engine's workflows: {clean(self.catalogue.error)}",
                severity="error",
                markup=False,
            )
            return
        self._refresh_catalogue()  # while the dialog is open: the next one is up to date
        if workflow is not None:
            workflows = [wf for wf in workflows if wf.id == workflow] or workflows
        screen = StartScreen(workflows, chosen=workflow)
        request: StartRequest | None = await self.push_screen_wait(screen)
        if request is not None:
            await self._start(request)

    @work(group="action", exclusive=True)
    async def start_workflow(self, workflow: str) -> None:
        """Start `workflow` with its default inputs (the palette's "Start workflow")."""
        await self._start(StartRequest(workflow=workflow))

    async def _start(self, request: StartRequest) -> None:
        if self.read_only:
            return
        run = await self._engine_call(self.engine.start_workflow(request))
        if run is not None:
            self._show_new_run(run)
            self.notify(f"started {clean(run.workflow_name)} as run {run.id[:12]}", markup=False)

    def _show_new_run(self, run: Run) -> None:
        """Put a run just started on screen, selected, now: its first event reaches the fold a
        tick or two later and then fills in its DAG."""
        self._want_select = run.id
        if self.state is not None:
            self.state.add_run(run)
            with self.batch_update():
                self._refresh_panels({"runs"})

    def _selected_view_or_warn(self) -> Any:
        view = self.context_run()
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
        question = Text(
            f"Cancel run {clean(run.id[:12])} ({clean(run.workflow_name, max_len=60)})?"
        )
        if await self.push_screen_wait(ConfirmScreen(question)):
            done = await self._engine_call(self.engine.cancel_run(run.id))
            if done is not None:
                self.notify(f"run {run.id[:12]} {done.state}", markup=False)

    @work(group="action", exclusive=True)
    async def action_decide(self, approve: bool) -> None:
        """Approve (`a`) or reject (`x`) a waiting approval step: the selected run's, else the
        one the banner names; confirmed in a dialog that also takes a comment."""
        state = self.state
        if state is None or not state.approvals:
            self.notify("no approval step is waiting", severity="warning", markup=False)
            return
        view = self.context_run()
        mine = [a for a in state.approvals.values() if view is not None and a.run_id == view.run.id]
        banner = self.query_one(ApprovalBanner).shown
        approval = mine[0] if mine else banner or next(iter(state.approvals.values()))
        comment = await self.push_screen_wait(DecisionScreen(approval, approve=approve))
        if comment is None or self.read_only:
            return
        request = ApprovalRequest(
            run_id=approval.run_id,
            step_id=approval.step_id,
            approve=approve,
            comment=comment or None,
            via="dashboard",
        )
        decided = await self._engine_call(self.engine.approve(request))
        if decided is not None:
            self.notify(
                f"step {clean(decided.step_id)} of run {decided.run_id[:12]} {decided.decision}",
                markup=False,
            )

    @work(group="action", exclusive=True)
    async def action_replay(self, mode: Literal["failed", "all"]) -> None:
        view = self._selected_view_or_warn()
        if view is None:
            return
        request = ReplayRequest(run_id=view.run.id, mode=mode)
        run = await self._engine_call(self.engine.replay_run(request))
        if run is not None:
            self._show_new_run(run)
            self.notify(f"replaying {view.run.id[:12]} ({mode}) as run {run.id[:12]}", markup=False)

    # ------------------------------------------------------------------ run screens

    def action_detail(self, run_id: str | None = None, step: str | None = None) -> None:
        """Open a run (the selected one by default) full screen: steps, logs, outputs; on
        `step` if given (else on its first failed step, if any)."""
        run_id = run_id or self.selected_run
        if run_id is None:
            self.notify("select a run in the runs panel first", severity="warning", markup=False)
            return
        self.push_screen(RunDetailScreen(self.engine, run_id, step=step))

    def on_dag_view_step_chosen(self, message: DagView.StepChosen) -> None:
        """`enter` on a step of the DAG panel opens the run on that step."""
        message.stop()
        self.action_detail(message.run_id, message.step_id)

    def action_replay_view(self, run_id: str | None = None) -> None:
        """Re-enact a finished run from its recorded events."""
        state = self.state
        run_id = run_id or self.selected_run
        view = state.runs.get(run_id) if state is not None and run_id else None
        if view is None:
            self.notify("select a run in the runs panel first", severity="warning", markup=False)
            return
        if not view.run.state.finished:
            self.notify(
                f"run {view.run.id[:12]} is still {view.run.state}: the replay view needs a "
                "finished run",
                severity="warning",
                markup=False,
            )
            return
        self.push_screen(ReplayScreen(self.engine, view.run.id))

    # ------------------------------------------------------------------ event filters

    def action_filter(self) -> None:
        """Open the filter bar for the runs table when it has the focus, else for the events,
        with the filter in force."""
        runs = self.query_one(RunsTable)
        if self.focused is runs:
            self.query_one(FilterBar).open(runs.filter_text, "runs")
        else:
            self.query_one(FilterBar).open(self.filter_text, "events")

    def action_filter_run(self) -> None:
        """Toggle "only the selected run's events"."""
        run_id = self.selected_run
        if run_id is None and self.run_filter is None:
            self.notify("select a run in the runs panel first", severity="warning", markup=False)
            return
        self.set_event_filter(self.filter_text, None if self.run_filter == run_id else run_id)

    def action_clear_filter(self) -> None:
        self.query_one(RunsTable).set_filter(None)
        self.set_event_filter(None, None)

    def set_event_filter(self, text: str | None, run_id: str | None) -> None:
        """Apply both event filters and rewrite the events panel from the buffered events."""
        self.filter_text = text or None
        self.run_filter = run_id or None
        self.query_one(EventsLog).set_filter(self.state, self.filter_text, self.run_filter)
        self.refresh_bindings()

    def _apply_filter(self, target: str, text: str | None) -> None:
        if target == "runs":
            self.query_one(RunsTable).set_filter(text)
            self.refresh_bindings()
        elif (text or None) != self.filter_text:
            self.set_event_filter(text, self.run_filter)

    def on_filter_bar_changed(self, message: FilterBar.Changed) -> None:
        """The filter applies as it is typed."""
        self._apply_filter(message.target, message.text)

    def on_filter_bar_applied(self, message: FilterBar.Applied) -> None:
        self._close_filter_bar(message.target)
        self._apply_filter(message.target, message.text)

    def on_filter_bar_cleared(self, message: FilterBar.Cleared) -> None:
        self._close_filter_bar(message.target)
        self._apply_filter(message.target, None)

    def _close_filter_bar(self, target: str = "events") -> None:
        bar = self.query_one(FilterBar)
        refocus = bar.input.has_focus
        bar.close()
        if refocus:
            panel: Widget = self.query_one(EventsLog if target == "events" else RunsTable)
            if all(a.display for a in panel.ancestors_with_self if isinstance(a, Widget)):
                panel.focus()
            else:
                self.query_one(RunsTable).focus()

    # ------------------------------------------------------------------ view actions

    def action_toggle_pause(self) -> None:
        events = self.query_one(EventsLog)
        events.set_paused(not events.paused)
        if not events.paused and self.state is not None:
            events.refresh_from(self.state)

    def action_toggle_heartbeats(self) -> None:
        """Show or hide metrics samples and health checks in the events panel."""
        events = self.query_one(EventsLog)
        events.set_heartbeats(self.state, not events.show_heartbeats)

    def action_workflows(self) -> None:
        """Every workflow with how its recent runs went; start one from there."""
        if not isinstance(self.screen, WorkflowsScreen):
            self.push_screen(WorkflowsScreen(self.engine))

    def action_yank(self) -> None:
        """Copy what the focused panel points at (OSC 52: works over SSH): the selected run's
        id in the runs panel, its error (or id) in the DAG, an agent or component id, the
        newest event line shown."""
        text = yank_text(self)
        if not text:
            self.notify("nothing to copy here", severity="warning", markup=False)
            return
        self.copy_to_clipboard(text)
        shown = clean(text, max_len=60)
        self.notify(f"copied: {shown}", markup=False, timeout=3)

    def action_toggle_compact(self) -> None:
        dag = self.query_one(DagView)
        dag.set_compact(not dag.compact)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.bindings_with_keymap(), self.help_sections()))

    def action_focus_panel(self, panel: str) -> None:
        """Focus a panel; one hidden at this terminal size is shown maximised instead."""
        container: Widget = self.query_one(f"#{panel}")
        target = container.table if isinstance(container, CachePanel) else container
        if self.screen.maximized is not None:
            self.screen.minimize()
        if not container.display:
            self.screen.maximize(container, container=False)
        # At once, not with `focus()` (which defers to after the messages already queued): a
        # key typed right after, such as `m` in `2m`, must act on the panel just focused.
        self.screen.set_focus(target)

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

    async def action_quit(self) -> None:
        """Textual's quit (`ctrl+q`, and anything else that calls it) asks like `q` does."""
        self.action_request_quit()

    def action_help_quit(self) -> None:
        """`ctrl+c` (Textual only tells how to quit) asks like `q` does."""
        self.action_request_quit()

    def action_request_quit(self) -> None:
        """Every way out: `q`, `ctrl+q`, `ctrl+c`, the palette's Quit. While runs are active in
        embedded mode, quitting stops them, so it asks first (once: a second quit key while
        the question is up does nothing)."""
        if any(isinstance(s, ConfirmScreen) and s.id == QUIT_CONFIRM for s in self.screen_stack):
            return
        self._quit_flow()

    @work(group="quit", exclusive=True)
    async def _quit_flow(self) -> None:
        active = self.state.active_runs() if self.state else 0
        if active and self.embedded:
            question = Text(
                f"{active} run(s) are active. Quit anyway? Active runs will be interrupted "
                "(they can be replayed later); a run waiting only for an approval waits on "
                "and continues when voltui starts again."
            )
            if not await self.push_screen_wait(ConfirmScreen(question, id=QUIT_CONFIRM)):
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
            await VoltApp(orch, keymap=config.keymap).run_async()
        finally:
            await orch.stop()

    asyncio.run(run())
