"""Workflow files load into models, and every kind of mistake is reported at its line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from voltui.engine.errors import UserError, WorkflowFileError
from voltui.engine.loader import (
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
