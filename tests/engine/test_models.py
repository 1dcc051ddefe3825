"""Durations, retry arithmetic and DAG helpers."""

from __future__ import annotations

import random

import pytest

from voltui.engine.durations import format_duration, parse_duration
from voltui.engine.models import RetryPolicy, Workflow, dag_levels, validate_dag
from voltui.engine.retry import backoff_delay, should_retry


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("5s", 5), ("10m", 600), ("1h", 3600), ("1h30m", 5400), (3, 3), ("2", 2)],
)
def test_durations_parse(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "5 parsecs", -1, True, "", None])
def test_bad_durations_say_what_is_accepted(bad: object) -> None:
    with pytest.raises(ValueError, match="250ms"):
        parse_duration(bad)


def test_format_duration() -> None:
    assert [format_duration(x) for x in (0.0125, 12.34, 245, 7380, None)] == [
        "12ms",
        "12.3s",
        "4m05s",
        "2h03m",
        "-",
    ]


@pytest.mark.parametrize(
    ("backoff", "delays"),
    [("fixed", [1, 1, 1, 1]), ("linear", [1, 2, 3, 4]), ("exponential", [1, 2, 4, 5])],
)
def test_backoff_shapes_are_capped_by_max_delay(backoff: str, delays: list[float]) -> None:
    policy = RetryPolicy(backoff=backoff, base_delay=1, max_delay=5, jitter=0, max_attempts=9)
    assert [backoff_delay(policy, n) for n in (1, 2, 3, 4)] == delays


def test_jitter_only_adds_and_never_passes_max_delay() -> None:
    policy = RetryPolicy(base_delay=1, max_delay=3, jitter=0.5, max_attempts=9)
    rng = random.Random(1)
    for attempt in range(1, 8):
        delay = backoff_delay(policy, attempt, rng)
        assert min(2 ** (attempt - 1), 3) <= delay <= 3


def test_should_retry_counts_attempts_and_matches_patterns() -> None:
    policy = RetryPolicy(max_attempts=3, retryable_errors=["timeout", r"code 5\d\d"])
    assert should_retry(policy, 1, "read timeout")
    assert should_retry(policy, 2, "server said code 503")
    assert not should_retry(policy, 3, "read timeout")  # attempts used up
    assert not should_retry(policy, 1, "permission denied")
    assert not should_retry(policy, 1, "read timeout", retryable=False)
    assert should_retry(RetryPolicy(max_attempts=2), 1, "anything")


def _wf(steps: list[tuple[str, list[str]]]) -> Workflow:
    return Workflow.model_validate(
        {
            "id": "w",
            "steps": [{"id": s, "depends_on": d, "run": {"simulated": {}}} for s, d in steps],
        }
    )


def test_dag_levels_diamond_and_long_chain() -> None:
    assert dag_levels(_wf([("a", []), ("b", ["a"]), ("c", ["a"]), ("d", ["b", "c"])])) == [
        ["a"],
        ["b", "c"],
        ["d"],
    ]
    chain = [(f"s{i}", [f"s{i + 1}"] if i < 1499 else []) for i in range(1500)]
    levels = dag_levels(_wf(chain))
    assert len(levels) == 1500 and levels[0] == ["s1499"]


def test_validate_dag_names_the_cycle_path() -> None:
    problems = validate_dag(_wf([("a", ["c"]), ("b", ["a"]), ("c", ["b"])]))
    assert len(problems) == 1
    message = problems[0].message
    assert message.startswith("dependency cycle: ")
    path = message.removeprefix("dependency cycle: ").split(" -> ")
    assert path[0] == path[-1] and sorted(set(path)) == ["a", "b", "c"]
