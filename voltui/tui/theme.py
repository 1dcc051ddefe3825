"""Theme adjustments the dashboard makes on top of Textual's themes.

`$text-muted` is meant to read as secondary, yet some themes make it *stronger* than their normal
text: solarized-light's muted grey is darker (so more contrasting) than its foreground, and
after the 256-colour downgrade several dark themes land muted and normal text on the same or a
brighter palette entry. Muted text here is the theme's foreground blended into its surface, so
it always sits between normal text and the background, in true colour and in 256 colours.
"""

from __future__ import annotations

from textual.color import Color, ColorParseError

MUTED_MIX = 0.62
"""Share of the foreground in muted text (the rest is the panel background)."""


def muted_variables(variables: dict[str, str]) -> dict[str, str]:
    """`variables` with `text-muted` recomputed from `foreground` and `surface`; unchanged
    for themes whose colours are not plain colours (the ANSI themes use terminal colours,
    which the terminal already orders)."""
    try:
        foreground = Color.parse(variables["foreground"])
        surface = Color.parse(variables["surface"])
    except (KeyError, ColorParseError):
        return variables
    if foreground.ansi is not None or surface.ansi is not None:
        return variables
    out = dict(variables)
    out["text-muted"] = surface.blend(foreground, MUTED_MIX).hex
    return out
