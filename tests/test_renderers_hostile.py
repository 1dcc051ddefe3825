"""Every renderer, given arbitrary strings, emits no control, escape, bidi or invisible character.

Property tests (hypothesis) over the line and cell builders of the dashboard and the CLI, and
the CLI end to end (`events`, `list`, their `--json` forms) on a store full of hostile text.
The dashboard's composed screen is checked in tests/tui/test_hostile_text.py.
"""

from __future__ import annotations

import asyncio
import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from rich.text import Text

from voltui import cli
from voltui.commands import common as cli_common
from voltui.engine.models import (
    Event,
    LogLine,
    Run,
    RunState,
    StepRun,
    StepState,
    Workflow,
)
from voltui.engine.store import RunStore
from voltui.summaries import summarize
from voltui.tui.screens.replay import replay_line
from voltui.tui.screens.run_detail import clean_lines, log_text, pretty_output, step_row
from voltui.tui.state import RunView, StepView, compute_levels
from voltui.tui.widgets.dag import render_compact, render_dag
from voltui.tui.widgets.events import event_line, events_title

BIDI_AND_INVISIBLE = [
    chr(cp) for cp in range(0x10000) if unicodedata.category(chr(cp)) in {"Cf", "Zl", "Zp"}
]
ESCAPES = [
    "\x1b]52;c;cG93bmVk\x07",
    "\x1b]0;title\x1b\\",
    "\x1b[2J",
    "\x1b[31m",
    "\x9b1m",
    "\x1bP+q\x1b\\",
    "\x1b",
]
PIECES = st.sampled_from(
    [
        *ESCAPES,
        *BIDI_AND_INVISIBLE[:40],
        *("\u202e", "\u2066", "\u2028", "\x00", "\x7f", "\x85", "\r", "\n", "\t"),
        *("[bold]", "[/]", "a", "é", "漢", " "),
    ]
)
hostile = st.one_of(
    st.lists(PIECES, max_size=30).map("".join),
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=50),
)


