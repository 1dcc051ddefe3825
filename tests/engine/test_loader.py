"""Workflow files load into models, and every kind of mistake is reported at its line."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from voltui.engine.errors import UserError, WorkflowFileError
from voltui.engine.limits import WorkflowLimits
from voltui.engine.loader import (
    MAX_SHOWN,
    format_location,
    format_path,
    load_workflow,
    load_workflow_dir,
    load_workflow_text,
    workflow_json_schema,
)

BAD = Path(__file__).parent / "bad_workflows"

# file, line the message must point at, phrase the message must contain
BAD_CASES = [
    ("yaml_syntax.yaml", 5, "mapping values are not allowed here"),
    ("tab_indent.yaml", 4, "tabs"),
    ("unclosed_quote.yaml", 2, "quoted string that starts here is never closed"),
    ("multi_document.yaml", 5, "second YAML document"),
    ("empty.yaml", 1, "the file is empty; a workflow needs at least `id` and `steps`"),
    ("comments_only.yaml", 1, "the file is empty"),
    ("not_mapping.yaml", 1, "the top level is a list"),
    ("not_utf8.yaml", 2, "not UTF-8"),
    ("unknown_field.yaml", 6, "unknown field `dependson`; did you mean `depends_on`?"),
    ("missing_field.yaml", 5, "required field `run` is missing"),
    ("wrong_type.yaml", 2, "expected a whole number, got the text 'lots'"),
    ("bad_duration.yaml", 10, "'soon' is not a duration; write a number of seconds"),
    ("bad_literal.yaml", 4, "did you mean 'exponential'?"),
    ("bad_id.yaml", 1, "'my workflow' is not a valid id"),
    ("no_steps.yaml", 2, "at least one step"),
    ("unknown_dependency.yaml", 7, "unknown step 'buidl'"),
    ("self_dependency.yaml", 4, "depends on itself"),
    ("cycle.yaml", 6, "dependency cycle: a -> b -> a"),
    ("duplicate_step.yaml", 7, "step id 'a' is used twice"),
    ("duplicate_key.yaml", 6, "key `timeout` appears twice in this mapping (first at line 5)"),
    ("run_none.yaml", 5, "run needs exactly one of command, python, llm, simulated or approval"),
    ("run_two_kinds.yaml", 5, "(found command, python)"),
    ("string_command.yaml", 5, "add shell: true"),
    ("command_not_list.yaml", 5, "expected a list or a string, got the integer 42"),
    ("command_item_type.yaml", 7, "steps[0].run.command[1]): expected text"),
    ("bad_input_default.yaml", 5, "the default 'three' is text, which does not match"),
    ("bad_choice_default.yaml", 5, "is not one of the choices"),
    ("bad_json.json", 5, "not valid JSON"),
    ("json_not_mapping.json", 1, "the top level is a list"),
    ("json_unknown_field.json", 6, "unknown field `comand`; did you mean `command`?"),
    ("json_cycle.json", 4, "dependency cycle: a -> b -> a"),
    ("nan_delay.yaml", 4, "(retry.base_delay): .nan is not a finite number"),
    ("json_nan.json", 5, "(steps[0].timeout): NaN is not a finite number"),
    ("alias_loop.yaml", 5, "contains an alias to itself"),
    ("bad_date.yaml", 5, "'2024-13-45' looks like a date but is not a valid one"),
    ("custom_tag.yaml", 5, "the tag !!binary is not supported"),
]


def test_every_fixture_is_covered() -> None:
    """A fixture without a case would silently test nothing."""
    assert {p.name for p in BAD.iterdir()} == {name for name, _line, _phrase in BAD_CASES}


@pytest.mark.parametrize(("name", "line", "phrase"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_file_gives_one_located_message(name: str, line: int, phrase: str) -> None:
    path = BAD / name
    with pytest.raises(WorkflowFileError) as info:
        load_workflow(path)
    error = info.value
    message = str(error)
    assert isinstance(error, UserError)
    assert error.path == str(path)
    assert message.startswith(str(path) + ": ")
    assert len(error.problems) == 1, error.problems
    assert "\n" not in message
    assert f"line {line}," in message
    assert phrase in message
    assert "Value error" not in message
    assert "Traceback" not in message


def test_located_message_names_path_and_column() -> None:
    with pytest.raises(WorkflowFileError) as info:
        load_workflow(BAD / "bad_duration.yaml")
    assert info.value.problems == [
        "line 10, column 19 (steps[1].retry.base_delay): 'soon' is not a duration; write a "
        "number of seconds or e.g. 250ms, 5s, 10m, 1h, 1h30m"
    ]


def test_unknown_field_lists_allowed_fields() -> None:
    with pytest.raises(WorkflowFileError) as info:
        load_workflow(BAD / "unknown_field.yaml")
    assert "Allowed here: id, name, type" in str(info.value)
    assert "continue_on_failure" in str(info.value)


def test_unknown_field_without_close_match_says_to_remove_it() -> None:
    text = "id: x\nbanana: 1\nsteps:\n  - id: a\n    run: {command: [true]}\n"
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(text, "fruit.yaml")
    assert info.value.problems[0].startswith("line 2, column 1 (banana): unknown field")
    assert "remove it or fix its spelling" in info.value.problems[0]


def test_several_problems_are_all_reported_in_line_order() -> None:
    text = (
        "id: many\n"  # 1
        "max_parallel: 0\n"  # 2
        "steps:\n"  # 3
        "  - id: a\n"  # 4
        "    run: {command: [echo]}\n"  # 5
        "    timeout: later\n"  # 6
        "  - id: b\n"  # 7
        "    run: {command: [echo]}\n"  # 8
        "    priority: urgent\n"  # 9
    )
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(text, "many.yaml")
    problems = info.value.problems
    assert [p.split(",")[0] for p in problems] == ["line 2", "line 6", "line 9"]
    assert "must be at least 1" in problems[0]
    assert "use one of critical, high, normal, low" in problems[2]
    assert str(info.value).startswith("many.yaml: 3 problems\n  - line 2")


def test_dag_problems_are_checked_after_duplicate_keys() -> None:
    text = "id: d\nid: d\nsteps:\n  - id: a\n    depends_on: [zzz]\n    run: {python: 'm:f'}\n"
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(text, "d.yaml")
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("line 2, column 1 (id): key `id` appears twice")
    assert problems[1].startswith("line 5, column 18 (steps[0].depends_on[0])")
    assert "fix the name or add that step" in problems[1]


def test_yaml_merge_keys_are_not_duplicates() -> None:
    text = (
        "id: merged\n"
        "steps:\n"
        "  - &base\n"
        "    id: a\n"
        "    run: {command: [echo, a]}\n"
        "    timeout: 5s\n"
        "  - <<: *base\n"
        "    id: b\n"
        "    depends_on: [a]\n"
    )
    workflow = load_workflow_text(text, "merged.yaml")
    assert [s.id for s in workflow.steps] == ["a", "b"]
    assert workflow.steps[1].timeout == 5.0
    assert workflow.steps[1].run.command == ["echo", "a"]


def test_good_yaml_loads_with_durations_in_seconds(tmp_path: Path) -> None:
    path = tmp_path / "review.yml"
    path.write_text(
        "id: code_review\n"
        "name: Code Review\n"
        "inputs: {path: {type: string, default: '.'}, n: {type: integer, default: 2}}\n"
        "timeout: 10m\n"
        "retry: {max_attempts: 3, base_delay: 250ms, max_delay: 1h30m}\n"
        "steps:\n"
        "  - id: gen\n"
        "    run: {python: 'pkg.module:generate'}\n"
        "  - id: review\n"
        "    depends_on: [gen]\n"
        "    run: {command: [python, -m, reviewer]}\n"
        "    timeout: 2m\n"
        "    cache: {ttl: 1h}\n",
        encoding="utf-8",
    )
    workflow = load_workflow(path)
    assert workflow.id == "code_review"
    assert workflow.source == str(path)
    assert workflow.timeout == 600.0
    assert workflow.retry is not None
    assert workflow.retry.base_delay == 0.25
    assert workflow.retry.max_delay == 5400.0
    review = workflow.step("review")
    assert review.timeout == 120.0
    assert review.cache is not None and review.cache.ttl == 3600.0
    assert review.run.kind == "command"
    assert workflow.inputs["n"].default == 2


def test_good_json_loads_including_tabs_and_bom(tmp_path: Path) -> None:
    doc = {
        "id": "json_flow",
        "timeout": "5s",
        "steps": [
            {"id": "a", "run": {"simulated": {"duration": "250ms"}}},
            {"id": "b", "depends_on": ["a"], "run": {"command": ["echo", "b"]}, "timeout": 1.5},
        ],
    }
    path = tmp_path / "flow.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(doc, indent="\t").encode())
    workflow = load_workflow(path)
    assert workflow.source == str(path)
    assert workflow.timeout == 5.0
    assert workflow.steps[0].run.simulated is not None
    assert workflow.steps[0].run.simulated.duration == 0.25
    assert workflow.steps[1].timeout == 1.5


def test_json_numbers_keep_json_meaning() -> None:
    """YAML 1.1 would read 1e3 as text; the JSON path must not."""
    text = '{"id": "n", "timeout": 1e3, "steps": [{"id": "a", "run": {"python": "m:f"}}]}'
    assert load_workflow_text(text, "n.json", fmt="json").timeout == 1000.0


def test_load_workflow_text_leaves_source_unset() -> None:
    workflow = load_workflow_text("id: t\nsteps: [{id: a, run: {python: 'm:f'}}]\n", "inline")
    assert workflow.source is None


def test_load_workflow_text_uses_label_in_errors() -> None:
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text("", "<pasted>")
    assert str(info.value).startswith("<pasted>: line 1, column 1: the file is empty")


def test_top_level_scalar_says_what_it_is() -> None:
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text("just some words\n", "words.yaml")
    assert "the top level is the text 'just some words'" in str(info.value)


def test_unreadable_paths_are_workflow_file_errors(tmp_path: Path) -> None:
    with pytest.raises(WorkflowFileError, match="does not exist"):
        load_workflow(tmp_path / "nope.yaml")
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    with pytest.raises(WorkflowFileError, match="is a folder"):
        load_workflow(folder)


def test_control_character_in_yaml_is_located(tmp_path: Path) -> None:
    path = tmp_path / "bell.yaml"
    path.write_text("id: x\nname: ding\x07\nsteps: []\n", encoding="utf-8")
    with pytest.raises(WorkflowFileError) as info:
        load_workflow(path)
    assert "line 2, column 11: the file contains the control character U+0007" in str(info.value)


def test_load_workflow_dir_splits_good_and_bad(tmp_path: Path) -> None:
    good = "id: {id}\nsteps:\n  - id: a\n    run: {{command: [echo, {id}]}}\n"
    (tmp_path / "b_second.yaml").write_text(good.format(id="second"))
    (tmp_path / "a_first.yml").write_text(good.format(id="first"))
    (tmp_path / "c_third.json").write_text(
        json.dumps({"id": "third", "steps": [{"id": "x", "run": {"python": "m:f"}}]})
    )
    shutil.copy(BAD / "cycle.yaml", tmp_path / "d_cycle.yaml")
    shutil.copy(BAD / "bad_json.json", tmp_path / "e_bad.json")
    (tmp_path / "notes.txt").write_text("not a workflow")
    (tmp_path / ".hidden.yaml").write_text("garbage: [")
    (tmp_path / "sub.yaml").mkdir()

    workflows, errors = load_workflow_dir(tmp_path)

    assert [w.id for w in workflows] == ["first", "second", "third"]
    assert [w.source for w in workflows] == [
        str(tmp_path / "a_first.yml"),
        str(tmp_path / "b_second.yaml"),
        str(tmp_path / "c_third.json"),
    ]
    assert [Path(e.path).name for e in errors] == ["d_cycle.yaml", "e_bad.json"]
    assert "dependency cycle" in str(errors[0])


def test_load_workflow_dir_reports_duplicate_ids_naming_both_files(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text("id: same\nsteps: [{id: a, run: {python: 'm:f'}}]\n")
    (tmp_path / "two.yaml").write_text(
        "# the same id again\nid: same\nsteps: [{id: b, run: {python: 'm:f'}}]\n"
    )
    workflows, errors = load_workflow_dir(tmp_path)
    assert [w.source for w in workflows] == [str(tmp_path / "one.yaml")]
    assert len(errors) == 1
    message = str(errors[0])
    assert errors[0].path == str(tmp_path / "two.yaml")
    assert str(tmp_path / "one.yaml") in message
    assert "line 2, column 5 (id): workflow id 'same' is already used by" in message


def test_load_workflow_dir_missing_folder_is_an_error_entry(tmp_path: Path) -> None:
    workflows, errors = load_workflow_dir(tmp_path / "absent")
    assert workflows == []
    assert len(errors) == 1
    assert "does not exist" in str(errors[0])


def test_json_schema_is_json_and_describes_steps() -> None:
    schema = workflow_json_schema()
    again = json.loads(json.dumps(schema))
    assert again["$schema"].startswith("https://json-schema.org/")
    assert again["title"] == "voltui workflow"
    assert again["description"]
    assert "steps" in again["properties"]
    assert set(again["required"]) == {"id", "steps"}
    assert again["additionalProperties"] is False


def test_format_helpers() -> None:
    assert format_path(("steps", 2, "depends_on", 0)) == "steps[2].depends_on[0]"
    assert format_path(("inputs", "my input", "default")) == "inputs['my input'].default"
    assert format_location(("steps", 1), 14, 9) == "line 14, column 9 (steps[1])"
    assert format_location((), 3, 1) == "line 3, column 1"
    assert format_location(("id",), None, None) == "id"


def test_misspelt_required_field_is_one_problem() -> None:
    text = "id: x\nsteps:\n  - id: a\n    run: {llm: {promt: hi}}\n"
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(text, "typo.yaml")
    assert info.value.problems == [
        "line 4, column 17 (steps[0].run.llm.promt): unknown field `promt`; did you mean "
        "`prompt` (a required field)? Allowed here: prompt, system, model, max_tokens, "
        "temperature, stream, output_schema"
    ]


def test_yaml_non_text_scalars_get_a_quote_hint() -> None:
    text = "id: x\nname: 2024-01-01\nsteps:\n  - id: no\n    run: {python: 'm:f'}\n"
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(text, "dates.yaml")
    first, second = info.value.problems
    assert first.startswith("line 2, column 7 (name): expected text, got a date")
    assert first.endswith("quote it if you meant text")
    assert second.startswith("line 4, column 9 (steps[0].id): expected text, got the boolean false")
    assert "YAML reads true/false/yes/no/on/off as booleans" in second


# ---------------------------------------------------------------------- every problem, one pass

MULTI = Path(__file__).parent / "multi_problem_workflows"


def test_four_problems_of_four_kinds_in_one_pass() -> None:
    """Schema and DAG problems together, each on its own line with its place (issue 10)."""
    with pytest.raises(WorkflowFileError) as info:
        load_workflow(MULTI / "four_kinds.yaml")
    problems = info.value.problems
    assert [p.split(" (")[0] for p in problems] == [
        "line 7, column 14",
        "line 9, column 18",
        "line 9, column 25",
        "line 14, column 9",
    ]
    assert "'soon' is not a duration" in problems[0]
    assert "unknown step 'biuld'; did you mean 'build'?" in problems[1]
    assert "dependency cycle: test -> package -> test" in problems[2]
    assert "step id 'build' is used twice" in problems[3]
    assert info.value.more == 0
    assert str(info.value).startswith(f"{MULTI / 'four_kinds.yaml'}: 4 problems\n")


def test_dag_is_checked_even_when_steps_fail_the_schema() -> None:
    with pytest.raises(WorkflowFileError) as info:
        load_workflow(MULTI / "schema_and_dag.json")
    problems = info.value.problems
    assert len(problems) == 4, problems
    assert "unknown field `retries`; did you mean `retry`?" in problems[0]
    assert "dependency cycle: a -> b -> a" in problems[1]
    assert "unknown field `comand`; did you mean `command`?" in problems[2]
    assert "unknown step 'nope'" in problems[3]
    assert all(p.startswith("line ") for p in problems)


def test_dag_of_steps_with_bad_ids_or_dependencies_does_not_crash() -> None:
    text = (
        "id: odd\n"
        "steps:\n"
        "  - 42\n"
        "  - {id: [x], depends_on: a, run: {command: [x]}}\n"
        "  - {id: b, depends_on: [1, zz], run: {command: [x]}}\n"
    )
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(text, "odd.yaml")
    message = str(info.value)
    assert "unknown step 'zz'" in message
    assert "line 3" in message and "line 4" in message and "line 5" in message


# ---------------------------------------------------------------------- non-finite numbers


@pytest.mark.parametrize(
    ("place", "text"),
    [
        ("retry.base_delay", "retry: {base_delay: .nan}\n"),
        ("retry.max_delay", "retry: {max_delay: .inf}\n"),
        ("retry.jitter", "retry: {jitter: .nan}\n"),
        ("timeout", "timeout: .inf\n"),
        ("steps[0].run.simulated.duration", None),
        ("steps[0].params.nested[1].x", None),
        ("inputs.n.default", "inputs: {n: {type: number, default: -.inf}}\n"),
    ],
)
def test_non_finite_numbers_are_rejected_everywhere(place: str, text: str | None) -> None:
    step = "  - id: a\n    run: {command: [echo]}\n"
    if place == "steps[0].run.simulated.duration":
        step = "  - id: a\n    run: {simulated: {duration: .NaN}}\n"
    elif place.startswith("steps[0].params"):
        step = "  - id: a\n    run: {command: [echo]}\n    params: {nested: [1, {x: .Inf}]}\n"
    source = "id: f\n" + (text or "") + "steps:\n" + step
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(source, "f.yaml")
    assert len(info.value.problems) == 1, info.value.problems
    problem = info.value.problems[0]
    assert f"({place}): " in problem
    assert "is not a finite number" in problem
    assert problem.startswith("line ")


def test_duration_that_overflows_to_infinity_is_rejected() -> None:
    source = (
        "id: f\nsteps:\n  - id: a\n    run: {command: [echo]}\n    timeout: " + "9" * 400 + "s\n"
    )
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(source, "f.yaml")
    assert "line 5, column 14 (steps[0].timeout)" in str(info.value)


def test_models_built_in_code_reject_non_finite_numbers() -> None:
    """The API path (workflows built without a file) has the same rule."""
    from pydantic import ValidationError

    from voltui.engine.models import RetryPolicy, Workflow

    with pytest.raises(ValidationError):
        RetryPolicy(base_delay=float("nan"))
    with pytest.raises(ValidationError):
        RetryPolicy(jitter=float("nan"))
    with pytest.raises(ValidationError):
        Workflow.model_validate(
            {"id": "w", "timeout": float("inf"), "steps": [{"id": "a", "run": {"python": "m:f"}}]}
        )


# ---------------------------------------------------------------------- files that never end


def _load_in_thread(path: Path) -> BaseException | None:
    """Load `path` in a thread, so a read that blocks fails the test instead of hanging it."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            load_workflow(path)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=30)  # a hang guard, not a speed check: a FIFO read never returns
    assert outcome, f"loading {path} blocked"
    return outcome[0]


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    error = _load_in_thread(fifo)
    assert isinstance(error, WorkflowFileError)
    assert "this is a FIFO (named pipe), not a regular file" in str(error)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
