"""Measure one file the way `wc` and `sha256sum` would; shared by shard and merge."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def measure(path: Path) -> dict[str, Any]:
    """Lines, words, bytes and sha256 of one file, read as bytes so any file works."""
    data = path.read_bytes()
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return {
        "lines": lines,
        "words": len(data.split()),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def tree_digest(files: list[dict[str, Any]]) -> str:
    """One hash for a set of files, independent of the order they were measured in."""
    digest = hashlib.sha256()
    for item in sorted(files, key=lambda f: f["path"]):
        digest.update(f"{item['sha256']}  {item['path']}\n".encode())
    return digest.hexdigest()
