"""The engine process's wire: JSON Lines over a Unix socket, and every engine.api record on it.

One JSON object per line, UTF-8 (ENGINE.md §3, after the Codex app-server's JSONL, JSON-RPC 2.0
without its "jsonrpc" field):

- a request   {"id": N, "method": M, "params": {...}}
- its reply   {"id": N, "result": ...}  or  {"id": N, "error": {"code": C, "line": L}}, where L is
  the one labelled line the client prints;
- a notification {"method": M, "params": {...}}: the engine's events (EVENT_METHODS), each with
  its "seq", and client/detached.

There is no heartbeat: the engine may be silent for seconds while HailoRT holds its GIL, and only
EOF means it is gone. This module imports no terminal library: both processes use it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, TypeVar

from hailo_repl.context import ContextUsage
from hailo_repl.engine.api import (
    Attached,
    Busy,
    ChatChange,
    ChatChanged,
    EngineError,
    EngineNotice,
    EngineState,
    ErrorCode,
    Event,
    ModelState,
    Record,
    Snapshot,
    Status,
    Switched,
    TurnCompleted,
    TurnEnd,
    TurnMode,
    TurnNotice,
    TurnStarted,
    TurnText,
    UsageChanged,
)
from hailo_repl.stats import ReplyStats

R = TypeVar("R", bound=Record)

# Bumped whenever a message changes meaning; a client and an engine of different versions refuse
# each other at `initialize` with one line.
PROTOCOL_VERSION = 1

# The longest line either side reads (the asyncio stream limit): a paste may be 4 M characters
# (cli_chat.STDIN_MESSAGE_LIMIT) and /file 4 MB (engine.ops.FILE_READ_LIMIT), JSON-escaped.
MAX_LINE = 32 * 1024 * 1024

# ---- methods -------------------------------------------------------------------------------

INITIALIZE = "initialize"  # {v, client{pid, tty}} -> {v, daemon_pid, version}
CHAT_OPEN = "chat/open"  # OpenRequest -> Opened
TURN_START = "turn/start"  # {text, mode} -> {turn}
TURN_INTERRUPT = "turn/interrupt"  # {turn, shown_seq}: handled at once, never queued
TURN_FLUSH = "turn/flush"  # {turn}: hand the next text over at once (the word-wrap holds the first word)
CHAT_DETACH = "chat/detach"  # the chat and its reply go on; the socket closes
CHAT_QUIT = "chat/quit"  # stop the reply, keep the device context, release, and the engine exits
CHAT_CLEAR = "chat/clear"
CHAT_UNDO = "chat/undo"  # -> {text, lines}
CHAT_SYSTEM = "chat/system"  # {text?} -> {text}
CHAT_SET = "chat/set"  # {name, value}
CHAT_LOAD = "chat/load"  # {path} -> {messages}
CHAT_SAVE = "chat/save"  # {path?, directory, force} -> {path, messages}
CHAT_ATTACH_FILE = "chat/attach_file"  # {path} -> Attached
CHAT_RESUME = "chat/resume"  # {id}
CHAT_KEEP_CONTEXT = "chat/keep_context"
CHAT_GET = "chat/get"  # {what: usage|stats|last_question|messages|status|snapshot}
MODEL_LIST = "model/list"  # -> {models}
MODEL_PREPARE = "model/prepare"  # {name} -> {name}
MODEL_SWITCH = "model/switch"  # {name} -> Switched
DAEMON_STATUS = "daemon/status"  # -> EngineServer.status()
DAEMON_STOP = "daemon/stop"  # like chat/quit, from a client not attached

# Notifications from the engine
CLIENT_DETACHED = "client/detached"  # {reason, by?{pid, tty}}: then the socket closes
TURN_FINISHED = "turn/finished"  # {seq, turn}: the turn is kept and saved (its late lines came before)

# Why a client is let go (client/detached's reason).
TAKEN_OVER, QUIT, STOPPING, IDLE, TOO_FAR_BEHIND = "taken_over", "quit", "stopping", "idle", "too_far_behind"
DETACH_REASONS = (TAKEN_OVER, QUIT, STOPPING, IDLE, TOO_FAR_BEHIND)

# Error codes of the wire's own, beside engine.api.ErrorCode's.
VERSION = "version"  # the other side speaks another PROTOCOL_VERSION
HELD_ELSEWHERE = "held_elsewhere"  # the chat is open in another terminal (plain open never takes it)
BAD_REQUEST = "bad_request"  # a request this engine cannot read
NOT_OPEN = "not_open"  # a chat request before chat/open
ENDING = "ending"  # the engine is stopping: the client waits for the next one (as if none listened)


class ProtocolError(Exception):
    """A line that is not one of this protocol's messages."""


