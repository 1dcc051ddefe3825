"""Shell completion: `voltui completion bash|zsh|fish` prints a small script; the script asks
`voltui __complete WORD...` what fits the word being typed.

All the knowledge stays here, read off the argparse parser, so a new command or flag completes
without touching the scripts: commands, flags, choices, and by what a value is (`completes()` in
`voltui.cli`): run ids and step ids from the state file, workflow ids from the workflows folder,
files and folders by the shell itself. `__complete` must answer fast and never fail loudly: it
reads the SQLite file directly, read-only, without loading the config machinery or the engine.

Answer format: the first line is a directive for the shell (`plain`, or `files`/`dirs`: also
offer paths), then one candidate per line, optionally followed by a tab and a description.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

from voltui.cli import EXIT_OK, build_parser
from voltui.locations import DB_ENV, default_config_path, default_db_path
from voltui.safetext import clean

MAX_IDS = 200
WORKFLOW_SUFFIXES = (".yaml", ".yml", ".json")
SAFE_VALUE = re.compile(r"[A-Za-z0-9_.:/=@+,%-]+")
_TOP_LEVEL_ID = re.compile(r"""^id:\s*["']?([^"'\s#]+)""", re.MULTILINE)

BASH = r"""# voltui completion for bash. Load it with:  eval "$(voltui completion bash)"
_voltui_complete() {
    local cur="${COMP_WORDS[COMP_CWORD]}" line directive
    local IFS=$'\n'
    local -a out
    out=($("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
    directive="${out[0]}"
    COMPREPLY=()
    for line in "${out[@]:1}"; do
        COMPREPLY+=("${line%%$'\t'*}")
    done
    case "$directive" in
        files) COMPREPLY+=($(compgen -f -- "$cur")); compopt -o filenames 2>/dev/null ;;
        dirs) COMPREPLY+=($(compgen -d -- "$cur")); compopt -o filenames 2>/dev/null ;;
    esac
}
complete -F _voltui_complete voltui
"""

ZSH = r"""#compdef voltui
# voltui completion for zsh. Load it with:  eval "$(voltui completion zsh)"
# (or save it as _voltui in a folder on $fpath)
_voltui() {
    local -a lines cands shown
    local directive line name desc
    lines=("${(@f)$(${words[1]} __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    directive=${lines[1]}
    for line in "${(@)lines[2,-1]}"; do
        [[ -z $line ]] && continue
        name=${line%%$'\t'*}
        desc=${line#*$'\t'}
        cands+=("$name")
        if [[ $desc != $line ]]; then shown+=("$name  -- $desc"); else shown+=("$name"); fi
    done
    (( ${#cands} )) && compadd -l -d shown -a cands
    case $directive in
        files) _files ;;
        dirs) _files -/ ;;
    esac
}
if [[ $funcstack[1] == _voltui ]]; then _voltui "$@"; else compdef _voltui voltui; fi
"""

FISH = r"""# voltui completion for fish. Load it with:  voltui completion fish | source
function __voltui_complete
    set -l words (commandline -opc)
    set -l program $words[1]
    set -e words[1]
    set -l cur (commandline -ct)
    set -l out ($program __complete $words "$cur" 2>/dev/null)
    set -l directive $out[1]
    set -e out[1]
    printf '%s\n' $out
    switch "$directive"
        case files
            __fish_complete_path "$cur"
        case dirs
            __fish_complete_directories "$cur"
    end
end
complete -c voltui -f -a '(__voltui_complete)'
"""

SCRIPTS = {"bash": BASH, "zsh": ZSH, "fish": FISH}


def cmd_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(SCRIPTS[args.shell])
    return EXIT_OK


# ---------------------------------------------------------------------- answering


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def _flag_value(words: list[str], flag: str) -> str | None:
    """The value given to `flag` earlier on the line (`--db X` or `--db=X`), if any."""
    for i, word in enumerate(words):
        if word == flag and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


def _config_value(words: list[str], key: str) -> str | None:
    """A top-level key of the config file (cheap: tomllib, no validation)."""
    path = _flag_value(words, "--config")
    where = Path(path) if path else default_config_path()
    if where is None:
        return None
    try:
        value = tomllib.loads(where.read_text(encoding="utf-8")).get(key)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, str) else None


def state_file(words: list[str]) -> Path:
    """The state file as the command line, `VOLTUI_DB` and the config name it (same order)."""
    named = _flag_value(words, "--db") or os.environ.get(DB_ENV) or _config_value(words, "db")
    return Path(named).expanduser() if named else default_db_path()


def workflows_folder(words: list[str]) -> Path | None:
    named = (
        _flag_value(words, "--workflows")
        or os.environ.get("VOLTUI_WORKFLOWS_DIR")
        or _config_value(words, "workflows_dir")
    )
    if named:
        return Path(named).expanduser()
    return Path("sample-workflows") if Path("sample-workflows").is_dir() else None


