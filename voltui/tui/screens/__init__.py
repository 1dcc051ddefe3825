"""Screens over the dashboard: start a workflow, confirm an action, help, the workflows."""

from __future__ import annotations

from voltui.tui.screens.approve import DecisionScreen
from voltui.tui.screens.confirm import ConfirmScreen
from voltui.tui.screens.help import HelpScreen
from voltui.tui.screens.start import StartScreen
from voltui.tui.screens.workflows import WorkflowsScreen

__all__ = ["ConfirmScreen", "DecisionScreen", "HelpScreen", "StartScreen", "WorkflowsScreen"]