def unsafe(text: str) -> list[str]:
    """Characters a terminal must not receive from untrusted text, as U+XXXX."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in "\t\n":
            continue  # layout: renderers put these in themselves
        if code < 0x20 or 0x7F <= code <= 0x9F or unicodedata.category(ch) in {"Cf", "Zl", "Zp"}:
            out.append(f"U+{code:04X}")
    return out


def plain(value: Any) -> str:
    """The characters of a str, Text, Content or list of them."""
    if isinstance(value, list | tuple):
        return "".join(plain(v) for v in value)
    return getattr(value, "plain", None) or str(value)


def assert_safe(value: Any) -> None:
    text = plain(value)
    assert not unsafe(text), f"{unsafe(text)} in {text!r}"


def hostile_event(kind: str, text: str, seq: int = 1) -> Event:
    return Event(
        seq=seq,
        ts=1_700_000_000.0 + seq,
        type=kind,
        source=text or "s",
        correlation_id=text or None,
        data={
            "step": text,
            "line": text,
            "agent": text,
            "error": text,
            "name": text,
            "workflow_id": text,
            "reason": text,
            "peer": text,
            text[:10] or "k": text,
        },
    )


EVENT_TYPES = st.sampled_from(
    [
        "step:output",
        "step:started",
        "step:failed",
        "step:retrying",
        "workflow:queued",
        "workflow:failed",
        "remote:auth_failed",
        "health:changed",
        "unknown:kind",
    ]
)


@given(EVENT_TYPES | hostile, hostile)
def test_event_lines(kind: str, text: str) -> None:
    event = hostile_event(kind, text)
    assert_safe(summarize(event))
    assert_safe(event_line(event))
    assert_safe(replay_line(event, t0=event.ts - 1))
    assert_safe(cli_common.event_line(event))
    assert_safe(events_title(text, text, paused=True))


@given(hostile, hostile)
def test_run_detail_builders(text: str, other: str) -> None:
    line = LogLine(run_id="r", step_id="s", attempt=1, stream="stderr", ts=1.0, line=text)
    assert_safe(log_text(line))
    for piece in clean_lines(text + "\n" + other).split("\n"):
        assert_safe(piece)
    for piece in pretty_output({text: [other, {other: text}]}).split("\n"):
        assert_safe(piece)
    sr = StepRun(
        run_id="r",
        step_id=text or "s",
        state=StepState.FAILED,
        attempt=1,
        max_attempts=2,
        agent_id=other,
        error=text + other,
    )
    assert_safe(step_row(text, sr, now=10.0))
    assert_safe(step_row(other, None, now=10.0))


@given(hostile, hostile, hostile)
def test_dag_builders(step_a: str, step_b: str, text: str) -> None:
    dag = [(step_a or "a", []), ((step_b or "b") + "2", [step_a or "a"])]
    run = Run(
        id=text or "r",
        workflow_id=text or "w",
        workflow_name=text,
        state=RunState.FAILED,
        created_at=1.0,
        error=text,
    )
    steps = {
        sid: StepView(
            id=sid,
            depends_on=list(deps),
            state=StepState.FAILED,
            attempt=1,
            agent=text,
            error=text,
            last_line=text,
        )
        for sid, deps in dag
    }
    view = RunView(run=run, steps=steps, levels=compute_levels(dag), detail_loaded=True)
    assert_safe(render_dag(view, width=80, now=5.0))
    assert_safe(render_compact(view, 80))


@given(hostile)
def test_cli_cells(text: str) -> None:
    assert_safe(cli_common.plain(text))
    assert_safe(cli_common.plain(text, max_len=20))
    for piece in cli.clean_multiline(text).split("\n"):
        assert_safe(piece)


@given(st.text(max_size=60))
def test_cli_json_is_plain_ascii(text: str) -> None:
    """JSON output escapes every non-ASCII and control character (`ensure_ascii`)."""
    encoded = json.dumps({"value": text, text: [text]}, default=str)
    assert all(" " <= ch <= "~" for ch in encoded), encoded


# --------------------------------------------------------------------------- CLI end to end

CORPUS = [
    *ESCAPES,
    "\u202e",
    "\u2066x\u2069",
    "\u200b\u200d\u200e\u200f",
    "\u2028forged line\u2029",
    "\ufeff",
    "\U000e0041\U000e0001",
    "\x00\x07\x08\x7f\x85\x9f",
    "[bold red]markup[/]",
    "".join(BIDI_AND_INVISIBLE),
]


async def fill(db: Path) -> str:
    store = RunStore(db)
    await store.open()
    try:
        hostile_text = "".join(CORPUS)
        run = Run(
            id="hostile00001",
            workflow_id="w",
            workflow_name=hostile_text,
            state=RunState.FAILED,
            created_at=1.0,
            error=hostile_text,
        )
        workflow = Workflow.model_validate(
            {"id": "w", "name": hostile_text, "steps": [{"id": "s", "run": {"command": ["x"]}}]}
        )
        await store.save_run(run, workflow)
        store.append_events(
            [
                hostile_event(kind, text, seq=i + 1).model_copy(update={"correlation_id": run.id})
                for i, (kind, text) in enumerate(
                    (k, t)
                    for k in ("step:output", "step:failed", "workflow:failed", "x:y")
                    for t in [*CORPUS, hostile_text]
                )
            ]
        )
        await store.flush()
        return run.id
    finally:
        await store.close()


@pytest.mark.parametrize(
    "argv",
    [
        ["events", "--limit", "1000"],
        ["events", "--json", "--limit", "1000"],
        ["events", "--run", "hostile00001"],
        ["list"],
        ["list", "--json"],
    ],
    ids=" ".join,
)
def test_cli_output_is_safe(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "h.db"
    asyncio.run(fill(db))
    code = cli.main([*argv, "--db", str(db), "--workflows", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip()
    for line in out.splitlines():
        assert not unsafe(line), f"{unsafe(line)} in {line!r}"
    if "--json" in argv:
        assert all(" " <= ch <= "~" for ch in out.replace("\n", ""))
        for line in out.splitlines():
            json.loads(line)  # still valid JSON


def test_rich_console_output_of_a_cleaned_cell_has_no_escape() -> None:
    """What Rich writes for a cleaned cell, colours off: the text and nothing else."""
    console = Console(force_terminal=False, width=200, color_system=None, record=True)
    console.print(Text(cli.clean_multiline("".join(CORPUS))))
    assert not unsafe(console.export_text().replace("\n", ""))
