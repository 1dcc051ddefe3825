"""The real `python -m voltui` in a real terminal (tmux), driven by keystrokes.

Pilot tests run the app in-process with a headless driver; these catch what they cannot: the
console entry point, terminal set-up and tear-down, key decoding by a real terminal, and the
process exit status. Each test gets a private tmux server (`-L <random>`, no user config) that is
killed afterwards. Every wait is a bounded poll of `capture-pane`, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
POLL = 0.2

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    """One private tmux server running one program in one pane."""

    def __init__(self, db: Path, args: tuple[str, ...] = ()) -> None:
        self.socket = f"voltui-test-{uuid.uuid4().hex[:10]}"
        self.socket_path: Path | None = None
        self.db = db
        env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
        env["VOLTUI_DB"] = str(db)
        env.pop("VOLTUI_CONFIG", None)
        self.env = env
        self.status_file = db.parent / f"{self.socket}.status"
        program = " ".join(
            shlex.quote(part)
            for part in ("env", f"VOLTUI_DB={db}", sys.executable, "-m", "voltui", *args)
        )
        # The pane's shell reaps the program and writes its exit status to a file. tmux's own
        # `#{pane_dead_status}` is not reliable: tmux 3.3 marks a pane dead at EOF on its pty,
        # before it reaps the child, and under load it was seen never to reap it at all.
        self.command = f"{program}; echo $? > {shlex.quote(str(self.status_file))}"

    def start(self, width: int, height: int) -> None:
        # remain-on-exit keeps the last screen (and any traceback) readable after the exit.
        self.tmux(
            "new-session", "-d", "-x", str(width), "-y", str(height), "-c", str(ROOT), self.command,
            ";", "set-option", "-w", "remain-on-exit", "on",
        )  # fmt: skip
        # tmux 3.3 leaves its socket file behind when the server is killed: remember it.
        self.socket_path = Path(self.tmux("display-message", "-p", "#{socket_path}").strip())

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def pane(self, escapes: bool = False) -> str:
        return self.tmux("capture-pane", "-p", *(["-e"] if escapes else []))

    def send(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def dead_status(self) -> int | None:
        """The program's exit status once it has ended, else None."""
        try:
            text = self.status_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return int(text) if text.endswith("\n") else None  # else the shell is writing it

    def wait(self, cond: Callable[[str], object], what: str, limit: float = 20.0) -> str:
        """Poll the pane until `cond(text)` holds; fail with the last screen after `limit` s."""
        deadline = time.monotonic() + limit
        while True:
            text = self.pane()
            if cond(text):
                return text
            if self.dead_status() is not None:
                raise AssertionError(f"the program exited while waiting for {what}:\n{text}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not seen within {limit}s; last screen:\n{text}")
            time.sleep(POLL)

    def kill(self) -> None:
        subprocess.run(
            ["tmux", "-L", self.socket, "kill-server"],
            env=self.env,
            capture_output=True,
            timeout=10,
            check=False,
        )
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[[int, int], Tmux]]:
    sessions: list[Tmux] = []

    def start(width: int, height: int) -> Tmux:
        session = Tmux(tmp_path / "x.db")
        sessions.append(session)  # before start: a half-started server is killed too
        session.start(width, height)
        return session

    try:
        yield start
    finally:
        for session in sessions:
            try:
                print(f"--- final screen of {session.socket} ---\n{session.pane()}")
            except Exception:  # the server may be gone already; the kill below still runs
                pass
            session.kill()


# ---------------------------------------------------------------------- screen reading


def panel(text: str, title: str) -> str:
    """The inside of the bordered panel whose top border carries `title`, or '' if none."""
    lines = text.splitlines()
    for row, line in enumerate(lines):
        top = re.search(r"╭[─ ]*" + re.escape(title), line)
        right = line.find("╮", top.end()) if top else -1
        if top is None or right < 0:
            continue
        left = top.start()
        inside = []
        for below in lines[row + 1 :]:
            if len(below) <= left or below[left] != "│":
                break
            inside.append(below[left + 1 : right])
        return "\n".join(inside)
    return ""


RUN_ROW = re.compile(r"^\s*[0-9a-f]{8}\b", re.MULTILINE)
"""A row of the runs panel starts with the short run id."""
SGR = re.compile(r"\x1b\[([0-9;:]*)m")


