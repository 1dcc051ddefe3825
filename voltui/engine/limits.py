"""Bounds on workflow files, so a hostile or broken file costs a bounded amount to reject.

Workflow files arrive from git checkouts and shared folders; a file may be `/dev/zero`, a 100 MB
name, 50,000 copies of one step or YAML nested a thousand levels deep. Every bound here is
checked before the expensive work it protects, and each failure names the limit and the setting
that raises it (`[limits]` in voltui.toml, or `VOLTUI_LIMITS__MAX_STEPS=...`). The defaults are
generous: ten times the largest real workflow seen, not a tight fit.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class WorkflowLimits(BaseModel):
    """The `[limits]` section of the config: how big a workflow file may be."""

    model_config = ConfigDict(extra="forbid")

    max_file_bytes: int = Field(
        10_000_000, ge=1024, description="largest workflow file read, in bytes"
    )
    max_steps: int = Field(100_000, ge=1, description="most steps in one workflow")
    max_string_length: int = Field(
        65_536, ge=64, description="longest text value or key in a workflow file, in characters"
    )
    max_depth: int = Field(
        64,
        ge=8,
        le=200,  # the reader recurses once per level; 200 stays far from Python's stack limit
        description="deepest nesting of lists and mappings in a workflow file",
    )

    @property
    def max_values(self) -> int:
        """How many values a file may hold once YAML aliases are expanded.

        A plain file cannot hold more than about one value per two bytes, so a file within
        `max_file_bytes` that expands past this only gets there through aliases (a "billion
        laughs" bomb); its expansion would otherwise happen later, when the run is stored.
        """
        return max(self.max_file_bytes // 2, 1000)


DEFAULT_LIMITS = WorkflowLimits()
"""The limits used when a caller passes none."""
