"""RemoteEngine: the EngineAPI over a socket, so a dashboard cannot tell it from the embedded one.

What it adds to the plain protocol (see `voltui.remote.protocol`), and why:

- A lost connection is not an error the dashboard has to handle. With `reconnect=True` the client
  reconnects with capped, jittered backoff; read-only requests in flight are sent again, and every
  open subscription resumes with `since_seq` = the last seq it received, filtered by seq on
  arrival, so the consumer sees each event exactly once. Only requests that change something
  (start, cancel, replay) fail with `ConnectionLostError`, because repeating one whose reply was
  lost could start a workflow twice.
- A heartbeat `ping` notices a connection that died silently (a laptop suspended mid-SSH) and
  drops it so the reconnect can begin, rather than waiting for TCP to give up after minutes.
- A Unix socket that belongs to another user, or a server process running as another user
  (`SO_PEERCRED`), is refused before anything is sent (`UntrustedSocketError`): a local squatter
  must not receive the user's requests. Root is trusted. See `voltui.remote.paths`.
- Errors the engine raised on purpose come back as the same classes (`UserError`,
  `NotFoundError`, `InvalidInputError`, `WorkflowFileError`), so the CLI and TUI handle them
  exactly as with the embedded engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, TypeAdapter

from voltui.engine.api import (
    ApprovalRequest,
    EngineSnapshot,
    ReplayRequest,
    StartRequest,
    SubscriptionLagged,
    UsageReport,
    WorkflowInfo,
)
from voltui.engine.errors import UserError
from voltui.engine.models import Approval, Event, EventQuery, LogLine, Run, RunDetail, RunState
from voltui.remote import protocol as proto
from voltui.remote.paths import (
    UntrustedSocketError,
    check_peer,
    check_socket_owner,
    default_socket_path,
    socket_location,
)

__all__ = ["ConnectionState", "RemoteEngine"]

log = logging.getLogger(__name__)

ConnectionState = Literal["connecting", "connected", "reconnecting", "closed"]
CONNECT_TIMEOUT = 5.0
FIRST_BACKOFF = 0.05


class _EventsFrame(BaseModel):
    type: Literal["events"]
    sub: int | str
    events: list[Event]


_EVENTS_FRAME = TypeAdapter(_EventsFrame)
_EVENTS_PREFIX = b'{"type":"events"'
_RESULT_PREFIX = b'{"id":'
_RESULT_SEP = b',"result":'


@dataclass(frozen=True, slots=True)
class _RawResult:
    """A result payload still in JSON: pydantic parses it in one pass (no dict detour)."""

    data: bytes


@dataclass(eq=False)
class _Pending:
    name: str
    frame: bytes
    future: asyncio.Future[Any]
    retry: bool


@dataclass(eq=False)
class _Sub:
    """One consumer's subscription; it outlives connections, its server-side id does not."""

    pattern: str
    last_seq: int | None  # last seq received (queued): where a resubscription starts
    limit: int
    rid: int | None = None
    queue: deque[list[Event]] = field(default_factory=deque)
    queued: int = 0
    delivered: int | None = None
    error: BaseException | None = None
    ended: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def feed(self, events: list[Event]) -> bool:
        """Queue new events (dropping any already seen); False when the consumer lags."""
        last = self.last_seq
        if last is not None and events and events[0].seq <= last:
            events = [e for e in events if e.seq > last]
        if not events:
            return True
        self.last_seq = events[-1].seq
        self.queue.append(events)
        self.queued += len(events)
        self.wake.set()
        if self.queued > self.limit:
            self.fail(SubscriptionLagged(self.delivered or 0))
            return False
        return True

    def fail(self, exc: BaseException) -> None:
        if self.error is None and not self.ended:
            self.error = exc
            self.queue.clear()
            self.queued = 0
        self.wake.set()

    def end(self) -> None:
        self.ended = True
        self.wake.set()


