"""Workflow inputs: defaults, coercion from text, choices and one message for all mistakes."""

from __future__ import annotations

import pytest

from voltui.engine.errors import InvalidInputError, UserError
from voltui.engine.inputs import parse_input_pairs, resolve_inputs
from voltui.engine.loader import load_workflow_text

WORKFLOW = load_workflow_text(
    """
id: deploy
inputs:
  target: {type: string, choices: [staging, production], description: where to deploy}
  replicas: {type: integer, default: 2}
  ratio: {type: number, default: 0.5}
  dry_run: {type: boolean, default: false}
  tag: {type: string, default: latest}
steps:
  - id: go
    run: {command: [echo, go]}
""",
    "deploy.yaml",
)


def test_defaults_fill_what_is_not_given() -> None:
    assert resolve_inputs(WORKFLOW, {"target": "staging"}) == {
        "target": "staging",
        "replicas": 2,
        "ratio": 0.5,
        "dry_run": False,
        "tag": "latest",
    }


def test_none_counts_as_not_given() -> None:
    assert resolve_inputs(WORKFLOW, {"target": "staging", "replicas": None})["replicas"] == 2


@pytest.mark.parametrize(
    ("name", "given", "expected"),
    [
        ("replicas", "5", 5),
        ("replicas", " 12 ", 12),
        ("replicas", 7, 7),
        ("replicas", 3.0, 3),
        ("ratio", "2.25", 2.25),
        ("ratio", "3", 3),
        ("ratio", 1, 1),
        ("tag", "v1.2", "v1.2"),
        ("tag", 3, "3"),
    ],
)
def test_values_are_coerced_to_declared_type(name: str, given: object, expected: object) -> None:
    value = resolve_inputs(WORKFLOW, {"target": "production", name: given})[name]
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("true", True),
        ("YES", True),
        ("1", True),
        (" no ", False),
        ("False", False),
        ("0", False),
        (True, True),
        (0, False),
    ],
)
def test_boolean_words(given: object, expected: bool) -> None:
    assert resolve_inputs(WORKFLOW, {"target": "staging", "dry_run": given})["dry_run"] is expected


@pytest.mark.parametrize(
    ("name", "given", "phrase"),
    [
        ("replicas", "many", "input 'replicas' expects a whole number like 3, got the text 'many'"),
        ("replicas", "2.5", "expects a whole number"),
        ("replicas", True, "got the boolean true"),
        ("ratio", "nan", "expects a number like 2.5"),
        ("ratio", "half", "expects a number like 2.5"),
        ("dry_run", "maybe", "expects true or false (also yes/no, 1/0), got the text 'maybe'"),
        ("tag", ["a"], "expects text, got a list"),
    ],
)
def test_bad_values_name_input_and_value(name: str, given: object, phrase: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        resolve_inputs(WORKFLOW, {"target": "staging", name: given})
    assert phrase in str(info.value)


def test_choices_are_checked() -> None:
    with pytest.raises(InvalidInputError) as info:
        resolve_inputs(WORKFLOW, {"target": "prod"})
    assert "input 'target' must be one of 'staging', 'production'; got 'prod'" in str(info.value)


def test_all_problems_in_one_message_with_input_listing() -> None:
    with pytest.raises(InvalidInputError) as info:
        resolve_inputs(WORKFLOW, {"replica": "3", "ratio": "x"})
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert message.startswith("Cannot start workflow 'deploy': ")
    assert "unknown input 'replica' (did you mean 'replicas'?)" in message
    assert "input 'target' is required but was not given" in message
    assert "input 'ratio' expects a number" in message
    assert "Inputs of workflow 'deploy': target (string, required, one of 'staging', " in message
    assert "replicas (integer, default 2)" in message
    assert "dry_run (boolean, default false)" in message
    assert "tag (string, default 'latest')" in message
    assert "where to deploy" in message


def test_workflow_without_inputs_says_so() -> None:
    bare = load_workflow_text("id: bare\nsteps: [{id: a, run: {python: 'm:f'}}]\n", "bare")
    assert resolve_inputs(bare, {}) == {}
    with pytest.raises(InvalidInputError, match="takes no inputs"):
        resolve_inputs(bare, {"x": "1"})


def test_parse_input_pairs() -> None:
    assert parse_input_pairs(["a=1", "url=http://x/?q=1", " b =  spaced ", "a=2", "empty="]) == {
        "a": "2",
        "url": "http://x/?q=1",
        "b": "  spaced ",
        "empty": "",
    }
    assert parse_input_pairs([]) == {}


def test_parse_input_pairs_rejects_pairs_without_equals() -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_input_pairs(["ok=1", "oops", "=novalue"])
    message = str(info.value)
    assert "'oops'" in message
    assert "'=novalue'" in message
    assert "KEY=VALUE" in message
    assert "--input path=src" in message


def test_optional_input_without_default_may_be_left_out() -> None:
    wf = load_workflow_text(
        "id: w\n"
        "inputs:\n"
        "  tag: {type: string, optional: true, choices: [a, b]}\n"
        "  need: {type: integer}\n"
        "steps: [{id: s, run: {simulated: {}}}]\n",
        "w.yaml",
    )
    assert resolve_inputs(wf, {"need": "3"}) == {"tag": None, "need": 3}
    assert resolve_inputs(wf, {"need": 1, "tag": "b"}) == {"tag": "b", "need": 1}
    with pytest.raises(InvalidInputError, match=r"tag \(string, optional, one of 'a', 'b'\)"):
        resolve_inputs(wf, {"need": 1, "tag": "c"})
    with pytest.raises(InvalidInputError, match="'need' is required"):
        resolve_inputs(wf, {})
