"""Serve the engine headless and attach dashboards to it over a socket (`voltui serve/attach`).

`EngineServer` wraps an `Orchestrator`; `RemoteEngine` implements the same `EngineAPI`, so the
TUI and CLI work unchanged in attached mode. The wire format is in `voltui.remote.protocol`.

Names are loaded on first use, so `python -m voltui.remote.server` runs its module once and
`voltui.remote.paths` stays cheap to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voltui.remote.client import RemoteEngine
    from voltui.remote.paths import (
        UntrustedSocketError,
        default_socket_path,
        default_token_path,
        load_or_create_token,
    )
    from voltui.remote.protocol import (
        AuthError,
        ConnectionLostError,
        ProtocolMismatchError,
        ReadOnlyError,
        RemoteError,
    )
    from voltui.remote.server import EngineServer

_WHERE = {
    "RemoteEngine": "client",
    "EngineServer": "server",
    "default_socket_path": "paths",
    "default_token_path": "paths",
    "load_or_create_token": "paths",
    "UntrustedSocketError": "paths",
    "AuthError": "protocol",
    "ConnectionLostError": "protocol",
    "ProtocolMismatchError": "protocol",
    "ReadOnlyError": "protocol",
    "RemoteError": "protocol",
}

__all__ = [
    "AuthError",
    "ConnectionLostError",
    "EngineServer",
    "ProtocolMismatchError",
    "ReadOnlyError",
    "RemoteEngine",
    "RemoteError",
    "UntrustedSocketError",
    "default_socket_path",
    "default_token_path",
    "load_or_create_token",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