class RemoteError(Exception):
    """An error reply: `code` (an engine.api.ErrorCode's value or one of the wire's) and `line`."""

    def __init__(self, code: str, line: str):
        super().__init__(line)
        self.code = code
        self.line = line

    def engine_error(self, default: ErrorCode = ErrorCode.BAD_VALUE) -> EngineError:
        """As the EngineError the terminal side handles (a wire-only code as `default`)."""
        codes = {code.value: code for code in ErrorCode}
        return EngineError(codes.get(self.code, default), self.line)


# ---- framing -------------------------------------------------------------------------------


def encode(message: Mapping[str, Any]) -> bytes:
    """One message as its line (compact, UTF-8, no ASCII escapes: text stays text)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """A line as a message (ProtocolError if it is not a JSON object)."""
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProtocolError(f"not a JSON line: {error}") from None
    if not isinstance(message, dict):
        raise ProtocolError("not a JSON object")
    return message


def request(number: int, method: str, params: Mapping[str, Any] | None = None) -> bytes:
    return encode({"id": number, "method": method, "params": dict(params or {})})


def result(number: int, value: Any) -> bytes:
    return encode({"id": number, "result": value})


def error(number: int | None, code: str, line: str) -> bytes:
    return encode({"id": number, "error": {"code": code, "line": line}})


def notification(method: str, params: Mapping[str, Any]) -> bytes:
    return encode({"method": method, "params": dict(params)})


# ---- records -------------------------------------------------------------------------------


def usage_to_wire(usage: ContextUsage) -> dict[str, Any]:
    return {"used": usage.used, "capacity": usage.capacity, "estimated": usage.estimated}


def usage_from_wire(value: Mapping[str, Any]) -> ContextUsage:
    return ContextUsage(int(value["used"]), int(value["capacity"]), bool(value.get("estimated", False)))


def stats_from_wire(value: Mapping[str, Any]) -> ReplyStats:
    names = {field.name for field in dataclasses.fields(ReplyStats)}
    return ReplyStats(**{name: value[name] for name in names if name in value})


def _to_wire(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, ContextUsage):
        return usage_to_wire(value)
    if isinstance(value, ReplyStats):
        return dataclasses.asdict(value)
    if isinstance(value, Event):
        return event_to_wire(value)
    if isinstance(value, Record):
        return record_to_wire(value)
    if isinstance(value, (list, tuple)):
        return [_to_wire(item) for item in value]
    return value


def _events_from_wire(value: list[Any]) -> tuple[Event, ...]:
    return tuple(event_from_wire(item) for item in value)


# How a field read from the wire becomes its value (by field name: each means one thing in
# every record of engine.api); a field not named here is JSON as it is.
_FIELDS: dict[str, Callable[[Any], Any]] = {
    "state": ModelState,
    "busy": Busy,
    "mode": TurnMode,
    "reason": TurnEnd,
    "why": ChatChange,
    "usage": usage_from_wire,
    "stats": stats_from_wire,
    "events": _events_from_wire,
}


def record_to_wire(record: Record) -> dict[str, Any]:
    return {name: _to_wire(getattr(record, name)) for name in record._names}


def record_from_wire(kind: type[R], value: Mapping[str, Any]) -> R:
    """`kind` from its fields on the wire (ProtocolError if one it needs is missing or wrong)."""
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{kind.__name__}: not an object")
    fields: dict[str, Any] = {}
    try:
        for name in kind._names:
            if name in value:
                raw = value[name]
                convert = _FIELDS.get(name)
                fields[name] = convert(raw) if convert is not None and raw is not None else raw
        return kind(**fields)
    except (TypeError, ValueError, KeyError) as wrong:
        raise ProtocolError(f"{kind.__name__}: {wrong}") from None


# The engine's events as notifications: method name <-> event class.
EVENT_METHODS: dict[type[Event], str] = {
    EngineState: "engine/state",
    EngineNotice: "engine/notice",
    UsageChanged: "chat/usage",
    TurnStarted: "turn/started",
    TurnText: "turn/text",
    TurnNotice: "turn/notice",
    TurnCompleted: "turn/completed",
    ChatChanged: "chat/changed",
}
EVENT_CLASSES: dict[str, type[Event]] = {method: kind for kind, method in EVENT_METHODS.items()}


def event_to_wire(event: Event) -> dict[str, Any]:
    """An event as its notification's message ({method, params})."""
    return {"method": EVENT_METHODS[type(event)], "params": record_to_wire(event)}


