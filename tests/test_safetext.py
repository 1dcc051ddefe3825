"""The one sanitiser: escapes, controls, bidi and invisible characters never reach a terminal."""

from __future__ import annotations

import sys
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voltui import safetext
from voltui.safetext import clean, clean_multiline, is_clean

# Characters a terminal must never receive from untrusted text: C0 (but tab), DEL, C1, and the
# invisible/bidi categories.
FORBIDDEN_CATEGORIES = {"Cf", "Zl", "Zp", "Cs"}


def forbidden(ch: str) -> bool:
    code = ord(ch)
    if ch == "\t":
        return False
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return True
    return unicodedata.category(ch) in FORBIDDEN_CATEGORIES


def assert_safe(text: str) -> None:
    bad = [f"U+{ord(c):04X}" for c in text if forbidden(c)]
    assert not bad, f"unsafe characters {bad} in {text!r}"


# Text with many of the characters that matter, mixed with ordinary ones.
HOSTILE_ALPHABET = st.sampled_from(
    [
        "\x1b",
        "\x9b",
        "\x07",
        "\x00",
        "\r",
        "\n",
        "\t",
        "[",
        "]",
        ";",
        "52",
        "c",
        "0",
        "\\",
        "\u202e",
        "\u2066",
        "\u2069",
        "\u200b",
        "\u200d",
        "\u200e",
        "\u2028",
        "\u2029",
        "\ufeff",
        "\U000e0041",
        "\ud800",
        "a",
        "é",
        "漢",
        "🙂",
    ]
)
hostile_text = st.one_of(
    st.text(),
    st.lists(HOSTILE_ALPHABET, max_size=40).map("".join),
    st.text(alphabet=st.characters(codec=None), max_size=60),
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("\x1b]52;c;aGFja2Vk\x07after", "after"),  # OSC 52: writes the clipboard
        ("\x1b]0;owned\x1b\\title", "title"),  # OSC 0: sets the window title
        ("\x1b[2J\x1b[31mred\x1b[0m", "red"),
        ("\x9b31mred", "red"),
        ("a\x00b\x07c\x7fd\x85e", "abcde"),
        ("one\ntwo\r\nthree", "one two three"),
        ("tab\tkept", "tab\tkept"),
    ],
)
def test_escapes_and_controls_removed(raw: str, expected: str) -> None:
    assert clean(raw) == expected


@pytest.mark.parametrize(
    "char",
    [
        "\u202e",  # RIGHT-TO-LEFT OVERRIDE: reverses the rest of a line
        "\u202a",
        "\u202b",
        "\u202c",
        "\u202d",
        "\u2066",  # isolates
        "\u2067",
        "\u2068",
        "\u2069",
        "\u200e",  # marks
        "\u200f",
        "\u200b",  # zero-width space/joiners
        "\u200c",
        "\u200d",
        "\u2060",
        "\u2028",  # line and paragraph separators: a forged log line
        "\u2029",
        "\ufeff",
        "\u061c",
        "\u00ad",
        "\U000e0001",  # tag characters
        "\U000e0041",
        "\u3164",  # a blank "letter"
    ],
)
def test_invisible_and_bidi_shown_as_escapes(char: str) -> None:
    code = ord(char)
    escape = f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    out = clean(f"ok{char}done")
    assert out == f"ok{escape}done"
    assert is_clean(out)


def test_bidi_cannot_forge_a_line() -> None:
    forged = "step done\u2028INFO deploy approved by admin\u202e"
    out = clean(forged)
    assert "\\u2028" in out and "\\u202e" in out
    assert_safe(out)


def test_printable_text_is_unchanged() -> None:
    for text in ["plain ascii line", "café 漢字 🙂", "[bold]not markup[/]", ""]:
        assert clean(text) == text


def test_max_len() -> None:
    assert clean("abcdefgh", max_len=5) == "abcd…"
    assert len(clean("\u202e" * 50, max_len=10)) == 10


def test_multiline_keeps_real_line_breaks_only() -> None:
    out = clean_multiline("first\x1b[2K\r\nsecond\u2028third\rfourth")
    assert out.split("\n") == ["first", "second\\u2028third", "fourth"]


def test_class_covers_this_python_unicode_database() -> None:
    """The hard-coded class must include every Cf/Zl/Zp/Cs code point this Python knows."""
    missing = [
        f"U+{cp:04X}"
        for cp in range(sys.maxunicode + 1)
        if unicodedata.category(chr(cp)) in FORBIDDEN_CATEGORIES and is_clean(chr(cp))
    ]
    assert not missing, f"safetext misses {missing} (Unicode {unicodedata.unidata_version})"


@given(hostile_text, st.one_of(st.none(), st.integers(1, 80)))
def test_clean_never_emits_unsafe(text: str, max_len: int | None) -> None:
    out = clean(text, max_len=max_len)
    assert_safe(out)
    assert is_clean(out)
    assert "\n" not in out
    if max_len is not None:
        assert len(out) <= max_len
    assert clean(out) == out  # idempotent: cleaning twice shows the same thing


@given(hostile_text)
def test_clean_multiline_never_emits_unsafe(text: str) -> None:
    for line in clean_multiline(text).split("\n"):
        assert_safe(line)


def test_module_has_one_public_cleaner_family() -> None:
    assert set(safetext.__all__) == {"clean", "clean_multiline", "is_clean"}
