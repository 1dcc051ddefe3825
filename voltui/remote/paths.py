"""Where the engine server's socket and token live, and why they can be trusted.

The socket goes under `$XDG_RUNTIME_DIR` (per-user, mode 0700, cleared at logout: exactly what a
socket wants). Without it we use the user's data folder rather than platformdirs' runtime
fallback, which is a shared `/tmp/runtime-<uid>` path another local user could create first.
The token is a long-lived secret a TCP client must present, so it lives in the data folder.

Who may stand behind a socket path (issue 13: socket hijack by another local user):

- The server only listens in a folder that no other user can change: the folder is ours, not
  writable by group or others, and every folder above it is ours or root's and not writable by
  others unless sticky (like `/tmp`, where others cannot rename our entries). A missing folder
  is created with mode 0700. A socket named in a shared sticky folder (`/tmp/voltui.sock`)
  goes into a private subfolder of it (`/tmp/voltui-<uid>/voltui.sock`, 0700, ours), and
  clients map the name the same way (`socket_location`). Anything else is refused with a
  message saying what to use instead.
- The client refuses a socket file that belongs to another user, and, after connecting, a server
  process running as another user (`SO_PEERCRED`, Linux). Root is trusted either way: root can
  read any user's files already. So a squatter that binds the path first, or swaps the socket,
  gets a clear refusal instead of the user's requests (inputs, secrets).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import secrets
import socket
import stat
import struct
from pathlib import Path

import platformdirs

from voltui.engine.errors import UserError
from voltui.engine.private import ensure_private_dir

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


# --------------------------------------------------------------------------- socket trust


class UntrustedSocketError(UserError):
    """The socket, its folder or the process behind it belongs to another local user."""


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _trusted(uid: int) -> bool:
    return uid in (os.geteuid(), 0)


PRIVATE_SOCKET_HINT = (
    "Use a folder only you can write: the default socket ($XDG_RUNTIME_DIR/voltui/voltui.sock), "
    "or e.g. --socket ~/.voltui/voltui.sock (voltui creates a missing folder with mode 0700)"
)


def socket_location(socket_path: Path) -> Path:
    """Where a socket named `socket_path` really lives: in a shared sticky folder (`/tmp`), a
    private subfolder `voltui-<uid>` of it, so `--socket /tmp/voltui.sock` works and is safe.

    Server and client both map the path the same way, so they agree without being told; any
    other folder is used as given (and checked by `prepare_socket_dir`).
    """
    path = Path(os.path.abspath(socket_path))
    folder = path.parent
    try:
        st = os.stat(folder)
    except OSError:
        return path
    shared = st.st_mode & stat.S_IWOTH and st.st_mode & stat.S_ISVTX
    if shared and folder.name != f"{APP}-{os.geteuid()}":
        return folder / f"{APP}-{os.geteuid()}" / path.name
    return path


def prepare_socket_dir(socket_path: Path) -> None:
    """Make sure the socket's folder is one no other user can change (see the module
    docstring); create it 0700 if missing. UntrustedSocketError says why not and what to do."""
    folder = Path(os.path.abspath(socket_path)).parent
    if not folder.exists():
        ensure_private_dir(folder, tighten=False)
    st = os.stat(folder)
    problem: str | None = None
    if not stat.S_ISDIR(st.st_mode):
        problem = f"{folder} is not a folder"
    elif st.st_uid != os.geteuid():
        problem = f"its folder {folder} belongs to {_user(st.st_uid)}, not to you"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = (
            f"its folder {folder} is writable by other users (mode {stat.S_IMODE(st.st_mode):o})"
        )
    else:
        problem = _unsafe_ancestor(folder)
    if problem is not None:
        raise UntrustedSocketError(
            f"refusing to serve on {socket_path}: {problem}, so another local user could "
            f"replace the socket and receive your requests (inputs, tokens). {PRIVATE_SOCKET_HINT}."
        )


def _unsafe_ancestor(folder: Path) -> str | None:
    """A folder above `folder` that another user could use to swap it, or None."""
    for parent in Path(os.path.realpath(folder)).parents:
        try:
            st = os.stat(parent)
        except OSError:
            continue
        if not _trusted(st.st_uid):
            return f"the folder above it, {parent}, belongs to {_user(st.st_uid)}"
        others_write = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if others_write and not st.st_mode & stat.S_ISVTX:
            mode = stat.S_IMODE(st.st_mode)
            return f"the folder above it, {parent}, is writable by other users (mode {mode:o})"
    return None


def check_socket_owner(socket_path: Path) -> None:
    """Client side, before connecting: the socket file (and a link to it) must be ours or
    root's. A missing file is left for the connect to report."""
    path = Path(socket_path)
    try:
        lst = os.lstat(path)
        st = os.stat(path) if stat.S_ISLNK(lst.st_mode) else lst
    except FileNotFoundError:
        return
    except OSError:
        return  # the connect reports it (permission denied, too many links...)
    for found in (lst, st):
        if not _trusted(found.st_uid):
            raise UntrustedSocketError(
                f"refusing to attach to {path}: the socket belongs to {_user(found.st_uid)}, not "
                "to you, so it is not your voltui server and it could be another user's "
                "program waiting for your requests. Check who started it (`ls -l "
                f"{path}`), remove it if it is stale, and use a socket in a folder only you "
                "can write (the default is $XDG_RUNTIME_DIR/voltui/voltui.sock)"
            )
    if not stat.S_ISSOCK(st.st_mode):
        raise UntrustedSocketError(f"refusing to attach to {path}: it is not a socket")


_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_uid(sock: socket.socket) -> tuple[int, int] | None:
    """(pid, uid) of the process at the other end of a Unix socket, where the OS says."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None or sock.family != socket.AF_UNIX:
        return None  # not Linux: the socket owner check still applies
    pid, uid, _gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, option, _PEERCRED.size))
    return pid, uid


def check_peer(sock: socket.socket | None, socket_path: Path) -> None:
    """Client side, once connected: the server process must run as us or as root."""
    if sock is None:
        return
    creds = peer_uid(sock)
    if creds is None:
        return
    pid, uid = creds
    if not _trusted(uid):
        raise UntrustedSocketError(
            f"refusing to attach to {socket_path}: the process answering on it (pid {pid}) runs "
            f"as {_user(uid)}, not as you, so it is not your voltui server. Nothing was sent "
            "to it. Find out who runs it, stop yours from sharing that path, and use a socket "
            "in a folder only you can write (the default is $XDG_RUNTIME_DIR/voltui/voltui.sock)"
        )
