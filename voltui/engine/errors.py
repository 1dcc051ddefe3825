"""Errors the engine raises on purpose.

`UserError` and its children are mistakes the person can fix (a bad file, an unknown run id):
front ends print their one-paragraph message and exit 2, never a traceback.
"""

from __future__ import annotations


class VoltuiError(Exception):
    """Base of every error voltui raises deliberately."""


class UserError(VoltuiError):
    """A mistake in what the user asked for; the message says what and how to fix it."""

    exit_code = 2


class WorkflowFileError(UserError):
    """A workflow file that cannot be used; names the file, the place and the fix."""

    def __init__(self, path: str, problems: list[str], *, more: int = 0) -> None:
        """`problems` are the ones shown; `more` counts those left out to keep it readable."""
        self.path = path
        self.problems = problems
        self.more = more
        super().__init__(self._render())

    @property
    def total(self) -> int:
        """Every problem found, shown or not."""
        return len(self.problems) + self.more

    def _render(self) -> str:
        if self.total == 1:
            return f"{self.path}: {self.problems[0]}"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        if self.more:
            lines += f"\n  - ... and {self.more:,} more (fix these first, then check again)"
        return f"{self.path}: {self.total:,} problems\n{lines}"


class NotFoundError(UserError):
    """An id (run, workflow, step, agent) that the engine does not know."""


class InvalidInputError(UserError):
    """Workflow inputs that do not fit the workflow's declared inputs."""


class StepError(VoltuiError):
    """A step attempt failed; `retryable` False stops retries regardless of policy."""

    def __init__(
        self, message: str, *, exit_code: int | None = None, retryable: bool = True
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.retryable = retryable


class NoCapableAgentError(StepError):
    """No registered agent can ever run this step (kind, capabilities or agent id)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)
