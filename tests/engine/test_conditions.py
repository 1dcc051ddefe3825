"""`when:` conditions: unsafe expressions are refused when the file loads; safe ones evaluate."""

from __future__ import annotations

import pytest

from voltui.engine.conditions import ConditionError, check, evaluate, referenced_steps
from voltui.engine.errors import WorkflowFileError
from voltui.engine.loader import load_workflow_text

STEPS = {
    "review": {"output": {"score": 9, "items": 3}, "state": "succeeded", "error": None},
    "lint-py": {"output": {"issues": []}, "state": "failed", "error": "boom"},
}


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("().__class__", "names starting with `_`"),
        ("inputs.x.__class__.__bases__", "names starting with `_`"),
        ("inputs._private", "names starting with `_`"),
        ("open('/etc/passwd')", "function calls"),
        ("__import__('os').system('id')", "function calls"),
        ("inputs.name.upper()", "function calls"),
        ("lambda: 1", "lambdas"),
        ("[x for x in steps]", "comprehensions"),
        ("any(s for s in steps)", "function calls"),
        ("(y := 1)", "assignments"),
        ("f'{inputs}'", "f-strings"),
        ("2 ** 100000000", "the ** operator"),
        ("os.name == 'posix'", "unknown name `os`"),
        ("inputs.deploy and", "not a valid expression"),
        ("${inputs.deploy", "without its closing"),
        ("  ", "empty"),
    ],
)
def test_unsafe_or_broken_expressions_are_refused(expr: str, fragment: str) -> None:
    problems = check(expr)
    assert problems, expr
    assert any(fragment in p for p in problems), problems
    with pytest.raises(ConditionError):
        evaluate(expr, {"x": 1, "deploy": True, "name": "a"}, STEPS)


def test_one_problem_per_rejected_fragment() -> None:
    assert check("[x for x in steps]") == [
        "condition uses `[x for x in steps]`, but conditions cannot use comprehensions"
    ]


@pytest.mark.parametrize(
    ("expr", "inputs", "expected"),
    [
        ("${inputs.deploy} and steps.review.output.score >= 8", {"deploy": True}, True),
        ("${inputs.deploy} and steps.review.output.score >= 8", {"deploy": False}, False),
        ("steps.review.output.score > 9", {}, False),
        ("steps['lint-py'].state == 'failed'", {}, True),
        ("steps.review.output['items'] == 3", {}, True),
        # `items` is a key here, not dict.items: attribute access only reads mapping keys
        ("steps.review.output.items == 3", {}, True),
        ("inputs.env in ['prod', 'staging'] and not inputs.dry", {"env": "prod", "dry": 0}, True),
        ("inputs.n % 2 == 0 if inputs.n else false", {"n": 4}, True),
        ("inputs.tag is null", {"tag": None}, True),
        ("len == 1 or true", {}, None),  # `len` is not a known name: refused, not called
    ],
)
def test_evaluate(expr: str, inputs: dict, expected: bool | None) -> None:
    if expected is None:
        with pytest.raises(ConditionError, match="unknown name `len`"):
            evaluate(expr, inputs, STEPS)
        return
    assert evaluate(expr, inputs, STEPS) is expected


def test_missing_keys_say_what_is_there() -> None:
    with pytest.raises(ConditionError, match=r"`steps.review.output` has no key 'grade' \(keys: "):
        evaluate("steps.review.output.grade > 1", {}, STEPS)
    with pytest.raises(ConditionError, match="is a int, not a mapping"):
        evaluate("steps.review.output.score.x", {}, STEPS)


def test_referenced_steps() -> None:
    assert referenced_steps("${inputs.a} and steps.review.output.x and steps['lint-py'].state") == {
        "review",
        "lint-py",
    }


def test_unsafe_condition_is_a_located_file_error() -> None:
    text = (
        "id: w\n"
        "steps:\n"
        "  - id: a\n"
        "    run: {simulated: {}}\n"
        "  - id: b\n"
        "    depends_on: [a]\n"
        "    when: \"__import__('os').system('rm -rf ~')\"\n"
        "    run: {simulated: {}}\n"
    )
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(text, "bad.yaml")
    [problem] = info.value.problems
    assert problem.startswith("line 7, column 11 (steps[1].when): ")
    assert "function calls" in problem


def test_safe_condition_loads() -> None:
    text = (
        "id: w\n"
        "inputs: {deploy: {type: boolean, default: false}}\n"
        "steps:\n"
        "  - id: review\n"
        "    run: {simulated: {}}\n"
        "  - id: ship\n"
        "    depends_on: [review]\n"
        '    when: "${inputs.deploy} and steps.review.output.score >= 8"\n'
        "    run: {simulated: {}}\n"
    )
    wf = load_workflow_text(text, "ok.yaml")
    assert wf.step("ship").when == "${inputs.deploy} and steps.review.output.score >= 8"
