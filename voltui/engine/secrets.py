"""Secret masking: values of the environment variables a workflow declares in `secrets:`.

A step receives its secrets as ordinary environment variables (it inherits the engine's
environment), but whatever it prints, returns or fails with passes through a `Masker` before the
engine stores or shows it: each secret value becomes `***`.

The WorkflowManager masks where step text enters the engine: each output line in its output
sink (so the store's log, the spill file and `step:output` events get the masked line), each
attempt's error, and each step's output before it is kept, cached or reported. As a net for
anything else, every event it emits passes through `MaskingEmitter`. One consequence, on
purpose: a step that returns a secret passes `***` downstream; secrets travel through the
environment, never through outputs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

from voltui.engine.models import Event, Priority, Workflow

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "Masker",
    "MaskingEmitter",
    "missing_secrets",
    "secret_values",
]

MASK = "***"
MIN_SECRET_LENGTH = 4
"""Shorter values are not masked: masking every `a` or `1` would wreck every log, and a value
that short is no secret anyway. `missing_secrets` reports them so the user hears about it."""


def secret_values(names: Iterable[str], environ: dict[str, str] | None = None) -> list[str]:
    """The values of the named variables that are set and long enough to mask."""
    env = os.environ if environ is None else environ
    return [v for v in (env.get(n) for n in names) if v and len(v) >= MIN_SECRET_LENGTH]


def missing_secrets(workflow: Workflow, environ: dict[str, str] | None = None) -> list[str]:
    """Declared secrets that are unset or too short to mask, for a clear error at start."""
    env = os.environ if environ is None else environ
    return [n for n in workflow.secrets if len(env.get(n) or "") < MIN_SECRET_LENGTH]


class Masker:
    """Replaces known secret values with `***` in text and in nested JSON-like values.

    Values only accumulate: a value masked once stays masked for the engine's lifetime, which
    costs nothing when it does not occur and is what one wants when it does.
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(values)

    @property
    def active(self) -> bool:
        """Whether there is anything to mask (the fast path skips all work otherwise)."""
        return self._pattern is not None

    def add(self, values: Iterable[str]) -> None:
        new = {v for v in values if v and len(v) >= MIN_SECRET_LENGTH} - self._values
        if not new:
            return
        self._values |= new
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted(self._values, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def add_names(self, names: Iterable[str]) -> None:
        """Mask the current values of these environment variables."""
        self.add(secret_values(names))

    def mask(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def mask_value(self, value: Any) -> Any:
        """`value` with every string inside (keys too) masked; other types are kept."""
        if self._pattern is None:
            return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {self._walk(k): self._walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self._walk(v) for v in value)
        return value


class MaskingEmitter:
    """The dispatcher as the WorkflowManager sees it: `emit` masks event data first.

    Everything else is the dispatcher's own (attribute access falls through).
    """

    def __init__(self, inner: Any, masker: Masker) -> None:
        self._inner = inner
        self._masker = masker

    def emit(
        self,
        type: str,
        source: str,
        data: dict[str, Any] | None = None,
        *,
        priority: Priority = Priority.NORMAL,
        correlation_id: str | None = None,
        **extra: Any,
    ) -> Event:
        if data and self._masker.active:
            data = self._masker.mask_value(data)
        event: Event = self._inner.emit(
            type, source, data, priority=priority, correlation_id=correlation_id, **extra
        )
        return event

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
