"""EngineServer: the embedded Orchestrator served headless over a Unix socket (and optional TCP).

Dashboards come and go; the engine stays. Nothing a client does (disconnecting mid-request,
never reading, sending garbage) can stop a run, block the event loop or disturb other clients:

- Every connection has one reader loop and one writer task joined by a bounded queue. Engine
  events reach that queue through a per-subscription pump. The engine never waits for a pump
  (the dispatcher buffers for it, up to its own bound); a pump waits for its client's queue only
  while the client makes progress. A stalled client fills its own queue and nothing else, and its
  subscription ends with `resync` (recorded as a `remote:client_lagged` event).
- Requests run as their own tasks (a `wait_run` may last hours). Mutating ones (start, cancel,
  replay) are left to finish if the client vanishes, so a dropped SSH session cannot leave a
  start half done; read-only ones are cancelled with the connection.
- The socket is guarded by an `flock`ed `<socket>.lock` file holding the owner's pid: a second
  server is refused by name, and a socket left by a crashed server is recognised as stale and
  replaced, without racing another server starting at the same moment.
- Socket and lock live only in a folder no other local user can change (created 0700 when
  missing; see `voltui.remote.paths.prepare_socket_dir`), the socket is born 0600, and the lock
  is opened with O_NOFOLLOW: a symlink planted at `<socket>.lock` is refused, never followed to
  truncate its target.

The wire format is documented in `voltui.remote.protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import secrets
import signal
import socket
import stat
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from voltui.engine.api import SubscriptionLagged
from voltui.engine.errors import UserError
from voltui.engine.models import Event, Priority, RunState
from voltui.engine.orchestrator import Orchestrator
from voltui.engine.private import PRIVATE_FILE, private_umask
from voltui.remote import protocol as proto
from voltui.remote.pages import events_page, step_log_page
from voltui.remote.paths import (
    MAX_SOCKET_PATH,
    default_socket_path,
    default_token_path,
    prepare_socket_dir,
    socket_location,
)
from voltui.remote.paths import load_or_create_token as load_or_create_token

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; the connect probe still works
    fcntl = None  # type: ignore[assignment]

__all__ = ["EngineServer", "load_or_create_token"]

log = logging.getLogger(__name__)

SOURCE = "remote"
MAX_INFLIGHT = 256  # concurrent requests per client before its input is no longer read
WRITE_CHUNK = 256 * 1024  # bytes gathered into one write before awaiting drain
CLOSE_TIMEOUT = 2.0
PROBE_TIMEOUT = 2.0
AUTH_FAIL_WINDOW = 10.0  # seconds: at most one `remote:auth_failed` event per window

RequestId = int | str


class _Client:
    """One connection. See the module docstring for why reading and writing are split."""

    def __init__(
        self,
        server: EngineServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        cid: int,
        peer: str,
        needs_token: bool,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.cid = cid
        self.peer = peer
        self.needs_token = needs_token
        self.read_only = False
        self.forced_read_only = False  # gave the read-only token (TCP)
        self.ready = False  # said hello (and, on TCP, gave the token)
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        # Outgoing queue: (sub id, events) batches are encoded late, by the writer, so a batch
        # dropped on overflow costs nothing; other frames are bytes already.
        self.queue: deque[tuple[RequestId | None, list[Event] | bytes]] = deque()
        self.queued_events = 0
        self.queued_frames = 0
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.progress = asyncio.Event()
        self.writer_task: asyncio.Task[None] | None = None
        self.requests: dict[RequestId, asyncio.Task[None]] = {}
        self.subs: dict[RequestId, asyncio.Task[None]] = {}
        self.sent_seq: dict[RequestId, int] = {}

    # ------------------------------------------------------------------ output

    def push(self, frame: bytes) -> None:
        """Queue a reply or control frame; these are bounded by the input back-pressure."""
        if self.writer_task is not None and self.writer_task.done():
            return  # the connection is gone (a mutating request finishing late)
        self.queue.append((None, frame))
        self.queued_frames += 1
        self.wake.set()

    def fits(self, n: int) -> bool:
        """A batch fits within the budget, or alone in an empty queue (a big backfill batch)."""
        return self.queued_events == 0 or self.queued_events + n <= self.server.client_queue

    async def room_for(self, n: int) -> bool:
        """Wait while the writer makes progress; False once it has made none for `stall`
        seconds. The engine is not waiting on this: the dispatcher buffers for the pump and
        cuts it off with `SubscriptionLagged` at its own bound."""
        stall = self.server.stall_timeout
        while not self.fits(n):
            if self.closed:
                return True
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), stall)
            except TimeoutError:
                return False
        return True

    def push_events(self, sub: RequestId, events: list[Event]) -> None:
        if self.closed:
            return
        self.queue.append((sub, events))
        self.queued_events += len(events)
        self.wake.set()

    def drop_events(self, sub: RequestId) -> None:
        """Forget a lagging subscription's queued batches: it resyncs from a snapshot anyway."""
        kept: deque[tuple[RequestId | None, list[Event] | bytes]] = deque()
        for item in self.queue:
            if item[0] == sub and isinstance(item[1], list):
                self.queued_events -= len(item[1])
            else:
                kept.append(item)
        self.queue = kept

    def send_error(self, request_id: RequestId | None, kind: str, message: str) -> None:
        self.push(proto.encode_error(request_id, {"kind": kind, "message": message}))

    async def _write_loop(self) -> None:
        writer = self.writer
        try:
            while True:
                if not self.queue:
                    if self.closed:
                        return
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                chunks: list[bytes] = []
                size = 0
                while self.queue and size < WRITE_CHUNK:
                    sub, payload = self.queue.popleft()
                    if isinstance(payload, list):
                        self.queued_events -= len(payload)
                        assert sub is not None
                        data = proto.encode_events(sub, payload)
                        self.sent_seq[sub] = payload[-1].seq
                    else:
                        self.queued_frames -= 1
                        data = payload
                    chunks.append(data)
                    size += len(data)
                self.room.set()
                self.progress.set()
                writer.write(b"".join(chunks))
                await writer.drain()
        except (ConnectionError, OSError, RuntimeError) as exc:
            log.debug("client %s: write failed: %s", self.peer, exc)
            self.closed = True
            writer.transport.abort()  # wakes the reader loop, which cleans up

    # ------------------------------------------------------------------ input

    async def _next_line(self) -> bytes | None:
        """The next frame, or None at end of input. Oversized lines are answered and skipped."""
        discarding = False
        reader = self.reader
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip() and not discarding:
                    self.send_error(
                        None,
                        "bad_frame",
                        f"truncated frame: input ended after {len(exc.partial)} bytes without "
                        "the newline that ends every frame",
                    )
                return None
            except asyncio.LimitOverrunError as exc:
                if not discarding:
                    self.send_error(
                        None,
                        "frame_too_large",
                        f"frame longer than {self.server.max_frame} bytes; discarded up to the "
                        "next newline",
                    )
                discarding = True
                try:
                    await reader.readexactly(exc.consumed)
                except asyncio.IncompleteReadError:
                    return None
                continue
            if discarding:
                discarding = False  # the tail of the oversized frame
                continue
            if line.strip():
                return line

    async def run(self) -> None:
        self.task = asyncio.current_task()
        self.writer_task = asyncio.create_task(self._write_loop(), name=f"remote-writer-{self.cid}")
        try:
            self.push(proto.encode(proto.server_hello(pid=os.getpid(), auth=self.needs_token)))
            try:
                line = await asyncio.wait_for(self._next_line(), proto.HELLO_TIMEOUT)
            except TimeoutError:
                self._refuse("bad_frame", f"no hello within {proto.HELLO_TIMEOUT:g} s", "timeout")
                return
            if line is None or not self._handshake(line):
                return
            while True:
                line = await self._next_line()
                if line is None:
                    return
                await self._handle(line)
        except (ConnectionError, OSError) as exc:
            log.debug("client %s: connection error: %s", self.peer, exc)
        finally:
            await self._close()

    def _refuse(self, kind: str, message: str, reason: str) -> None:
        self.send_error(None, kind, message)
        if self.needs_token and kind in ("auth", "bad_frame"):
            self.server._auth_failed(self.peer, reason)

    def _handshake(self, line: bytes) -> bool:
        try:
            hello = proto.decode(line)
        except ValueError as exc:
            self._refuse("bad_frame", f"expected a hello frame first: {exc}", "no hello")
            return False
        if hello.get("type") != "hello":
            self._refuse("bad_frame", "expected a hello frame first", "no hello")
            return False
        if self.needs_token:
            token = hello.get("token")
            if not isinstance(token, str) or not token:
                self._refuse(
                    "auth",
                    "this server requires a token: pass --token-file with the server's token",
                    "missing token",
                )
                return False
            given = token.encode()
            # Both compared every time: how long the check takes says nothing about which.
            full = secrets.compare_digest(given, (self.server.token or "").encode())
            viewer = secrets.compare_digest(given, (self.server.read_only_token or "").encode())
            viewer = viewer and self.server.read_only_token is not None
            if not (full or viewer):
                self._refuse(
                    "auth",
                    "wrong token: use the token file the server was started with (--token-file)",
                    "wrong token",
                )
                return False
            self.forced_read_only = viewer and not full
        if hello.get("protocol") != proto.PROTOCOL_VERSION:
            message = proto.mismatch_message(
                hello.get("protocol"), hello.get("version", "unknown"), we_are="server"
            )
            self.send_error(None, "protocol", message)
            return False
        # A client may ask to be read-only; one that gave the read-only token is, whatever it asks.
        self.read_only = self.forced_read_only or hello.get("read_only", False) is True
        self.ready = True
        self.push(
            proto.encode(
                {
                    "type": "welcome",
                    "protocol": proto.PROTOCOL_VERSION,
                    "client_id": self.cid,
                    "read_only": self.read_only,
                    "seq": self.server.engine.dispatcher.released_seq,
                }
            )
        )
        self.server._client_joined(self)
        return True

    async def _handle(self, line: bytes) -> None:
        try:
            frame = proto.decode(line)
        except ValueError as exc:
            self.send_error(None, "bad_frame", str(exc))
            return
        rid = frame.get("id")
        name = frame.get("method")
        if name is None:
            kind = frame.get("type")
            echo = rid if proto.valid_id(rid) else None
            if kind == "hello":
                self.send_error(echo, "unknown_message", "hello was already received")
            else:
                self.send_error(echo, "unknown_message", f"unknown message type {kind!r}")
            return
        if not proto.valid_id(rid):
            self.send_error(None, "bad_frame", "a request needs an id (a number or short string)")
            return
        method = proto.METHODS.get(name) if isinstance(name, str) else None
        if method is None:
            known = ", ".join(sorted(proto.METHODS))
            self.send_error(rid, "unknown_method", f"unknown method {name!r}; known: {known}")
            return
        if method.mutating and self.read_only:
            self.send_error(
                rid,
                "read_only",
                f"{name} refused: this client attached read-only, so it cannot start, "
                "cancel, replay or approve runs; "
                + (
                    "it gave the server's read-only token: use the full token to act"
                    if self.forced_read_only
                    else "attach without --read-only to do that"
                ),
            )
            return
        raw = frame.get("params")
        try:
            params = method.params.model_validate({} if raw is None else raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}"
                for e in exc.errors()[:5]
            )
            self.send_error(rid, "invalid_params", f"{name}: {problems}")
            return
        if rid in self.requests or rid in self.subs:
            self.send_error(rid, "bad_frame", f"request id {rid!r} is already in use")
            return
        if name == "ping":
            self.push(proto.encode_result(rid, method, {"ts": time.time()}))
            return
        if name == "subscribe":
            self._subscribe(rid, params)  # type: ignore[arg-type]
            return
        if name == "unsubscribe":
            task = self.subs.pop(params.sub, None)  # type: ignore[attr-defined]
            if task is not None:
                task.cancel()
            self.push(proto.encode_result(rid, method, {"ok": task is not None}))
            return
        # Back-pressure on this client alone: stop reading until its replies go out.
        while len(self.requests) >= MAX_INFLIGHT or self.queued_frames >= self.server.client_queue:
            self.room.clear()
            await self.room.wait()
            if self.closed:
                return
        kwargs = {field: getattr(params, field) for field in type(params).model_fields}
        if name == "approve":  # where a decision came from is the server's to say, not the peer's
            request = kwargs["request"]
            where = f"{request.via or 'client'} over socket"
            kwargs["request"] = request.model_copy(update={"via": f"{where} ({self.peer})"})
        task = asyncio.create_task(self._call(rid, name, method, kwargs), name=f"remote-{name}")
        if method.mutating:
            self.server._keep(task)  # survives the connection: see the module docstring
        self.requests[rid] = task
        task.add_done_callback(lambda _t, rid=rid: self._request_done(rid))

    def _request_done(self, rid: RequestId) -> None:
        self.requests.pop(rid, None)
        self.room.set()

    async def _call(
        self, rid: RequestId, name: str, method: proto.Method, kwargs: dict[str, Any]
    ) -> None:
        try:
            if name == "events":
                value: Any = await events_page(
                    self.server.engine, max_items=self.server.max_events_page, **kwargs
                )
            elif name == "step_log":
                value = await step_log_page(
                    self.server.engine, max_items=self.server.max_log_page, **kwargs
                )
            else:
                value = await getattr(self.server.engine, name)(**kwargs)
            frame = proto.encode_result(rid, method, value)
        except UserError as exc:
            frame = proto.encode_error(rid, proto.error_payload(exc))
        except Exception as exc:
            log.exception("remote %s from %s failed", name, self.peer)
            frame = proto.encode_error(rid, proto.error_payload(exc))
        self.push(frame)

    # ------------------------------------------------------------------ subscriptions

    def _subscribe(self, rid: RequestId, params: proto.SubscribeParams) -> None:
        engine = self.server.engine
        last = engine.dispatcher.last_seq
        start = last if params.since_seq is None else params.since_seq
        self.push(
            proto.encode_result(
                rid, proto.METHODS["subscribe"], proto.Subscribed(sub=rid, seq=start)
            )
        )
        if start > last:
            # The client knows later events than this engine has numbered: a different state
            # file, or one restored from a backup. Resuming would silently skip events.
            self._resync(rid, start, f"this engine's last event is {last}, before {start}")
            return
        self.subs[rid] = asyncio.create_task(
            self._pump(rid, params.pattern, start), name=f"remote-sub-{self.cid}-{rid}"
        )

    def _resync(self, sub: RequestId, last_seq: int | None, reason: str) -> None:
        frame = {"type": "resync", "sub": sub, "last_seq": last_seq, "reason": reason}
        self.push(proto.encode(frame))

    async def _pump(self, sub: RequestId, pattern: str, start: int) -> None:
        stream = self.server.engine.subscribe(pattern, start)
        try:
            async for batch in stream:
                if not self.fits(len(batch)) and not await self.room_for(len(batch)):
                    self.drop_events(sub)
                    reason = (
                        f"client stalled with {self.queued_events + len(batch)} events queued "
                        f"(limit {self.server.client_queue}); take a fresh snapshot"
                    )
                    self._resync(sub, self.sent_seq.get(sub, start), reason)
                    self.server._lagged(self, sub, reason)
                    return
                self.push_events(sub, batch)
            self.push(proto.encode({"type": "end", "sub": sub}))
        except SubscriptionLagged as exc:
            reason = "the engine dropped this subscription: it fell too far behind"
            self.drop_events(sub)
            self._resync(sub, exc.last_seq, reason)
            self.server._lagged(self, sub, reason)
        except Exception as exc:
            log.exception("subscription %r of %s failed", sub, self.peer)
            self._resync(sub, self.sent_seq.get(sub, start), f"subscription failed: {exc}")
        finally:
            self.subs.pop(sub, None)
            self.sent_seq.pop(sub, None)
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    # ------------------------------------------------------------------ closing

    def shutdown(self, reason: str) -> None:
        """Server stopping: say goodbye, then end the connection through `run`'s cleanup."""
        if self.ready:
            self.push(proto.encode({"type": "bye", "reason": reason}))
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def _close(self) -> None:
        self.closed = True
        self.room.set()
        tasks = list(self.subs.values())
        tasks += [t for rid, t in self.requests.items() if not self._mutating(t)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.wake.set()
        if self.writer_task is not None:
            # Flush what is queued (errors, bye), but never wait long on a client that is gone.
            done, _ = await asyncio.wait({self.writer_task}, timeout=CLOSE_TIMEOUT)
            if not done:
                self.writer_task.cancel()
                self.writer.transport.abort()
                await asyncio.gather(self.writer_task, return_exceptions=True)
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), CLOSE_TIMEOUT)
        self.server._client_left(self)

    def _mutating(self, task: asyncio.Task[None]) -> bool:
        return task in self.server._background