def backgrounds(line: str) -> tuple[str, list[str]]:
    """A line of `capture-pane -e` as (plain text, background of each character)."""
    plain: list[str] = []
    bgs: list[str] = []
    fg = bg = "default"
    reverse = False
    pos = 0
    for match in [*SGR.finditer(line), None]:
        end = match.start() if match else len(line)
        chunk = line[pos:end]
        plain.append(chunk)
        bgs.extend([fg if reverse else bg] * len(chunk))
        if match is None:
            break
        pos = match.end()
        params = re.split("[;:]", match.group(1))
        i = 0
        while i < len(params):
            p = params[i] or "0"
            if p == "0":
                fg, bg, reverse = "default", "default", False
            elif p == "7":
                reverse = True
            elif p == "27":
                reverse = False
            elif p in ("38", "48"):
                width = 3 if params[i + 1 : i + 2] == ["5"] else 5
                colour = ";".join(params[i : i + width])[3:]
                if p == "38":
                    fg = colour
                else:
                    bg = colour
                i += width - 1
            elif p == "39":
                fg = "default"
            elif p == "49":
                bg = "default"
            elif p.isdigit() and (30 <= int(p) <= 37 or 90 <= int(p) <= 97):
                fg = p
            elif p.isdigit() and (40 <= int(p) <= 47 or 100 <= int(p) <= 107):
                bg = p
            i += 1
    return "".join(plain), bgs


def highlighted_option(screen_with_escapes: str) -> str | None:
    """The workflow id of the highlighted start-dialog option: the option title line whose
    background differs from every other option title line (the cursor's $block-cursor colour).
    Option titles read `Name  (workflow_id, N steps)`."""
    found: list[tuple[str, str]] = []
    for line in screen_with_escapes.splitlines():
        plain, bgs = backgrounds(line)
        match = re.search(r"\(([\w.-]+), \d+ steps?[,)]", plain)
        if match:
            found.append((match.group(1), bgs[match.start()]))
    if len(found) == 1:
        return found[0][0]
    colours = [bg for _, bg in found]
    unique = [wid for wid, bg in found if colours.count(bg) == 1]
    return unique[0] if len(unique) == 1 else None


# ---------------------------------------------------------------------- tests


def dashboard_ready(text: str) -> bool:
    return "Agents" in text and "shell-1" in text


def quit_program(term: Tmux) -> int:
    term.send("q")
    deadline = time.monotonic() + 20
    while (status := term.dead_status()) is None:
        if "Quit anyway" in term.pane():
            term.send("y")
        if time.monotonic() > deadline:
            raise AssertionError(f"`q` did not end the program within 20s:\n{term.pane()}")
        time.sleep(POLL)
    return status


def test_start_code_review_until_succeeded_then_quit(
    terminal: Callable[[int, int], Tmux],
) -> None:
    term = terminal(120, 40)
    term.wait(dashboard_ready, "the dashboard with its agents")

    term.send("s")
    term.wait(lambda t: "code_review" in t or "Code Review" in t, "the start dialog")
    deadline = time.monotonic() + 20
    moves = 0
    while (current := highlighted_option(term.pane(escapes=True))) != "code_review":
        if time.monotonic() > deadline or moves > 40:
            raise AssertionError(f"cannot highlight code_review (at {current}):\n{term.pane()}")
        # Options keep their catalogue order; walk down, wrapping once through the top.
        term.send("Down" if moves < 20 else "Up")
        moves += 1
        time.sleep(POLL)

    term.send("Enter")
    # A start dialog that asks for inputs shows a form pre-filled with the defaults: submit it.
    deadline = time.monotonic() + 20
    submitted = False
    while not RUN_ROW.search(panel(text := term.pane(), "1 Runs")):
        if not submitted and "module_name" in text:
            term.send("C-s")
            submitted = True
        if time.monotonic() > deadline:
            raise AssertionError(f"no run appeared in the runs panel:\n{text}")
        time.sleep(POLL)

    screen = term.wait(
        lambda t: "succeeded" in panel(t, "1 Runs"), "a succeeded run in the runs panel", 60
    )
    assert "failed" not in panel(screen, "1 Runs"), screen

    assert quit_program(term) == 0

    # The dashboard's engine recorded what the screen showed.
    listing = subprocess.run(
        [sys.executable, "-m", "voltui", "list", "--json", "--db", str(term.db)],
        cwd=ROOT,
        env=term.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    runs = json.loads(listing.stdout)["runs"]
    assert [(r["workflow_id"], r["state"]) for r in runs] == [("code_review", "succeeded")]


def test_small_terminal_shows_main_panels_and_quits(terminal: Callable[[int, int], Tmux]) -> None:
    term = terminal(80, 24)
    titles = ("1 Runs", "2 DAG", "3 Agents", "4 Events")
    # The first frame can precede the breakpoint classes: wait for the settled layout.
    screen = term.wait(
        lambda t: (
            all(panel(t, title) for title in titles)
            and "shell-1" in panel(t, "3 Agents")
            and "engine:started" in panel(t, "4 Events")
        ),
        "the Runs, DAG, Agents (with shell-1) and Events (with engine:started) panels at 80x24",
    )
    assert "too small" not in screen.lower(), screen
    assert quit_program(term) == 0
