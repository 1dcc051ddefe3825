"""Muted text reads as secondary in every theme, in true colour and in 256 colours."""

from __future__ import annotations

from rich.color import Color, ColorSystem
from textual.app import App, ComposeResult
from textual.theme import BUILTIN_THEMES
from textual.widgets import Static

from voltui.tui.theme import muted_variables


class Probe(App[None]):
    """Two lines, one in the panel's normal text colour and one muted, on `$surface`, with the
    dashboard's variables (`VoltApp.get_css_variables` does the same)."""

    CSS = """
    Screen { background: $surface; }
    #normal { color: $foreground; }
    #muted { color: $text-muted; }
    """

    def compose(self) -> ComposeResult:
        yield Static("normal", id="normal")
        yield Static("muted", id="muted")

    def get_css_variables(self) -> dict[str, str]:
        variables = muted_variables(super().get_css_variables())
        self.theme_variables = variables
        return variables


def _luminance(color: Color) -> float:
    t = color.get_truecolor()
    return 0.2126 * t.red + 0.7152 * t.green + 0.0722 * t.blue


async def test_muted_is_between_text_and_background_in_every_theme() -> None:
    app = Probe()
    checked = 0
    async with app.run_test() as pilot:
        for name in BUILTIN_THEMES:
            if name.startswith("ansi"):
                continue  # terminal colours: the terminal orders them
            app.theme = name
            await pilot.pause()
            background = app.screen.rich_style.bgcolor
            normal = app.query_one("#normal").rich_style.color
            muted = app.query_one("#muted").rich_style.color
            assert background is not None and normal is not None and muted is not None
            for system in (ColorSystem.TRUECOLOR, ColorSystem.EIGHT_BIT):
                bg, fg, mu = (c.downgrade(system) for c in (background, normal, muted))
                text_contrast = abs(_luminance(fg) - _luminance(bg))
                muted_contrast = abs(_luminance(mu) - _luminance(bg))
                assert muted_contrast < text_contrast, (name, system)
            checked += 1
    assert checked > 10