def _read_only(db: Path) -> sqlite3.Connection | None:
    if not db.is_file():
        return None
    try:
        return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5)
    except sqlite3.Error:
        return None


def run_ids(words: list[str]) -> Iterator[tuple[str, str]]:
    """Recent run ids, newest first, with `workflow state` as the description."""
    conn = _read_only(state_file(words))
    if conn is None:
        return
    try:
        rows = conn.execute(
            "SELECT id, workflow_id, state FROM runs ORDER BY created_at DESC LIMIT ?",
            (MAX_IDS,),
        ).fetchall()
    except sqlite3.Error:
        rows = []
    finally:
        conn.close()
    for run_id, workflow, state in rows:
        yield str(run_id), f"{workflow} {state}"


def step_ids(words: list[str], run_ref: str | None) -> Iterator[tuple[str, str]]:
    """The step ids of the run named on the line (an id or a unique prefix)."""
    conn = _read_only(state_file(words)) if run_ref else None
    if conn is None:
        return
    try:
        runs = conn.execute(
            "SELECT id FROM runs WHERE id = ? OR id GLOB ? LIMIT 2",
            (run_ref, re.sub(r"([*?\[])", r"[\1]", run_ref or "") + "*"),
        ).fetchall()
        rows = (
            conn.execute(
                "SELECT step_id, state FROM steps WHERE run_id = ? ORDER BY pos", (runs[0][0],)
            ).fetchall()
            if len(runs) == 1
            else []
        )
    except sqlite3.Error:
        rows = []
    finally:
        conn.close()
    for step, state in rows:
        yield str(step), str(state)


def workflow_ids(words: list[str]) -> Iterator[tuple[str, str]]:
    """Ids of the workflow files in the workflows folder (read cheaply, not validated)."""
    folder = workflows_folder(words)
    if folder is None or not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        if path.suffix not in WORKFLOW_SUFFIXES or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".json":
                found = json.loads(text).get("id")
            else:
                match = _TOP_LEVEL_ID.search(text)
                found = match.group(1) if match else None
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(found, str) and found:
            yield found, path.name


def _positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not a.option_strings]


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def candidates(words: list[str]) -> tuple[str, list[tuple[str, str]]]:
    """What may replace the last of `words` (the one being typed): (directive, candidates)."""
    words = words or [""]
    cur, before = words[-1], words[:-1]
    parser = build_parser()
    commands = _subparsers(parser)
    helps = _help_of(parser)
    current = parser
    positional_values: list[str] = []
    expecting: argparse.Action | None = None
    for word in before:
        if expecting is not None:
            expecting = None
            continue
        options = _options(current)
        if word.startswith("-") and word != "-":
            action = options.get(word.split("=", 1)[0])
            if action is not None and _takes_value(action) and "=" not in word:
                expecting = action
            continue
        if current is parser and word in commands:
            current = commands[word]
            continue
        positional_values.append(word)
    if expecting is not None:
        return _values(expecting, before, positional_values)
    if cur.startswith("-"):
        flags = [
            (s, a.help or "")
            for a in current._actions
            for s in a.option_strings
            if a.help != argparse.SUPPRESS
        ]
        return "plain", flags
    if current is parser:
        return "plain", [(name, helps.get(name, "")) for name in commands]
    positionals = [a for a in _positionals(current) if a.dest != "help"]
    index = len(positional_values)
    for action in positionals:
        if action.nargs in ("+", "*"):
            return _values(action, before, positional_values)
        if index == 0:
            return _values(action, before, positional_values)
        index -= 1
    return "plain", []


def _values(
    action: argparse.Action, words: list[str], positional_values: list[str]
) -> tuple[str, list[tuple[str, str]]]:
    if action.choices is not None:
        return "plain", [(str(c), "") for c in action.choices]
    kind = getattr(action, "complete", None)
    if kind == "runs":
        return "plain", list(run_ids(words))
    if kind == "steps":
        return "plain", list(step_ids(words, positional_values[0] if positional_values else None))
    if kind == "workflows":
        return "files", list(workflow_ids(words))
    if kind in ("files", "dirs"):
        return kind, []
    return "plain", []


def complete(words: list[str]) -> int:
    """`voltui __complete WORD...`: print the directive and the candidates for the last word."""
    try:
        directive, found = candidates(words)
    except Exception:  # completion must never print a traceback into someone's prompt
        directive, found = "plain", []
    cur = words[-1] if words else ""
    lines = [directive]
    for value, description in found:
        # Ids read cheaply from files and the store reach the user's terminal through the
        # shell's menu: offer only plain ones, and sanitised descriptions.
        if value.startswith(cur) and SAFE_VALUE.fullmatch(value):
            desc = " ".join(clean(description, max_len=80).split())
            lines.append(f"{value}\t{desc}" if desc else value)
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK
