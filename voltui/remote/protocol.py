"""The wire protocol between `voltui serve` and attached clients (version 1).

Transport: a byte stream (Unix socket, TCP, or either through an SSH tunnel) carrying JSON
**lines**: one UTF-8 JSON object per frame, ended by `\\n`. JSON escapes newlines inside strings,
so a frame never contains a raw one. Values are the engine's own pydantic models dumped to JSON,
so the client rebuilds exactly the objects the embedded engine returns.

Frames are size-limited (`max_frame`, 1 MiB by default, counted without the newline) on the
server's input. A longer line gets one error reply (`kind: frame_too_large`, `id: null`) and is
discarded up to its newline, after which the connection carries on: line framing always
resynchronises, so there is no reason to drop the client. Server output is not capped this way
(an `events` query can legitimately be large); the client reads with a generous limit instead.

Handshake (the server speaks first, so a client can name what it reached):

    S: {"type": "hello", "protocol": 1, "server": "voltui", "version": "0.1.0", "pid": 4242,
        "auth": "token" | "none"}
    C: {"type": "hello", "protocol": 1, "client": "voltui", "version": "0.1.0",
        "read_only": false, "token": "..."}          # token only where auth is "token" (TCP)
    S: {"type": "welcome", "protocol": 1, "client_id": 3, "read_only": false, "seq": 1234}

`read_only` in the welcome is what the server enforces for this connection: what the client
asked, or true whatever it asked when it gave the server's read-only token (TCP). Read-only
connections get `read_only` errors for every mutating method (`Method.mutating`).

A client whose `protocol` differs gets `{"id": null, "error": {"kind": "protocol", ...}}` naming
both versions, and the connection is closed; the client likewise refuses a server hello with
another protocol number. On TCP the first client frame must carry the right token; a wrong or
missing one gets `kind: auth` and the connection is closed. Refusals are recorded as
`remote:auth_failed` engine events (peer, reason, count and source hosts; never the token),
at most one per 10 s window: the first at once, the rest of the window aggregated. A hello
must arrive within `HELLO_TIMEOUT` seconds.

Requests and responses (ids are the client's, any JSON number or string; responses may come
out of order, since requests run concurrently and `wait_run` can take hours):

    C: {"id": 7, "method": "get_run", "params": {"run_id": "r-1"}}
    S: {"id": 7, "result": {...RunDetail...}}
    S: {"id": 7, "error": {"kind": "NotFoundError", "message": "unknown run id ..."}}

`params` are the EngineAPI method's keyword arguments (`METHODS` below lists them), e.g.
`start_workflow` takes `{"request": {...StartRequest...}}`. Error kinds: the engine's
`UserError`, `NotFoundError`, `InvalidInputError`, `WorkflowFileError` (with `path` and
`problems`), which the client re-raises as the same classes; and the protocol's own
`read_only`, `auth`, `protocol`, `bad_frame` (not JSON, not an object, truncated, nested
deeper than `MAX_DEPTH`),
`frame_too_large`, `unknown_method`, `unknown_message`, `invalid_params`, `busy` and
`internal`. A frame whose id cannot be read is answered with `"id": null`. No error ever closes
the connection except `auth`, `protocol` and a missing hello.

Bounded answers: `events` answers `{"events": [...], "next": null | {"after": N, "upto": M}}`
and `step_log` `{"lines": [...], "next": ...}`, at most the server's page size each (5,000
events, 10,000 log lines by default); a request repeated with `"cursor": <next>` in its params
gets the following page, in the order one query would have given (oldest first; the listing
ends where it ended when the first page was asked for). A `limit`/`tail` within one page is
answered in one page. `list_runs` takes at most `MAX_RUNS` runs. Nothing a client asks makes
the server hold more than one page of history in memory for it.

`ping` answers `{"ts": <server time>}`; clients use it as a heartbeat.

Subscriptions: `subscribe` with `{"pattern": "*", "since_seq": N | null}` answers
`{"sub": <the request id>, "seq": <the seq it starts after>}`, then the server streams

    S: {"type": "events", "sub": 7, "events": [{...Event...}, ...]}     # seq order, no gaps
    S: {"type": "resync", "sub": 7, "last_seq": 1290, "reason": "..."}  # the stream is over
    S: {"type": "end", "sub": 7}                                         # the engine stopped

The subscription id is the request id, so events can never arrive for an id the client does
not know yet, and the response is always queued before the first `events` frame. A client that
reconnects subscribes again with `since_seq` = the last seq it received: the engine fills the gap
from memory or the store, so nothing is missed and nothing repeats. `unsubscribe` takes
`{"sub": 7}`.

Back-pressure: each client has a bounded outgoing queue (`client_queue` events). A client that
reads slowly but steadily is paced (a big backfill after a reconnect arrives in full). When a
subscription's next batch does not fit and the client has taken nothing for `stall_timeout`
seconds, or the engine's own per-subscriber buffer overflows, its queued batches are dropped,
it is ended with `resync`, and the client must take a fresh `snapshot`. The engine never waits
for a client. A client that sends requests without reading replies is simply not read from
until its queue drains, which affects nobody else.

When the server shuts down it sends `{"type": "bye", "reason": "..."}` and closes; attached
clients keep reconnecting until a server is back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from voltui import __version__
from voltui.engine.api import (
    ApprovalRequest,
    EngineSnapshot,
    ReplayRequest,
    StartRequest,
    UsageReport,
    WorkflowInfo,
)
from voltui.engine.errors import (
    InvalidInputError,
    NotFoundError,
    UserError,
    VoltuiError,
    WorkflowFileError,
)
from voltui.engine.models import Approval, Event, EventQuery, LogLine, Run, RunDetail, RunState

PROTOCOL_VERSION: Final = 2  # 2: `events` and `step_log` answer in pages
VERSION: Final = __version__
DEFAULT_MAX_FRAME: Final = 1 << 20
CLIENT_MAX_FRAME: Final = 1 << 28  # the client trusts its own server; big query results are fine
HELLO_TIMEOUT: Final = 10.0
MAX_RUNS: Final = 10_000  # list_runs: the most runs one answer may hold
MAX_EVENTS: Final = 5_000  # events: the most events one page holds (see voltui.remote.pages)
MAX_LOG_LINES: Final = 10_000  # step_log: the most lines one page holds


# --------------------------------------------------------------------------- errors


class RemoteError(VoltuiError):
    """The server failed in a way that is not the user's doing (a bug, a protocol mistake)."""

    def __init__(self, message: str, kind: str = "internal") -> None:
        super().__init__(message)
        self.kind = kind