class EngineServer:
    """Serves one `Orchestrator` to any number of attached dashboards. See the module docstring.

    `socket_path=None` means `default_socket_path()`. With `tcp`, a token is required from
    every TCP client: `token`, or else the one in `default_token_path()` (created if missing).
    A client that gives `read_only_token` instead (TCP only) is read-only, whatever its hello
    asks: it can watch and query, but not start, cancel, replay or act on runs in any way.
    On the Unix socket there is no token: whoever can connect (the owner, see
    `voltui.remote.paths`) can act on every run, and `read_only` is only what a client asks.
    `client_queue` bounds each client's queued events; a subscription whose next batch does not
    fit while its client makes no progress for `stall_timeout` seconds is told to resync.
    Refused TCP connections are recorded as at most one `remote:auth_failed` event per
    `auth_fail_window` seconds (see `_Refusals`). `events` and `step_log` answer in pages of
    at most `max_events_page` events / `max_log_page` lines (`voltui.remote.pages`).
    """

    def __init__(
        self,
        engine: Orchestrator,
        *,
        socket_path: Path | None,
        tcp: tuple[str, int] | None = None,
        token: str | None = None,
        read_only_token: str | None = None,
        max_frame: int = proto.DEFAULT_MAX_FRAME,
        client_queue: int = 10_000,
        stall_timeout: float = 2.0,
        auth_fail_window: float = AUTH_FAIL_WINDOW,
        max_events_page: int = proto.MAX_EVENTS,
        max_log_page: int = proto.MAX_LOG_LINES,
    ) -> None:
        if max_frame < 1024:
            raise ValueError("max_frame must be at least 1024 bytes")
        if client_queue < 1:
            raise ValueError("client_queue must be at least 1")
        if max_events_page < 1 or max_log_page < 1:
            raise ValueError("page sizes must be at least 1")
        self.engine = engine
        self.socket_path = socket_location(
            Path(socket_path) if socket_path is not None else default_socket_path()
        )
        self.tcp = tcp
        self.token = token
        self.read_only_token = read_only_token
        self.max_events_page = max_events_page
        self.max_log_page = max_log_page
        self.max_frame = max_frame
        self.client_queue = client_queue
        self.stall_timeout = stall_timeout
        self._servers: list[asyncio.Server] = []
        self._stopped_servers: list[asyncio.Server] = []
        self._clients: set[_Client] = set()
        self._connections: set[_Client] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._lock_fd: int | None = None
        self._lock_path = self.socket_path.with_name(self.socket_path.name + ".lock")
        self._socket_id: tuple[int, int, int] | None = None
        self._next_cid = 0
        self._started = False
        self._stop_requested: asyncio.Event | None = None
        self._escalate: asyncio.Event | None = None
        self._signals = 0
        self.tcp_address: tuple[str, int] | None = None
        """The bound TCP address (the real port when 0 was asked for)."""
        self._refusals = _Refusals(self._emit_refusals, auth_fail_window)

    @property
    def clients(self) -> int:
        """Attached clients (connections that completed the hello)."""
        return len(self._clients)

    # ------------------------------------------------------------------ start / stop

    async def start(self) -> None:
        if self._started:
            return
        if self.read_only_token is not None and self.tcp is None:
            raise UserError(
                "a read-only token needs --tcp: the Unix socket has no tokens (its owner alone "
                "can connect); give --tcp HOST:PORT too, or drop the read-only token"
            )
        path = self.socket_path
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise UserError(
                f"socket path {path} is {len(os.fsencode(path))} bytes long; Unix sockets allow "
                f"at most {MAX_SOCKET_PATH}. Choose a shorter --socket path"
            )
        prepare_socket_dir(path)
        self._acquire_lock()
        try:
            await self._clear_stale(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with private_umask():  # born 0600: no window where others could connect
                sock.bind(os.fspath(path))
            os.chmod(path, PRIVATE_FILE)
            self._socket_id = _file_id(path)
            unix = await asyncio.start_unix_server(self._on_unix, sock=sock, limit=self.max_frame)
            self._servers.append(unix)
            if self.tcp is not None:
                await self._start_tcp(*self.tcp)
        except BaseException:
            await self._close_listeners()
            self._remove_socket()
            self._release_lock()
            raise
        self._started = True
        self.engine.dispatcher.emit(
            "remote:listening",
            SOURCE,
            {
                "socket": str(path),
                "tcp": f"{self.tcp_address[0]}:{self.tcp_address[1]}" if self.tcp_address else None,
                "pid": os.getpid(),
            },
        )
        log.info("serving on %s", path)

    async def _start_tcp(self, host: str, port: int) -> None:
        if self.token is None:
            self.token = load_or_create_token(default_token_path())
        if self.read_only_token is not None and self.read_only_token in ("", self.token):
            raise UserError(
                "the read-only token must differ from the token: give --read-only-token-file "
                "another file than --token-file"
            )
        try:
            server = await asyncio.start_server(self._on_tcp, host, port, limit=self.max_frame)
        except OSError as exc:
            raise UserError(
                f"cannot listen on TCP {host}:{port}: {exc.strerror or exc}; choose another "
                "--tcp address or stop whatever holds that port"
            ) from None
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        self.tcp_address = (str(bound[0]), int(bound[1]))
        if not _is_loopback(host):
            log.warning(
                "listening on %s:%d beyond this machine: traffic (and the token) is not "
                "encrypted; prefer loopback plus an SSH tunnel",
                host,
                self.tcp_address[1],
            )

    async def stop(self) -> None:
        """Close every client (after a `bye`), stop listening, remove the socket file."""
        if not self._started:
            return
        self._started = False
        self._stop_listening()
        connections = list(self._connections)
        for client in connections:
            client.shutdown("server stopping")
        tasks = [c.task for c in connections if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT * 2)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._close_listeners()
        self._refusals.close()  # what the last window counted is recorded, not lost
        self._remove_socket()
        self._release_lock()
        log.info("stopped serving on %s", self.socket_path)

    def _stop_listening(self) -> None:
        """Refuse new connections at once; attached clients stay (see `serve_forever`)."""
        for server in self._servers:
            server.close()
        self._stopped_servers += self._servers
        self._servers = []

    async def _close_listeners(self) -> None:
        # Only once the clients are gone: from Python 3.12 `wait_closed` waits for them too.
        self._stop_listening()
        servers, self._stopped_servers = self._stopped_servers, []
        for server in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT)

    def request_stop(self) -> None:
        """Ask `serve_forever` to shut down as a first SIGTERM would (for embedding programs)."""
        self._on_signal(None)

    async def serve_forever(self, *, on_stop: Literal["cancel", "finish"] = "cancel") -> None:
        """Serve until SIGTERM/SIGINT (or `request_stop`), then shut down in order.

        New connections stop first; then active runs are cancelled (`cancel`) or awaited
        (`finish`, while attached dashboards keep watching them; a second signal cancels
        instead); then `stop()`. The caller stops the engine, which records everything.
        """
        if on_stop not in ("cancel", "finish"):
            raise ValueError("on_stop must be 'cancel' or 'finish'")
        await self.start()
        self._stop_requested = self._stop_requested or asyncio.Event()
        self._escalate = self._escalate or asyncio.Event()
        if self._signals:
            self._stop_requested.set()
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # not the main thread, or no signal support: request_stop still works
            installed.append(sig)
        try:
            await self._stop_requested.wait()
            self._stop_listening()
            if on_stop == "finish":
                await self._finish_runs()
            await self._cancel_runs()
        finally:
            for sig in installed:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
            await self.stop()

    def _on_signal(self, sig: signal.Signals | None) -> None:
        self._signals += 1
        name = sig.name if sig is not None else "stop request"
        if self._stop_requested is None:
            self._stop_requested = asyncio.Event()
            self._escalate = asyncio.Event()
        if self._signals == 1:
            log.info("%s: shutting down", name)
            self._stop_requested.set()
        else:
            log.info("%s again: cancelling active runs", name)
            assert self._escalate is not None
            self._escalate.set()

    async def _finish_runs(self) -> None:
        active = self.engine.workflows.active_runs()
        if not active:
            return
        self.engine.dispatcher.emit(
            "remote:draining",
            SOURCE,
            {"runs": [r.id for r in active]},
            priority=Priority.HIGH,
        )
        waiters = asyncio.gather(*(self._settled(r.id) for r in active), return_exceptions=True)
        assert self._escalate is not None
        escalate = asyncio.create_task(self._escalate.wait())
        try:
            await asyncio.wait({waiters, escalate}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            escalate.cancel()
            if not waiters.done():
                waiters.cancel()
            await asyncio.gather(waiters, escalate, return_exceptions=True)

    async def _settled(self, run_id: str) -> None:
        """Until the run ends, or has nothing left at work but a person's decision: waiting
        for that would hold the shutdown for as long as nobody answers."""
        while True:
            live = self.engine.workflows.live_run(run_id)
            if live is None or live.state.finished or live.state is RunState.WAITING:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.engine.wait_run(run_id), 0.5)

    async def _cancel_runs(self) -> None:
        for run in self.engine.workflows.active_runs():
            if run.state is RunState.WAITING:
                # Nothing at work, only an approval due: the engine's stop leaves it
                # interrupted and the next `voltui serve` continues it, waiting again.
                log.info("run %s waits for an approval: kept for the next start", run.id)
                continue
            try:
                await self.engine.cancel_run(run.id)
            except UserError as exc:  # finished meanwhile
                log.debug("cancel %s on shutdown: %s", run.id, exc)

    # ------------------------------------------------------------------ socket ownership

    def _acquire_lock(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        for _ in range(5):
            fd = self._open_lock()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_pid(fd)
                os.close(fd)
                raise UserError(self._busy_message(owner)) from None
            # The previous owner may have unlinked the file between our open and flock; a lock
            # on an unlinked file guards nothing, so start again on the current one.
            try:
                same = os.stat(self._lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._lock_fd = fd
                return
            os.close(fd)
        raise UserError(f"could not lock {self._lock_path}: it keeps being replaced; try again")

    def _open_lock(self) -> int:
        """The lock file, opened without following a link and checked to be a plain file of
        ours (a hard link to another file would otherwise be truncated)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self._lock_path, flags, PRIVATE_FILE)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UserError(
                    f"{self._lock_path} is a symbolic link; refusing to follow it (writing the "
                    "lock through it would overwrite whatever it points to). Remove it and "
                    "check who put it there"
                ) from None
            raise UserError(
                f"cannot open the lock file {self._lock_path}: {exc.strerror or exc}"
            ) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.geteuid():
            os.close(fd)
            raise UserError(
                f"{self._lock_path} is not a plain file of yours (a hard link or another "
                "user's file); refusing to write to it. Remove it and check who put it there"
            )
        os.fchmod(fd, PRIVATE_FILE)
        return fd

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self._lock_path)  # while still locked, see `_acquire_lock`
        os.close(fd)

    def _busy_message(self, owner: int | None, version: str | None = None) -> str:
        who = f"pid {owner}" if owner else "another process"
        if version:
            who += f", voltui {version}"
        kill = f"`kill -TERM {owner}`" if owner else "stop it"
        return (
            f"another voltui server ({who}) is already serving on {self.socket_path}. "
            f"Attach to it with `voltui attach --socket {self.socket_path}`, stop it first "
            f"({kill}), or give this one another --socket path"
        )

    async def _clear_stale(self, path: Path) -> None:
        """Remove a socket no one answers on; refuse if someone does, or if it is not a socket."""
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise UserError(
                f"{path} exists and is not a socket; move it away or choose another --socket"
            )
        hello = await _probe(path)
        if hello is not None:
            pid = hello.get("pid")
            raise UserError(
                self._busy_message(pid if isinstance(pid, int) else None, hello.get("version"))
            )
        log.info("removing stale socket %s (no server answers on it)", path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def _remove_socket(self) -> None:
        """Unlink our socket, and only ours: a successor may already have replaced it."""
        if self._socket_id is None:
            return
        with contextlib.suppress(OSError):
            if _file_id(self.socket_path) == self._socket_id:
                os.unlink(self.socket_path)
        self._socket_id = None

    # ------------------------------------------------------------------ connections

    async def _on_unix(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._serve(reader, writer, peer=f"unix:{self.socket_path}", needs_token=False)

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        addr = writer.get_extra_info("peername")
        peer = f"tcp:{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else f"tcp:{addr}"
        await self._serve(reader, writer, peer=peer, needs_token=True)

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        peer: str,
        needs_token: bool,
    ) -> None:
        self._next_cid += 1
        client = _Client(
            self, reader, writer, cid=self._next_cid, peer=peer, needs_token=needs_token
        )
        self._connections.add(client)
        try:
            await client.run()
        except asyncio.CancelledError:
            pass  # the server is stopping: `run` has already closed the connection
        finally:
            self._connections.discard(client)

    def _client_joined(self, client: _Client) -> None:
        self._clients.add(client)
        self.engine.dispatcher.emit(
            "remote:connected",
            SOURCE,
            {
                "peer": client.peer,
                "client": client.cid,
                "read_only": client.read_only,
                "clients": len(self._clients),
            },
            priority=Priority.LOW,
        )

    def _client_left(self, client: _Client) -> None:
        if client not in self._clients:
            return
        self._clients.discard(client)
        self.engine.dispatcher.emit(
            "remote:disconnected",
            SOURCE,
            {"peer": client.peer, "client": client.cid, "clients": len(self._clients)},
            priority=Priority.LOW,
        )

    def _lagged(self, client: _Client, sub: RequestId, reason: str) -> None:
        log.info("client %s subscription %r told to resync: %s", client.peer, sub, reason)
        self.engine.dispatcher.emit(
            "remote:client_lagged",
            SOURCE,
            {"peer": client.peer, "client": client.cid, "reason": reason},
        )

    def _auth_failed(self, peer: str, reason: str) -> None:
        self._refusals.add(peer, reason)

    def _emit_refusals(self, data: dict[str, Any]) -> None:
        self.engine.dispatcher.emit("remote:auth_failed", SOURCE, data, priority=Priority.HIGH)

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class _Refusals:
    """Refused TCP connections, recorded as at most one event (and one log line) per window.

    Each refusal used to be an event: 678 refused connections a second grew the database from
    0.6 to 7.6 MB in 20 s. The first refusal after a quiet window is recorded at once (an
    operator sees an attack start); later ones in the same window are counted and recorded
    together when it ends: how many, why, and per source host (the first `MAX_HOSTS` hosts;
    refusals from further ones are only counted, so memory stays bounded too). A window with
    nothing to report ends the series.
    """

    MAX_HOSTS = 20

    def __init__(self, emit: Callable[[dict[str, Any]], None], window: float) -> None:
        self.emit = emit
        self.window = window
        self.open = False  # a window is running: refusals are counted, not recorded one by one
        self.first_peer: str | None = None
        self.count = 0
        self.hosts: dict[str, int] = {}
        self.from_other_hosts = 0
        self.reasons: Counter[str] = Counter()
        self.timer: asyncio.TimerHandle | None = None

    def add(self, peer: str, reason: str) -> None:
        self.count += 1
        self.reasons[reason] += 1
        self.first_peer = self.first_peer or peer
        host = peer.rsplit(":", 1)[0] if peer.startswith("tcp:") else peer  # drop the port
        if host in self.hosts:
            self.hosts[host] += 1
        elif len(self.hosts) < self.MAX_HOSTS:
            self.hosts[host] = 1
        else:
            self.from_other_hosts += 1
        if not self.open:
            self.open = True
            self._flush()
            self.timer = asyncio.get_running_loop().call_later(self.window, self._tick)

    def _tick(self) -> None:
        if self.count:
            self._flush()
            self.timer = asyncio.get_running_loop().call_later(self.window, self._tick)
        else:
            self.open = False
            self.timer = None

    def _flush(self) -> None:
        if not self.count:
            return
        reason = self.reasons.most_common(1)[0][0]
        data: dict[str, Any] = {
            "peer": self.first_peer,
            "reason": reason,
            "count": self.count,
            "hosts": dict(self.hosts),
            "from_other_hosts": self.from_other_hosts,
            "reasons": dict(self.reasons),
            "window": self.window,
        }
        if self.count == 1:
            log.warning("refused %s: %s", self.first_peer, reason)
        else:
            log.warning(
                "refused %d TCP connections within %g s (%s), mostly: %s",
                self.count,
                self.window,
                ", ".join(f"{h} x{n}" for h, n in self.hosts.items()),
                reason,
            )
        self.emit(data)
        self.first_peer = None
        self.count = 0
        self.hosts = {}
        self.from_other_hosts = 0
        self.reasons = Counter()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._flush()
        self.open = False


def _file_id(path: Path) -> tuple[int, int, int]:
    """Device, inode and change time: inode numbers alone are reused as soon as freed."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_ctime_ns


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        return int(os.read(fd, 64).decode().strip() or "0") or None
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _probe(path: Path) -> dict[str, Any] | None:
    """The hello of a server answering on `path` ({} if it answers but is not voltui), or None."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(os.fspath(path)), PROBE_TIMEOUT
        )
    except (OSError, TimeoutError):
        return None
    try:
        line = await asyncio.wait_for(reader.readline(), PROBE_TIMEOUT)
        hello = proto.decode(line)
        return hello if hello.get("type") == "hello" else {}
    except (OSError, TimeoutError, ValueError):
        return {}
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _main(argv: list[str] | None = None) -> int:
    """`python -m voltui.remote.server`: a bare headless server, configured like `voltui`
    (voltui.toml / VOLTUI_* variables). `voltui serve` is the supported front door; this exists
    for tests and for machines where only the module is at hand."""
    import argparse
    import sys

    from voltui.config import load_config
    from voltui.remote.paths import parse_tcp, read_token

    parser = argparse.ArgumentParser(prog="python -m voltui.remote.server")
    parser.add_argument("--socket", type=Path, default=None, help="Unix socket path")
    parser.add_argument("--tcp", default=None, help="also listen on HOST:PORT (token required)")
    parser.add_argument("--token-file", type=Path, default=None)
    parser.add_argument("--read-only-token-file", type=Path, default=None)
    parser.add_argument("--on-stop", choices=("cancel", "finish"), default="cancel")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    async def serve() -> None:
        config = load_config()
        tcp = parse_tcp(args.tcp) if args.tcp else None
        token = None
        if tcp is not None and args.token_file is not None:
            token = (
                read_token(args.token_file)
                if args.token_file.exists()
                else load_or_create_token(args.token_file)
            )
        viewer = None
        if args.read_only_token_file is not None:
            viewer = load_or_create_token(args.read_only_token_file)
        async with Orchestrator(config) as engine:
            server = EngineServer(
                engine, socket_path=args.socket, tcp=tcp, token=token, read_only_token=viewer
            )
            await server.serve_forever(on_stop=args.on_stop)

    try:
        asyncio.run(serve())
    except UserError as exc:
        print(f"voltui: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
