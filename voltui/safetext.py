"""Untrusted text made safe for a terminal: the one sanitiser every front end uses.

Step output, names, event data, workflow files and a remote server's replies come from programs
and people we do not control. Before any of it reaches a screen (a table cell, a log line, a
form field, a toast, a border title), it goes through `clean` (one line) or `clean_multiline`:

- escape sequences are removed: they could move the cursor, retitle the window (OSC 0), write
  the clipboard (OSC 52) or hide text;
- other C0 and C1 control characters are dropped (tabs are kept; newlines become spaces);
- bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069), marks (U+200E/F),
  zero-width characters (U+200B-U+200D, U+2060, U+FEFF), line/paragraph separators
  (U+2028/U+2029), every other format character (Unicode category Cf), lone surrogates and
  a few blank "filler" letters are *shown* as visible escapes like `\\u202e`. Dropping them
  would hide that something was there; rendering them lets a step reverse a line, forge a log
  line or break a panel border.

Callers then render the result as `rich.text.Text` (never markup). The common case (a printable
line) costs one C-level `str.isprintable()` call (plus one small scan when it is not ASCII);
other lines go through the precompiled patterns below (one scan, plus one for escape sequences
only when an ESC or CSI byte is present).
"""

from __future__ import annotations

import re

__all__ = ["clean", "clean_multiline", "is_clean"]

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

# C0 controls except tab, DEL, and C1 controls: dropped.
_CONTROL_CLASS = "\x00-\x08\x0a-\x1f\x7f-\x9f"

# Invisible or direction-changing characters: shown as `\uXXXX`. Unicode categories Cf
# (format), Zl, Zp and Cs (lone surrogates, which also cannot be encoded for a terminal), as
# of Unicode 15.1 (a superset of what Python 3.11's Unicode 14 database lists; a test checks
# the running interpreter's database against it), plus default-ignorable fillers that render
# as blanks (U+034F, U+115F, U+1160, U+17B4, U+17B5, U+3164, U+FFA0). Variation selectors
# are left alone: emoji need them and they cannot hide text on their own.
_INVISIBLE_CLASS = (
    "\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"
    "\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f"
    "\u3164\ud800-\udfff\ufeff\uffa0\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
)
_UNSAFE = re.compile(f"[{_CONTROL_CLASS}{_INVISIBLE_CLASS}]")  # one class: far faster than |
# The only unsafe characters `str.isprintable()` accepts (letters and marks that render blank).
_PRINTABLE_FILLERS = re.compile("[\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0]")
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
_ANY_UNSAFE = re.compile(f"[\x1b{_CONTROL_CLASS}{_INVISIBLE_CLASS}]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code <= 0x9F:
        return ""  # a C0/C1 control character: dropped, as it always was
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def clean(text: object, *, max_len: int | None = None) -> str:
    """Printable, single-line text: escapes stripped, controls dropped, tabs kept, invisible
    and bidi characters shown as `\\uXXXX`; cut to `max_len` characters with `…`."""
    value = text if isinstance(text, str) else str(text)
    # Printable text (most lines) skips the patterns: `isprintable` is false for every control,
    # Cf/Zl/Zp/Cs character (and tabs, NBSP: harmless, they just take the slow path).
    if not value.isprintable() or (not value.isascii() and _PRINTABLE_FILLERS.search(value)):
        value = value.replace("\r\n", " ").replace("\n", " ")
        if "\x1b" in value or "\x9b" in value:
            value = _ESCAPES.sub("", value)
        value = _UNSAFE.sub(_visible, value)
    if max_len is not None and len(value) > max_len:
        value = value[: max(0, max_len - 1)] + "…"
    return value


def clean_multiline(text: object, *, max_len: int | None = None) -> str:
    """Like `clean`, line by line: for paragraphs that list problems on lines of their own.

    `max_len` applies to each line. Only `\\n`, `\\r\\n` and `\\r` break lines: U+2028/U+2029
    (which `str.splitlines` would also split on) are shown as escapes like everywhere else.
    """
    value = text if isinstance(text, str) else str(text)
    return "\n".join(clean(line, max_len=max_len) for line in _LINE_BREAKS.split(value))


def is_clean(text: str) -> bool:
    """True when `text` holds nothing `clean` would remove or escape (tests and assertions)."""
    return _ANY_UNSAFE.search(text) is None
