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

A client whose `protocol` differs gets `{"id": null, "error": {"kind": "protocol", ...}}` naming
both versions, and the connection is closed; the client likewise refuses a server hello with
another protocol number. On TCP the first client frame must carry the right token; a wrong or
missing one gets `kind: auth`, is logged as a `remote:auth_failed` engine event (peer and
reason, never the token) and the connection is closed. A hello must arrive within
`HELLO_TIMEOUT` seconds.

Requests and responses (ids are the client's, any JSON number or string; responses may come
out of order, since requests run concurrently and `wait_run` can take hours):

    C: {"id": 7, "method": "get_run", "params": {"run_id": "r-1"}}
    S: {"id": 7, "result": {...RunDetail...}}
    S: {"id": 7, "error": {"kind": "NotFoundError", "message": "unknown run id ..."}}

`params` are the EngineAPI method's keyword arguments (`METHODS` below lists them), e.g.
`start_workflow` takes `{"request": {...StartRequest...}}`. Error kinds: the engine's
`UserError`, `NotFoundError`, `InvalidInputError`, `WorkflowFileError` (with `path` and
`problems`), which the client re-raises as the same classes; and the protocol's own
`read_only`, `auth`, `protocol`, `bad_frame` (not JSON, not an object, truncated),
`frame_too_large`, `unknown_method`, `unknown_message`, `invalid_params`, `busy` and
`internal`. A frame whose id cannot be read is answered with `"id": null`. No error ever closes
the connection except `auth`, `protocol` and a missing hello.

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

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from voltui import __version__
from voltui.engine.api import (
    ApprovalRequest,
    EngineSnapshot,
    ReplayRequest,
    StartRequest,
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

PROTOCOL_VERSION: Final = 1
VERSION: Final = __version__
DEFAULT_MAX_FRAME: Final = 1 << 20
CLIENT_MAX_FRAME: Final = 1 << 28  # the client trusts its own server; big query results are fine
HELLO_TIMEOUT: Final = 10.0


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
    limit: int = Field(50, ge=1, le=100_000)


class StepLogParams(_Params):
    run_id: str = Field(max_length=256)
    step_id: str = Field(max_length=256)
    attempt: int | None = None
    tail: int | None = Field(None, ge=0)


class EventsParams(_Params):
    query: EventQuery


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
    "step_log": Method(StepLogParams, TypeAdapter(list[LogLine])),
    "events": Method(EventsParams, TypeAdapter(list[Event])),
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


def decode(line: bytes) -> dict[str, Any]:
    """Parse one frame; ValueError with a short reason if it is not a JSON object."""
    try:
        frame = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
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