@pytest.mark.parametrize("through_link", [False, True])
def test_devices_are_refused_directly_and_through_symlinks(
    device: str, through_link: bool, tmp_path: Path
) -> None:
    if not os.path.exists(device):
        pytest.skip(f"{device} does not exist here")
    path = Path(device)
    if through_link:
        path = tmp_path / "innocent.yaml"
        path.symlink_to(device)
    error = _load_in_thread(path)
    assert isinstance(error, WorkflowFileError)
    assert "this is a character device, not a regular file" in str(error)


def test_symlink_to_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "flow.yaml"
    link.symlink_to(fifo)
    error = _load_in_thread(link)
    assert isinstance(error, WorkflowFileError)
    assert "FIFO" in str(error)


def test_symlink_to_a_regular_file_is_read(tmp_path: Path) -> None:
    target = tmp_path / "real.yaml"
    target.write_text("id: real\nsteps: [{id: a, run: {command: [echo]}}]\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    assert load_workflow(link).id == "real"


def test_broken_symlink_says_so(tmp_path: Path) -> None:
    link = tmp_path / "gone.yaml"
    link.symlink_to(tmp_path / "nothing.yaml")
    with pytest.raises(WorkflowFileError, match="symbolic link to a file that does not exist"):
        load_workflow(link)


def test_file_over_the_size_limit_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("id: big\nsteps: [{id: a, run: {command: [echo]}}]\n" + "#" * 5000 + "\n")
    with pytest.raises(WorkflowFileError) as info:
        load_workflow(path, limits=WorkflowLimits(max_file_bytes=2048))
    assert "over the limit of 2,048 (limits.max_file_bytes)" in str(info.value)
    assert load_workflow(path).id == "big"  # within the default limit


def test_a_100_mb_name_is_refused_with_a_short_message(tmp_path: Path) -> None:
    path = tmp_path / "huge_name.yaml"
    with path.open("w") as out:
        out.write("id: huge\nname: ")
        for _ in range(100):
            out.write("n" * 1_000_000)
        out.write("\nsteps: [{id: a, run: {command: [echo]}}]\n")
    with pytest.raises(WorkflowFileError) as info:
        load_workflow(path)
    assert len(str(info.value)) < 400
    assert "limits.max_file_bytes" in str(info.value)
    # With the size limit raised, the text-length limit catches it, at its line.
    with pytest.raises(WorkflowFileError) as info:
        load_workflow(path, limits=WorkflowLimits(max_file_bytes=200_000_000))
    assert len(str(info.value)) < 400
    assert "line 2, column 7 (name): this text is 100,000,000 characters long" in str(info.value)
    assert "limits.max_string_length" in str(info.value)


# ---------------------------------------------------------------------- pathological files


def _steps_yaml(lines: list[str]) -> str:
    return "id: generated\nsteps:\n" + "\n".join(lines) + "\n"


def test_50000_duplicate_ids_give_20_problems_and_a_count() -> None:
    text = _steps_yaml(["  - {id: a, run: {command: [x]}}"] * 50_000)
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(text, "dups.yaml")
    error = info.value
    assert len(error.problems) == MAX_SHOWN == 20
    assert error.more == 49_999 - 20
    assert error.total == 49_999
    assert error.problems[0].startswith(
        "line 4, column 10 (steps[1].id): step id 'a' is used twice"
    )
    assert "49,999 problems" in str(error)
    assert "and 49,979 more" in str(error)
    assert len(str(error)) < 20 * 300


def test_20000_unknown_dependencies_give_bounded_messages() -> None:
    lines = [
        f"  - {{id: s{i}, depends_on: [{', '.join(f'gone_{i}_{k}' for k in range(20))}], "
        "run: {command: [x]}}"
        for i in range(1000)
    ]
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(_steps_yaml(lines), "unknown.yaml")
    error = info.value
    assert error.total == 20_000
    assert len(error.problems) == 20
    assert all("depends on unknown step 'gone_" in p for p in error.problems)
    assert all(len(p) < 200 for p in error.problems)  # no listing of the 1,000 known steps
    assert len(str(error)) < 20 * 250


def test_unknown_dependency_suggests_the_nearest_of_many_steps() -> None:
    lines = [f"  - {{id: stage_{i:05d}_task, run: {{command: [x]}}}}" for i in range(20_000)]
    lines.append("  - {id: last, depends_on: [stage_12345_tsak, zzzz], run: {command: [x]}}")
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(_steps_yaml(lines), "near.yaml")
    problems = info.value.problems
    assert len(problems) == 2
    assert "did you mean 'stage_12345_task'" in problems[0]
    assert problems[1].endswith("unknown step 'zzzz'; fix the name or add that step")


def test_a_10000_step_cycle_is_named_in_a_bounded_message() -> None:
    lines = [
        f"  - {{id: s{i}, depends_on: [s{(i - 1) % 10_000}], run: {{command: [x]}}}}"
        for i in range(10_000)
    ]
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(_steps_yaml(lines), "ring.yaml")
    (problem,) = info.value.problems
    assert problem.startswith("line 3, column 27 (steps[0].depends_on[0]): dependency cycle: s0 ->")
    assert "(9,989 more)" in problem
    assert "s9999 -> s0" in problem
    assert len(problem) < 400


def test_a_50000_step_chain_loads() -> None:
    """The chain that took 39-59 s: no recursion limit, no quadratic check (speed: bench/)."""
    lines = ["  - {id: s0, run: {command: [x]}}"] + [
        f"  - {{id: s{i}, depends_on: [s{i - 1}], run: {{command: [x]}}}}" for i in range(1, 50_000)
    ]
    workflow = load_workflow_text(_steps_yaml(lines), "chain.yaml")
    assert len(workflow.steps) == 50_000
    assert workflow.steps[-1].depends_on == ["s49998"]


def test_step_count_limit() -> None:
    lines = [f"  - {{id: s{i}, run: {{command: [x]}}}}" for i in range(11)]
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(_steps_yaml(lines), "many.yaml", limits=WorkflowLimits(max_steps=10))
    (problem,) = info.value.problems
    assert problem.startswith("line 3, column 3 (steps): the workflow has 11 steps")
    assert "limits.max_steps" in problem


@pytest.mark.parametrize("fmt", ["yaml", "json"])
@pytest.mark.parametrize("depth", [65, 900, 100_000])
def test_nesting_past_the_depth_limit_is_one_located_problem(fmt: str, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    if fmt == "yaml":
        text = (
            f"id: deep\nsteps:\n  - id: a\n    run: {{command: [x]}}\n    params: {{n: {nested}}}\n"
        )
    else:
        text = (
            '{"id": "deep", "steps": [{"id": "a", "run": {"command": ["x"]}, '
            f'"params": {{"n": {nested}}}}}]}}'
        )
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(text, f"deep.{fmt}", fmt=fmt)  # type: ignore[arg-type]
    (problem,) = info.value.problems
    assert problem.startswith("line ")
    assert "deeper than 64 levels" in problem or "1,000 levels" in problem
    assert len(problem) < 400


def test_depth_limit_counts_nesting_through_aliases() -> None:
    levels = ["a0: &a0 [[[[[[[[[[1]]]]]]]]]]"]
    levels += [f"a{i}: &a{i} [[[[[[[[[[*a{i - 1}]]]]]]]]]]" for i in range(1, 8)]
    text = "id: d\n" + "\n".join(levels) + "\nsteps: [{id: a, run: {command: [x]}}]\n"
    with pytest.raises(WorkflowFileError, match="deeper than 64 levels"):
        load_workflow_text(text, "alias_depth.yaml")


def test_alias_bomb_is_refused_without_expanding_it() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    text = "id: bomb\n" + "\n".join(lines) + "\nsteps: [{id: a, run: {command: [x]}}]\n"
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(text, "bomb.yaml")
    (problem,) = info.value.problems
    assert "YAML aliases here expand the file to more than 5,000,000 values" in problem


def test_shared_anchors_within_limits_still_load() -> None:
    text = (
        "id: shared\n"
        "steps:\n"
        "  - &base {id: a, run: {command: [echo, a]}, params: &p {k: [1, 2, 3]}}\n"
        "  - {<<: *base, id: b, depends_on: [a], params: *p}\n"
    )
    workflow = load_workflow_text(text, "shared.yaml")
    assert workflow.steps[1].run.command == ["echo", "a"]
    assert workflow.steps[1].params == {"k": [1, 2, 3]}


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_text_length_limit(fmt: str) -> None:
    long = "d" * 70_000
    if fmt == "yaml":
        text = f"id: t\ndescription: {long}\nsteps: [{{id: a, run: {{command: [x]}}}}]\n"
    else:
        step = '{"id": "a", "run": {"command": ["x"]}}'
        text = f'{{"id": "t", "description": "{long}", "steps": [{step}]}}'
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(text, f"t.{fmt}", fmt=fmt)  # type: ignore[arg-type]
    (problem,) = info.value.problems
    assert "(description): this text is 70,000 characters long" in problem
    assert problem.startswith("line ")


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_a_number_too_long_to_read_is_located(fmt: str) -> None:
    digits = "9" * 5000
    if fmt == "yaml":
        text = f"id: n\nsteps:\n  - id: a\n    run: {{command: [x]}}\n    params: {{n: {digits}}}\n"
    else:
        step = f'{{"id": "a", "run": {{"command": ["x"]}}, "params": {{"n": {digits}}}}}'
        text = f'{{"id": "n", "steps": [{step}]}}'
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(text, f"n.{fmt}", fmt=fmt)  # type: ignore[arg-type]
    (problem,) = info.value.problems
    assert "this number has 5,000 digits" in problem
    assert problem.startswith("line ")


def test_json_duplicate_keys_are_reported() -> None:
    text = '{"id": "a", "steps": [{"id": "s", "run": {"command": ["x"]}}], "id": "b"}'
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(text, "d.json", fmt="json")
    assert "key 'id' appears twice in this object" in str(info.value)


def test_json_lone_surrogate_escape_is_refused() -> None:
    text = (
        '{"id": "a", "name": "bad \\ud800 text", "steps": [{"id": "s", "run": {"command": ["x"]}}]}'
    )
    with pytest.raises(WorkflowFileError, match="surrogate"):
        load_workflow_text(text, "s.json", fmt="json")


def test_messages_quote_long_values_briefly() -> None:
    value = "v" * 10_000
    text = f"id: q\nsteps:\n  - id: a\n    run: {{command: [x]}}\n    priority: {value}\n"
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(text, "q.yaml")
    assert len(str(info.value)) < 400


@pytest.mark.parametrize(
    ("value", "phrase"),
    [
        ("!!bool maybe", "'maybe' cannot be read as true or false"),
        ("!!timestamp x", "'x' cannot be read as a date"),
        ("!!float x", "'x' cannot be read as a number"),
        ("!!int 1.5", "'1.5' cannot be read as a whole number"),
        ("!!int ''", "'' cannot be read as a whole number"),
        ("!!float ''", "'' cannot be read as a number"),
    ],
)
def test_explicit_tags_on_the_wrong_kind_of_text(value: str, phrase: str) -> None:
    text = f"id: t\nsteps:\n  - id: a\n    run: {{command: [x]}}\n    params: {{v: {value}}}\n"
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(text, "t.yaml")
    (problem,) = info.value.problems
    assert problem.startswith("line 5, column 17 (steps[0].params.v): ")
    assert phrase in problem


@pytest.mark.parametrize("digits", [400, 4000])
def test_a_duration_too_large_for_a_float_is_a_located_problem(digits: int) -> None:
    text = f"id: t\nsteps:\n  - id: a\n    run: {{command: [x]}}\n    timeout: {'9' * digits}\n"
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(text, "t.yaml")
    (problem,) = info.value.problems
    assert problem.startswith("line 5, column 14 (steps[0].timeout): ")
    assert "far too large for a duration" in problem


def test_a_duplicate_key_beside_an_unreadable_tagged_key() -> None:
    """Finding where a duplicated key first appeared must not trip over a bad `!!bool` key."""
    text = "!!bool name: x\nid: a\nid: b\nsteps: [{id: s, run: {command: [x]}}]\n"
    with pytest.raises(WorkflowFileError) as info:
        load_workflow_text(text, "k.yaml")
    message = str(info.value)
    assert "'name' cannot be read as true or false" in message
    assert "key `id` appears twice in this mapping (first at line 2)" in message
