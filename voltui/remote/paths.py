"""Where the engine server's socket and token live by default, and reading/creating the token.

The socket goes under `$XDG_RUNTIME_DIR` (per-user, mode 0700, cleared at logout: exactly what a
socket wants). Without it we use the user's data folder rather than platformdirs' runtime
fallback, which is a shared `/tmp/runtime-<uid>` path another local user could create first.
The token is a long-lived secret a TCP client must present, so it lives in the data folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

import platformdirs

from voltui.engine.errors import UserError

log = logging.getLogger(__name__)

APP = "voltui"
SOCKET_NAME = "voltui.sock"
TOKEN_NAME = "server.token"
DEFAULT_TCP_HOST = "127.0.0.1"
# sun_path is 108 bytes on Linux (104 on macOS/BSD), including the terminating NUL.
MAX_SOCKET_PATH = 103


def _data_dir() -> Path:
    return platformdirs.user_data_path(APP, appauthor=False)


def default_socket_path() -> Path:
    """`$XDG_RUNTIME_DIR/voltui/voltui.sock`, else `<user data dir>/voltui.sock`."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / APP / SOCKET_NAME
    return _data_dir() / SOCKET_NAME


def default_token_path() -> Path:
    """`<user data dir>/server.token`: outlives a logout, unlike the runtime folder."""
    return _data_dir() / TOKEN_NAME


def parse_tcp(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` or `PORT` -> (host, port); the host defaults to loopback.

    IPv6 hosts go in brackets (`[::1]:8765`), as in URLs.
    """
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") or DEFAULT_TCP_HOST
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise UserError(
            f"--tcp {value!r}: expected HOST:PORT with a port from 0 to 65535, "
            "e.g. 127.0.0.1:8765 or :8765 for loopback"
        )
    return host, port


def _check_private(path: Path) -> None:
    """Warn (not fail) about a token others can read: it is the user's file to fix."""
    with contextlib.suppress(OSError):
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "token file %s is readable by other users (mode %o); run: chmod 600 %s",
                path,
                stat.S_IMODE(mode),
                path,
            )


def read_token(path: Path) -> str:
    """The token in `path`, for clients; a clear UserError if it is missing or empty."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise UserError(
            f"token file {path} not found; the server writes it when started with --tcp "
            "(`voltui serve --tcp HOST:PORT`); copy it here or pass --token-file"
        ) from None
    except OSError as exc:
        raise UserError(f"token file {path} cannot be read: {exc.strerror or exc}") from None
    if not token:
        raise UserError(f"token file {path} is empty; delete it and restart the server")
    _check_private(path)
    return token


def load_or_create_token(path: Path) -> str:
    """The token in `path`, or a new `secrets.token_urlsafe(32)` written there with mode 0600.

    Created with O_EXCL so two servers starting at once agree on one token.
    """
    if path.exists():
        return read_token(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_token(path)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)  # O_CREAT's mode is reduced by the umask, never widened; be explicit
    return token