class RemoteEngine:
    """An attached engine. `await connect()` (or `async with`), then use it as an EngineAPI.

    Without `socket_path` or `tcp`, it attaches to `default_socket_path()`. `heartbeat` is the
    ping interval in seconds (a reply later than twice that drops the connection);
    `subscriber_queue` bounds the events buffered for a consumer that does not keep up.
    """

    def __init__(
        self,
        *,
        socket_path: Path | None = None,
        tcp: tuple[str, int] | None = None,
        token: str | None = None,
        read_only: bool = False,
        reconnect: bool = True,
        heartbeat: float = 10.0,
        max_backoff: float = 5.0,
        subscriber_queue: int = 50_000,
    ) -> None:
        if socket_path is not None and tcp is not None:
            raise ValueError("give socket_path or tcp, not both")
        self.socket_path = (
            None if tcp is not None else socket_location(Path(socket_path or default_socket_path()))
        )
        self.tcp = tcp
        self.token = token
        self.read_only = read_only
        self.reconnect = reconnect
        self.heartbeat = heartbeat
        self.max_backoff = max_backoff
        self.subscriber_queue = subscriber_queue
        self.last_error: str | None = None
        """Why the connection was last lost or refused (None while all is well)."""
        self.server_info: dict[str, Any] = {}
        """The server's hello: `version`, `pid`, `protocol`, `auth`."""
        self._state: ConnectionState = "connecting"
        self._ever_connected = False
        self._closed = False
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._subs: set[_Sub] = set()
        self._subs_by_rid: dict[int, _Sub] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._connect_lock = asyncio.Lock()
        self._listeners: list[Callable[[ConnectionState], None]] = []

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def connection(self) -> str:
        """EngineAPI: how the engine is reached, for the dashboard header."""
        return self._state

    @property
    def address(self) -> str:
        """Where this client attaches, for headers and messages."""
        if self.tcp is not None:
            return f"{self.tcp[0]}:{self.tcp[1]}"
        return str(self.socket_path)

    def on_state_change(self, callback: Callable[[ConnectionState], None]) -> Callable[[], None]:
        """Call `callback(state)` on every change (for a header); returns an unregister."""
        self._listeners.append(callback)

        def unregister() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unregister

    def _set_state(self, state: ConnectionState) -> None:
        if state == self._state:
            return
        self._state = state
        for callback in list(self._listeners):
            try:
                callback(state)
            except Exception:
                log.exception("connection state listener failed")

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Attach; a UserError that says what to do when no server answers."""
        async with self._connect_lock:
            if self._state == "connected" or (self._ever_connected and not self._closed):
                return
            self._closed = False
            self._set_state("connecting")
            try:
                await self._open()
            except BaseException as exc:
                self.last_error = str(exc)
                self._set_state("closed")
                raise
            self._ever_connected = True
            self._set_state("connected")
            self._supervisor = asyncio.create_task(self._supervise(), name="remote-supervisor")
            if self.heartbeat > 0:
                self._heartbeat_task = asyncio.create_task(self._beat(), name="remote-heartbeat")

    async def close(self) -> None:
        """Detach. Open subscriptions end normally; requests in flight fail."""
        if self._closed:
            return
        await self._shutdown(None)

    async def _shutdown(self, error: BaseException | None) -> None:
        self._closed = True
        current = asyncio.current_task()
        tasks = [
            t
            for t in (self._supervisor, self._heartbeat_task, self._read_task)
            if t is not None and t is not current
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._drop_connection()
        reason = error or proto.ConnectionLostError(f"detached from the engine at {self.address}")
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(reason)
        self._pending.clear()
        for sub in list(self._subs):
            if error is None:
                sub.end()
            else:
                sub.fail(error)
        self._set_state("closed")

    async def _drop_connection(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    def _unreachable(self, why: str) -> UserError:
        where = f"TCP {self.address}" if self.tcp is not None else f"the socket {self.socket_path}"
        if self.tcp is not None:
            how = "`voltui serve --tcp HOST:PORT` on the server"
        elif self.socket_path == default_socket_path():
            how = f"`voltui serve` (it listens on {self.socket_path} by default)"
        else:
            how = f"`voltui serve --socket {self.socket_path}`"
        return UserError(
            f"no voltui engine server answers on {where} ({why}). Start one with {how}, or "
            "check the --socket/--tcp you gave; over SSH, forward the socket first, e.g. "
            "`ssh -N -L $XDG_RUNTIME_DIR/voltui-host.sock:/run/user/1000/voltui/voltui.sock host`"
            " (a private folder at both ends, never /tmp)."
        )

    async def _open(self) -> None:
        """Connect and complete the handshake; installs the reader task on success."""
        try:
            if self.tcp is not None:
                conn = asyncio.open_connection(*self.tcp, limit=proto.CLIENT_MAX_FRAME)
            else:
                assert self.socket_path is not None
                check_socket_owner(self.socket_path)
                conn = asyncio.open_unix_connection(
                    str(self.socket_path), limit=proto.CLIENT_MAX_FRAME
                )
            reader, writer = await asyncio.wait_for(conn, CONNECT_TIMEOUT)
        except FileNotFoundError:
            raise self._unreachable("no such socket file") from None
        except ConnectionRefusedError:
            raise self._unreachable("connection refused") from None
        except TimeoutError:
            raise self._unreachable(f"no answer within {CONNECT_TIMEOUT:g} s") from None
        except OSError as exc:
            raise self._unreachable(exc.strerror or str(exc)) from None
        try:
            if self.socket_path is not None:
                check_peer(writer.get_extra_info("socket"), self.socket_path)
            hello = await self._handshake_frame(reader)
            if hello.get("type") != "hello":
                raise proto.RemoteError(f"{self.address} did not greet like a voltui server")
            if hello.get("protocol") != proto.PROTOCOL_VERSION:
                raise proto.ProtocolMismatchError(
                    proto.mismatch_message(
                        hello.get("protocol"), hello.get("version", "unknown"), we_are="client"
                    )
                )
            if hello.get("auth") == "token" and not self.token:
                raise proto.AuthError(
                    f"the engine server at {self.address} requires a token: pass --token-file "
                    "with a copy of the server's token file"
                )
            writer.write(
                proto.encode(proto.client_hello(read_only=self.read_only, token=self.token))
            )
            reply = await self._handshake_frame(reader)
            if "error" in reply:
                raise proto.error_from_payload(reply["error"])
            if reply.get("type") != "welcome":
                raise proto.RemoteError(f"unexpected handshake reply from {self.address}")
            if reply.get("read_only") is True:
                self.read_only = True  # the server decides (a read-only token); the UI greys
        except BaseException:
            writer.close()
            raise
        self.server_info = {k: v for k, v in hello.items() if k != "type"}
        self._reader, self._writer = reader, writer
        self._read_task = asyncio.create_task(self._read_loop(reader, writer), name="remote-read")

    async def _handshake_frame(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        try:
            line = await asyncio.wait_for(reader.readline(), proto.HELLO_TIMEOUT)
        except TimeoutError:
            raise proto.RemoteError(f"{self.address} sent no greeting") from None
        except (OSError, ValueError) as exc:
            raise self._unreachable(f"connection failed: {exc}") from None
        if not line:
            raise self._unreachable("it closed the connection at once")
        try:
            return proto.decode(line)
        except ValueError as exc:
            raise proto.RemoteError(f"{self.address} is not a voltui server: {exc}") from None

    # ------------------------------------------------------------------ connection loop

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reason = "the server closed the connection"
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                if not line.endswith(b"\n"):
                    reason = "the connection ended inside a frame"
                    break
                try:
                    self._on_frame(line)
                except Exception:
                    log.exception("bad frame from %s: %.200r", self.address, line)
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            reason = f"connection error: {exc}"
        finally:
            if writer is self._writer:
                self._connection_lost(reason)

    def _on_frame(self, line: bytes) -> None:
        if line.startswith(_RESULT_PREFIX) and self._fast_result(line):
            return
        if line.startswith(_EVENTS_PREFIX):
            frame = _EVENTS_FRAME.validate_json(line)
            sub = self._subs_by_rid.get(frame.sub)  # type: ignore[arg-type]
            if sub is not None and not sub.feed(frame.events):
                self._forget_sub(sub)
            return
        msg = proto.decode(line)
        kind = msg.get("type")
        if kind is None:
            self._on_response(msg)
        elif kind in ("resync", "end"):
            sub = self._subs_by_rid.get(msg.get("sub"))  # type: ignore[arg-type]
            if sub is None:
                return
            self._subs_by_rid.pop(sub.rid, None)  # type: ignore[arg-type]
            sub.rid = None
            if kind == "end":
                sub.end()
            else:
                sub.fail(SubscriptionLagged(sub.delivered or 0))
        elif kind == "bye":
            self.last_error = f"server said goodbye: {msg.get('reason', '')}".strip()
        elif kind == "events":  # not in the server's compact form; same handling
            frame = _EVENTS_FRAME.validate_python(msg)
            sub = self._subs_by_rid.get(frame.sub)  # type: ignore[arg-type]
            if sub is not None and not sub.feed(frame.events):
                self._forget_sub(sub)

    def _fast_result(self, line: bytes) -> bool:
        """`{"id":N,"result":...}` exactly as the server writes it: hand over the raw payload."""
        head, sep, _ = line.partition(_RESULT_SEP)
        if not sep or not line.endswith(b"}\n"):
            return False
        try:
            rid = int(head[len(_RESULT_PREFIX) :])
        except ValueError:
            return False
        pending = self._pending.get(rid)
        if pending is None:
            return False
        if not pending.future.done():
            pending.future.set_result(_RawResult(line[len(head) + len(sep) : -2]))
        return True

    def _on_response(self, msg: dict[str, Any]) -> None:
        rid = msg.get("id")
        sub = self._subs_by_rid.get(rid)  # type: ignore[arg-type]
        if sub is not None:
            if "error" in msg:
                self._subs_by_rid.pop(rid, None)  # type: ignore[arg-type]
                sub.rid = None
                sub.fail(proto.error_from_payload(msg["error"]))
            elif sub.last_seq is None:
                result = msg.get("result") or {}
                sub.last_seq = result.get("seq")
            return
        pending = self._pending.get(rid)  # type: ignore[arg-type]
        if pending is None:
            if rid is None and "error" in msg:
                log.warning("engine server: %s", msg["error"])
            return  # a fire-and-forget unsubscribe, or a request cancelled meanwhile
        if pending.future.done():
            return
        if "error" in msg:
            pending.future.set_exception(proto.error_from_payload(msg["error"]))
        else:
            pending.future.set_result(msg.get("result"))

    def _connection_lost(self, reason: str) -> None:
        if self._closed:
            return
        self.last_error = reason
        self._writer = self._reader = None
        self._subs_by_rid.clear()
        for sub in self._subs:
            sub.rid = None
        lost = proto.ConnectionLostError(
            f"lost the connection to the engine at {self.address} ({reason}) while a request "
            "that changes something was in flight; it may or may not have happened: check with "
            "`voltui list`"
        )
        for rid, pending in list(self._pending.items()):
            if not pending.retry or not self.reconnect:
                self._pending.pop(rid, None)
                if not pending.future.done():
                    pending.future.set_exception(lost)
        self._set_state("reconnecting" if self.reconnect else "closed")
        self._lost.set()

    async def _supervise(self) -> None:
        while True:
            await self._lost.wait()
            self._lost.clear()
            if self._closed:
                return
            if not self.reconnect:
                await self._shutdown(
                    proto.ConnectionLostError(
                        f"lost the connection to the engine at {self.address}: {self.last_error}"
                    )
                )
                return
            delay = FIRST_BACKOFF
            while True:
                try:
                    await self._open()
                    break
                except (proto.AuthError, proto.ProtocolMismatchError, UntrustedSocketError) as exc:
                    self.last_error = str(exc)  # retrying cannot fix these
                    await self._shutdown(exc)
                    return
                except (UserError, proto.RemoteError, OSError) as exc:
                    self.last_error = str(exc)
                await asyncio.sleep(delay * random.uniform(0.75, 1.25))
                delay = min(delay * 2, self.max_backoff)
            self._resume()
            if self._writer is not None:  # else it dropped again at once: go round again
                self.last_error = None
                self._set_state("connected")

    def _resume(self) -> None:
        """After a reconnect: reopen every live subscription, then re-send pending reads."""
        for sub in self._subs:
            if sub.error is None and not sub.ended:
                self._open_sub(sub)
        for rid, pending in self._pending.items():
            if not pending.future.done():
                self._send(pending.frame)
                log.debug("re-sent request %d (%s) after reconnecting", rid, pending.name)

    async def _beat(self) -> None:
        """Notice a silently dead connection: no pong within two intervals drops it."""
        while True:
            await asyncio.sleep(self.heartbeat)
            writer = self._writer
            if self._state != "connected" or writer is None:
                continue
            try:
                await asyncio.wait_for(self._call("ping", {}), self.heartbeat * 2)
            except TimeoutError:
                if writer is self._writer:
                    log.info("no heartbeat reply from %s; reconnecting", self.address)
                    writer.transport.abort()
            except Exception as exc:
                log.debug("heartbeat: %s", exc)

    def _send(self, frame: bytes) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            return  # lost meanwhile: the resume after reconnecting sends it
        writer.write(frame)

    # ------------------------------------------------------------------ requests

    async def _ensure_connected(self) -> None:
        if not self._ever_connected and not self._closed:
            await self.connect()

    async def _call(self, name: str, params: dict[str, Any]) -> Any:
        await self._ensure_connected()
        method = proto.METHODS[name]
        if self._state == "closed":
            raise proto.ConnectionLostError(
                f"not attached to the engine at {self.address}"
                + (f" ({self.last_error})" if self.last_error else "")
            )
        if method.mutating and self._state != "connected":
            raise proto.ConnectionLostError(
                f"not connected to the engine at {self.address} right now ({self._state}); "
                "try again once the connection is back"
            )
        rid = next(self._ids)
        frame = proto.encode({"id": rid, "method": name, "params": params})
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = _Pending(name, frame, future, retry=not method.mutating)
        try:
            if self._state == "connected":
                self._send(frame)
            raw = await future
        finally:
            self._pending.pop(rid, None)
        if isinstance(raw, _RawResult):
            return method.result.validate_json(raw.data)
        return method.result.validate_python(raw)

    # ------------------------------------------------------------------ subscriptions

    def _open_sub(self, sub: _Sub) -> None:
        rid = next(self._ids)
        sub.rid = rid
        self._subs_by_rid[rid] = sub
        params = {"pattern": sub.pattern, "since_seq": sub.last_seq}
        self._send(proto.encode({"id": rid, "method": "subscribe", "params": params}))

    def _forget_sub(self, sub: _Sub) -> None:
        rid, sub.rid = sub.rid, None
        if rid is None:
            return
        self._subs_by_rid.pop(rid, None)
        if self._state == "connected":
            unsub = {"id": next(self._ids), "method": "unsubscribe", "params": {"sub": rid}}
            self._send(proto.encode(unsub))

    def subscribe(
        self, pattern: str = "*", since_seq: int | None = None
    ) -> AsyncIterator[list[Event]]:
        """As `EngineAPI.subscribe`, resumed across reconnects without gap or duplicate.

        Without `since_seq` the stream starts at the engine's latest event when the first
        item is requested (the embedded engine starts at the call itself).
        """
        return self._subscription(pattern, since_seq)

    async def _subscription(
        self, pattern: str, since_seq: int | None
    ) -> AsyncGenerator[list[Event], None]:
        await self._ensure_connected()
        if self._state == "closed":
            raise proto.ConnectionLostError(f"not attached to the engine at {self.address}")
        sub = _Sub(pattern, since_seq, self.subscriber_queue, delivered=since_seq)
        self._subs.add(sub)
        try:
            if self._state == "connected":
                self._open_sub(sub)
            while True:
                if sub.queue:
                    batch = sub.queue.popleft()
                    sub.queued -= len(batch)
                    sub.delivered = batch[-1].seq
                    yield batch
                    continue
                if sub.error is not None:
                    raise sub.error
                if sub.ended:
                    return
                sub.wake.clear()
                await sub.wake.wait()
        finally:
            self._subs.discard(sub)
            self._forget_sub(sub)

    # ------------------------------------------------------------------ EngineAPI

    async def snapshot(self) -> EngineSnapshot:
        return await self._call("snapshot", {})

    async def list_workflows(self) -> list[WorkflowInfo]:
        return await self._call("list_workflows", {})

    async def start_workflow(self, request: StartRequest) -> Run:
        # Only the fields set: a budget override replaces just the limits it names.
        params = {"request": request.model_dump(mode="json", exclude_unset=True)}
        return await self._call("start_workflow", params)

    async def cancel_run(self, run_id: str) -> Run:
        return await self._call("cancel_run", {"run_id": run_id})

    async def replay_run(self, request: ReplayRequest) -> Run:
        params = {"request": request.model_dump(mode="json", exclude_unset=True)}
        return await self._call("replay_run", params)

    async def get_run(self, run_id: str) -> RunDetail:
        detail: RunDetail = await self._call("get_run", {"run_id": run_id})
        detail.workflow._source = detail.run.workflow_path  # a private attr: not on the wire
        return detail

    async def usage(self, since: float | None = None) -> UsageReport:
        return await self._call("usage", {"since": since})

    async def list_runs(self, state: RunState | None = None, limit: int = 50) -> list[Run]:
        value = RunState(state).value if state is not None else None
        return await self._call("list_runs", {"state": value, "limit": limit})

    async def step_log(
        self, run_id: str, step_id: str, attempt: int | None = None, tail: int | None = None
    ) -> list[LogLine]:
        """Every line asked for: the server answers in pages, gathered here."""
        return [
            line
            async for page in self.step_log_pages(run_id, step_id, attempt, tail)
            for line in page
        ]

    async def step_log_pages(
        self, run_id: str, step_id: str, attempt: int | None = None, tail: int | None = None
    ) -> AsyncIterator[list[LogLine]]:
        """The lines page by page (at most the server's page size each), for callers that
        can use them as they come instead of holding all of them."""
        params: dict[str, Any] = {
            "run_id": run_id,
            "step_id": step_id,
            "attempt": attempt,
            "tail": tail,
        }
        while True:
            page: proto.LogPage = await self._call("step_log", params)
            yield page.lines
            if page.next is None:
                return
            params["cursor"] = page.next.model_dump()

    async def events(self, query: EventQuery) -> list[Event]:
        """Every event asked for: the server answers in pages, gathered here."""
        return [event async for page in self.events_pages(query) for event in page]

    async def events_pages(self, query: EventQuery) -> AsyncIterator[list[Event]]:
        """The events page by page, oldest first (at most the server's page size each)."""
        params: dict[str, Any] = {"query": query.model_dump(mode="json")}
        while True:
            page: proto.EventsPage = await self._call("events", params)
            yield page.events
            if page.next is None:
                return
            params["cursor"] = page.next.model_dump()

    async def wait_run(self, run_id: str) -> Run:
        """Waits across reconnects too: the run goes on in the server whatever happens here."""
        return await self._call("wait_run", {"run_id": run_id})

    async def approve(self, request: ApprovalRequest) -> Approval:
        return await self._call("approve", {"request": request.model_dump(mode="json")})

    async def ping(self) -> float:
        """Round trip to the server; returns the server's clock."""
        result: dict[str, float] = await self._call("ping", {})
        return result["ts"]
