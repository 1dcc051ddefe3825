"""`schedules:`, `triggers:`, `concurrency:` and `secrets:` in workflow files: accepted when
right, and reported at their line with a fix when wrong (as `voltui validate` shows them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from voltui.cli import main
from voltui.engine.errors import WorkflowFileError
from voltui.engine.loader import load_workflow_text, workflow_json_schema

HEAD = """\
id: nightly
inputs:
  repo: {type: string, default: "."}
  path: {type: string, optional: true}
steps:
  - id: s
    run: {simulated: {duration: 1ms}}
"""


def load(extra: str):
    return load_workflow_text(HEAD + extra, "nightly.yaml")


def problem(extra: str) -> str:
    with pytest.raises(WorkflowFileError) as info:
        load(extra)
    return str(info.value)


def test_a_full_automation_block_loads() -> None:
    wf = load(
        """\
schedules:
  - {id: quarter, cron: "*/15  * * * *", timezone: Europe/Berlin, inputs: {repo: x}}
  - {every: 10m, overlap: queue, catchup: all}
triggers:
  - {files: "inbox/*.csv", debounce: 2s}
concurrency: {key: "repo-${inputs.repo}", limit: 2, policy: skip}
secrets: [API_TOKEN]
"""
    )
    assert wf.schedules[0].cron == "*/15 * * * *"  # whitespace normalised
    assert wf.schedules[0].spec_text == "cron */15 * * * * (Europe/Berlin)"
    assert wf.schedules[1].every == 600.0 and wf.schedules[1].spec_text == "every 10m"
    assert [s.name(i) for i, s in enumerate(wf.schedules)] == ["quarter", "2"]
    assert wf.triggers[0].debounce == 2.0 and wf.triggers[0].input == "path"
    assert wf.concurrency is not None
    assert wf.concurrency.render({"repo": "voltui"}) == "repo-voltui"
    assert wf.secrets == ["API_TOKEN"]


@pytest.mark.parametrize(
    ("extra", "line", "phrase"),
    [
        ('schedules:\n  - cron: "61 * * * *"\n', 9, "is not a cron expression (Bad minute)"),
        ('schedules:\n  - cron: "* * *"\n', 9, "write five fields"),
        (
            'schedules:\n  - {cron: "0 3 * * *", timezone: Europe/Berln}\n',
            9,
            "did you mean 'Europe/Berlin'?",
        ),
        ('schedules:\n  - {cron: "0 3 * * *", every: 1h}\n', 9, "exactly one of cron"),
        ("schedules:\n  - {timezone: UTC}\n", 9, "exactly one of cron"),
        ("schedules:\n  - {every: 100ms}\n", 9, "at most once a second"),
        ("schedules:\n  - {every: 1h, overlap: wait}\n", 9, "use one of skip, queue"),
        ("schedules:\n  - {id: '2', every: 1h}\n  - {every: 2h}\n", 10, "id '2' is used twice"),
        ('triggers:\n  - {files: "in/*", input: file}\n', 9, "declares no such input"),
        ("concurrency: {key: 'x-${inputs.rep}'}\n", 8, "declares no input `rep`"),
        ("concurrency: {key: 'x-${env.HOME}'}\n", 8, "write ${inputs.NAME}"),
        ("secrets: [api-token]\n", 8, "does not have the expected form"),
    ],
)
def test_mistakes_are_reported_at_their_line(extra: str, line: int, phrase: str) -> None:
    message = problem(extra)
    assert f"line {line}" in message, message
    assert phrase in message, message
    assert "Traceback" not in message


def test_voltui_validate_reports_a_bad_cron_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(HEAD + 'schedules:\n  - {cron: "*/15 * * *"}\n')
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().out
    assert "line 9" in err and "schedules[0].cron" in err and "five fields" in err


def test_json_schema_describes_the_new_fields() -> None:
    props = workflow_json_schema()["properties"]
    for name in ("schedules", "triggers", "concurrency", "secrets"):
        assert name in props