class ConnectionLostError(UserError):
    """The connection dropped while a request that must not be repeated was in flight, or the
    client is closed. The request may or may not have taken effect: check with `get_run`."""


class ReadOnlyError(UserError):
    """An action refused because this client attached read-only."""


class AuthError(UserError):
    """The server refused the token (or none was given for a TCP server)."""


class ProtocolMismatchError(UserError):
    """Client and server speak different protocol versions."""


_USER_ERRORS: dict[str, type[UserError]] = {
    "UserError": UserError,
    "NotFoundError": NotFoundError,
    "InvalidInputError": InvalidInputError,
    "read_only": ReadOnlyError,
    "auth": AuthError,
    "protocol": ProtocolMismatchError,
}


def error_payload(exc: BaseException) -> dict[str, Any]:
    """The wire form of an engine exception: the nearest class the client can rebuild."""
    if isinstance(exc, WorkflowFileError):
        return {
            "kind": "WorkflowFileError",
            "message": str(exc),
            "path": exc.path,
            "problems": list(exc.problems),
        }
    for cls in type(exc).__mro__:
        if cls in (NotFoundError, InvalidInputError, UserError):
            return {"kind": cls.__name__, "message": str(exc)}
    return {"kind": "internal", "message": f"{type(exc).__name__}: {exc}"}


