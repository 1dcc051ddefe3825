"""Tests of step execution on Dask; the whole folder is skipped without the voltui[dask] extra."""

from __future__ import annotations

import pytest

pytest.importorskip("distributed", reason="the voltui[dask] extra (distributed) is not installed")