def event_from_wire(message: Mapping[str, Any]) -> Event:
    kind = EVENT_CLASSES.get(message.get("method", ""))
    if kind is None:
        raise ProtocolError(f"not an event: {message.get('method')!r}")
    return record_from_wire(kind, message.get("params", {}))


def event_line(event: Event) -> bytes:
    return encode(event_to_wire(event))


def status_from_wire(value: Mapping[str, Any]) -> Status:
    return record_from_wire(Status, value)


def snapshot_from_wire(value: Mapping[str, Any]) -> Snapshot:
    return record_from_wire(Snapshot, value)


def attached_from_wire(value: Mapping[str, Any]) -> Attached:
    return record_from_wire(Attached, value)


def switched_from_wire(value: Mapping[str, Any]) -> Switched:
    return record_from_wire(Switched, value)


def engine_error_to_wire(failure: EngineError) -> dict[str, str]:
    return {"code": failure.code.value, "line": failure.line}


# ---- opening a chat ------------------------------------------------------------------------


class OpenRequest(Record):
    """chat/open's params: which chat, on which backend and model (resolved by the client: it
    asked the user, downloaded, found the HEF), and how it is to run. `api_key` is never logged
    (`loggable()`)."""

    chat: str = "new"  # "new", "latest" (-c) or a saved chat's id (--resume)
    take_over: bool = False  # an explicit attach (-c, --resume): take the chat from another terminal
    backend: str = "auto"
    hef_path: str | None = None
    gguf_path: str | None = None
    model_name: str | None = None  # a server's model
    url: str | None = None
    api_key: str | None = None
    context_size: int | None = None
    environ: dict[str, str] = {}  # (class defaults: read through instances, never changed)
    params: dict[str, Any] = {}  # the generation settings, by name
    system_prompt: str = ""
    history: bool = True  # False (--no-history): the engine writes no chat file, log or context
    settings: dict[str, Any] = {}  # the settings the device-context policy reads
    interactive: bool = True  # a REPL (keeps its device context), not -p or a pipe

    def backend_key(self) -> tuple[Any, ...]:
        """What makes two opens need different models (the engine switches, or refuses while busy)."""
        return (self.backend, self.hef_path, self.gguf_path, self.model_name, self.url, self.context_size)

    def keeping_key(self) -> tuple[Any, ...]:
        """What a backend that keeps device contexts (the Hailo's) took as it opened, its folders
        (none with history off): an open that differs needs the backend opened again. The rest of
        its policy (a terminal's chat keeps contexts, a script's not) is set per open: keep_as."""
        return (self.history,)

    def loggable(self) -> dict[str, Any]:
        """The request for the engine's log: no secret, and none of the chat's content (the log
        is the first client's choice; a later --no-history chat must leave nothing in it)."""
        fields = record_to_wire(self)
        if fields.get("api_key"):
            fields["api_key"] = "***"
        fields["system_prompt"] = f"({len(self.system_prompt)} characters)"
        fields["environ"] = sorted(self.environ)  # the names only (OPENAI_API_KEY's value is a secret)
        return fields


def open_request_from_wire(value: Mapping[str, Any]) -> OpenRequest:
    return record_from_wire(OpenRequest, value)


class Opened(Record):
    """chat/open's result: the attach snapshot (the recent turns, the turn in flight so far),
    the chat's status and usage, and whether a reply ended (or went on) while nobody watched;
    `lines` are labelled lines for the terminal to show first (a save that failed meanwhile)."""

    snapshot: Snapshot
    status: Status
    usage: ContextUsage | None = None
    unseen: bool = False
    lines: list[str] = []


def opened_to_wire(opened: Opened) -> dict[str, Any]:
    return record_to_wire(opened)


def opened_from_wire(value: Mapping[str, Any]) -> Opened:
    if not isinstance(value, Mapping):
        raise ProtocolError("Opened: not an object")
    try:
        return Opened(
            snapshot_from_wire(value["snapshot"]),
            status_from_wire(value["status"]),
            usage_from_wire(value["usage"]) if value.get("usage") else None,
            bool(value.get("unseen", False)),
            [str(line) for line in value.get("lines", [])],
        )
    except KeyError as missing:
        raise ProtocolError(f"Opened: no {missing}") from None


def version_line(version: str, pid: int) -> str:
    """What a client of another protocol version says (and exits 1): how to stop the engine."""
    return f"a hailo-repl engine of version {version} runs (pid {pid}): `hailo-repl daemon stop`, then start again"