def error_from_payload(error: Any) -> Exception:
    """Rebuild the exception a response's `error` describes, as the embedded engine raised it."""
    if not isinstance(error, dict):
        return RemoteError(f"malformed error reply from the server: {error!r}", "bad_frame")
    kind = str(error.get("kind", "internal"))
    message = str(error.get("message", "")) or kind
    if kind == "WorkflowFileError":
        problems = error.get("problems")
        path = error.get("path")
        if isinstance(problems, list) and isinstance(path, str):
            return WorkflowFileError(path, [str(p) for p in problems])
        return UserError(message)
    cls = _USER_ERRORS.get(kind)
    if cls is not None:
        return cls(message)
    return RemoteError(f"engine server: {message}", kind)


# --------------------------------------------------------------------------- methods


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoParams(_Params):
    pass


class RequestParams(_Params):
    request: StartRequest


class ReplayParams(_Params):
    request: ReplayRequest


class ApproveParams(_Params):
    request: ApprovalRequest


class RunIdParams(_Params):
    run_id: str = Field(max_length=256)


class ListRunsParams(_Params):
    state: RunState | None = None
    limit: int = Field(50, ge=1, le=MAX_RUNS)


class UsageParams(_Params):
    since: float | None = Field(None, allow_inf_nan=False)


# --------------------------------------------------------------------------- pages


class PageCursor(BaseModel):
    """Where the next page starts (after this seq or log row id) and where the listing ends."""

    model_config = ConfigDict(extra="forbid")

    after: int
    upto: int

    @model_validator(mode="after")
    def _ordered(self) -> PageCursor:
        if self.after > self.upto:
            raise ValueError("cursor: after must not be beyond upto")
        return self


class EventsPage(BaseModel):
    """One answer to `events`: at most the server's page size; `next` is None on the last."""

    events: list[Event]
    next: PageCursor | None = None


class LogPage(BaseModel):
    """One answer to `step_log`, like `EventsPage`."""

    lines: list[LogLine]
    next: PageCursor | None = None


class StepLogParams(_Params):
    run_id: str = Field(max_length=256)
    step_id: str = Field(max_length=256)
    attempt: int | None = None
    tail: int | None = Field(None, ge=0)
    cursor: PageCursor | None = None


class EventsParams(_Params):
    query: EventQuery
    cursor: PageCursor | None = None


class SubscribeParams(_Params):
    pattern: str = Field("*", max_length=1024)
    since_seq: int | None = Field(None, ge=0)


class UnsubscribeParams(_Params):
    sub: int | str


class Subscribed(BaseModel):
    sub: int | str
    seq: int


@dataclass(frozen=True, slots=True)
class Method:
    """One callable method: how to check its params and (de)serialise its result.

    `mutating` methods are refused to read-only clients and never re-sent after a reconnect
    (the first attempt may have worked); the others are re-sent transparently.
    """

    params: type[_Params]
    result: TypeAdapter[Any]
    mutating: bool = False


_RUN = TypeAdapter(Run)
METHODS: Final[dict[str, Method]] = {
    "ping": Method(NoParams, TypeAdapter(dict[str, float])),
    "snapshot": Method(NoParams, TypeAdapter(EngineSnapshot)),
    "list_workflows": Method(NoParams, TypeAdapter(list[WorkflowInfo])),
    "start_workflow": Method(RequestParams, _RUN, mutating=True),
    "cancel_run": Method(RunIdParams, _RUN, mutating=True),
    "replay_run": Method(ReplayParams, _RUN, mutating=True),
    "get_run": Method(RunIdParams, TypeAdapter(RunDetail)),
    "list_runs": Method(ListRunsParams, TypeAdapter(list[Run])),
    "usage": Method(UsageParams, TypeAdapter(UsageReport)),
    "step_log": Method(StepLogParams, TypeAdapter(LogPage)),
    "events": Method(EventsParams, TypeAdapter(EventsPage)),
    "wait_run": Method(RunIdParams, _RUN),
    "approve": Method(ApproveParams, TypeAdapter(Approval), mutating=True),
    "subscribe": Method(SubscribeParams, TypeAdapter(Subscribed)),
    "unsubscribe": Method(UnsubscribeParams, TypeAdapter(dict[str, bool])),
}

