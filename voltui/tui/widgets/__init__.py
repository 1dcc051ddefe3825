"""One widget per dashboard panel; each renders only from a `DashboardState`."""

from __future__ import annotations

from voltui.tui.widgets.agents import AgentsTable
from voltui.tui.widgets.approvals import ApprovalBanner
from voltui.tui.widgets.cache import CachePanel
from voltui.tui.widgets.dag import DagView
from voltui.tui.widgets.events import EventsLog
from voltui.tui.widgets.filter_bar import FilterBar
from voltui.tui.widgets.header import HeaderBar
from voltui.tui.widgets.health import HealthTable
from voltui.tui.widgets.runs import RunsTable

__all__ = [
    "AgentsTable",
    "ApprovalBanner",
    "CachePanel",
    "DagView",
    "EventsLog",
    "FilterBar",
    "HeaderBar",
    "HealthTable",
    "RunsTable",
]
