"""Modal screens: start a workflow, confirm an action, help."""

from __future__ import annotations

from voltui.tui.screens.approve import DecisionScreen
from voltui.tui.screens.confirm import ConfirmScreen
from voltui.tui.screens.help import HelpScreen
from voltui.tui.screens.start import StartScreen

__all__ = ["ConfirmScreen", "DecisionScreen", "HelpScreen", "StartScreen"]