EVENTS: Final = TypeAdapter(list[Event])


# --------------------------------------------------------------------------- frames


def encode(frame: dict[str, Any]) -> bytes:
    """One control frame as a line (small dicts of plain values)."""
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def encode_result(request_id: int | str, method: Method, value: Any) -> bytes:
    """A result frame, with the payload dumped by pydantic in one pass (no dict detour)."""
    rid = json.dumps(request_id).encode()
    return b'{"id":' + rid + b',"result":' + method.result.dump_json(value) + b"}\n"


def encode_events(sub: int | str, events: list[Event]) -> bytes:
    sid = json.dumps(sub).encode()
    return b'{"type":"events","sub":' + sid + b',"events":' + EVENTS.dump_json(events) + b"}\n"


def encode_error(request_id: int | str | None, error: dict[str, Any]) -> bytes:
    return encode({"id": request_id, "error": error})


MAX_DEPTH: Final = 64
"""Deepest nesting of arrays and objects a frame may have. Real frames nest a handful of levels.
`json.loads` on a few thousand levels raises RecursionError, which escaped the reader (a
traceback and a dropped connection, before authentication on TCP); a few hundred levels parse,
but could then fail deep inside the engine (pydantic, the store's JSON encoder)."""


def deeper_than(value: Any, limit: int) -> bool:
    """Whether parsed JSON nests more than `limit` arrays/objects deep (iterative: no
    recursion to exhaust, and it stops at the first path that is too deep)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def decode(line: bytes, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse one frame; ValueError with a short reason if it is not a JSON object or nests
    deeper than `max_depth`.

    A frame with no more opening brackets than `max_depth` cannot be too deep, so the walk
    that checks the depth only runs for the rare frames with many (two C-level counts
    otherwise). Counting brackets inside strings too only ever errs towards walking.
    """
    try:
        frame = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    except RecursionError:
        raise ValueError(f"nested deeper than {max_depth} levels") from None
    if isinstance(frame, dict | list) and line.count(b"[") + line.count(b"{") > max_depth:
        if deeper_than(frame, max_depth):
            raise ValueError(f"nested deeper than {max_depth} levels")
    if not isinstance(frame, dict):
        raise ValueError(f"expected a JSON object, got {type(frame).__name__}")
    return frame


def valid_id(value: Any) -> bool:
    """Request ids are numbers or short strings, echoed back verbatim."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and len(value) <= 128)


def server_hello(*, pid: int, auth: bool) -> dict[str, Any]:
    return {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "server": "voltui",
        "version": VERSION,
        "pid": pid,
        "auth": "token" if auth else "none",
    }


def client_hello(*, read_only: bool, token: str | None) -> dict[str, Any]:
    hello: dict[str, Any] = {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "client": "voltui",
        "version": VERSION,
        "read_only": read_only,
    }
    if token is not None:
        hello["token"] = token
    return hello


def mismatch_message(theirs: Any, their_version: Any, *, we_are: str) -> str:
    """One paragraph for either side: both versions, and that upgrading the older one fixes it."""
    other = "server" if we_are == "client" else "client"
    return (
        f"the voltui {other} speaks remote protocol {theirs!r} (voltui {their_version}), but "
        f"this {we_are} speaks protocol {PROTOCOL_VERSION} (voltui {VERSION}); install the "
        f"same voltui version on both ends"
    )
