"""Untrusted text made safe for a terminal.

Step output, names and event data come from programs we do not control. Before any of it
reaches a screen, escape sequences (which could move the cursor, retitle the window or hide
text) and other control characters are removed; callers then render it as `rich.text.Text`,
never as markup.
"""

from __future__ import annotations

import re

# CSI, OSC (terminated by BEL or ST), DCS/SOS/PM/APC strings, and lone two-byte escapes.
_ESCAPES = re.compile(
    r"""
    \x1b\[[0-?]*[ -/]*[@-~]            # CSI ... final byte
  | \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)? # OSC ... BEL or ST
  | \x1b[PX^_][^\x1b]*(?:\x1b\\)?      # DCS, SOS, PM, APC ... ST
  | \x1b[@-Z\\-_]                      # other Fe escapes
  | \x9b[0-?]*[ -/]*[@-~]              # 8-bit CSI
    """,
    re.VERBOSE,
)
# C0 controls except tab, DEL, and C1 controls.
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x80-\x9f]")


def clean(text: object, *, max_len: int | None = None) -> str:
    """Printable, single-line text: escapes stripped, controls dropped, tabs kept."""
    value = text if isinstance(text, str) else str(text)
    value = _CONTROLS.sub("", _ESCAPES.sub("", value.replace("\r\n", " ").replace("\n", " ")))
    if max_len is not None and len(value) > max_len:
        value = value[: max(0, max_len - 1)] + "…"
    return value
