"""`SocketEngine`: the Engine (engine.api) of a chat held by the engine process, over its socket.

The REPL uses it as it uses a LocalEngine: requests are method calls, what the engine says comes
as events. The socket is a plain blocking one: a reader thread of its own takes each line as it
comes (the replies, the events), and a request is written under a lock from whichever thread
asks (the REPL's loop, the completer's thread, the load's executor thread) and waited for on
a future. No second event loop is needed, and nothing the REPL's loop does waits for the reader.

What the REPL reads often (status) is kept here from the events, never asked for. Only EOF
means the engine is gone (it may be silent for seconds while HailoRT holds its GIL): then the
chat ends with one line (EngineGone).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import socket
import threading
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hailo_repl.backends.base import Message
from hailo_repl.console import ERROR, INFO, labelled
from hailo_repl.context import ContextUsage
from hailo_repl.daemon import protocol
from hailo_repl.daemon.protocol import Opened, OpenRequest, RemoteError
from hailo_repl.engine.api import (
    Attached,
    Busy,
    ChatChanged,
    EngineError,
    EngineGone,
    EngineNotice,
    EngineState,
    ErrorCode,
    Event,
    Listener,
    ModelState,
    Snapshot,
    Status,
    Switched,
    TurnCompleted,
    TurnEnd,
    TurnEvent,
    TurnMode,
    TurnNotice,
    TurnText,
    UsageChanged,
)
from hailo_repl.engine.socket_turn import Arrival, Arriving, SocketTurn
from hailo_repl.log import logger

if TYPE_CHECKING:
    from hailo_repl.backends import BackendChoice

CONTEXT_SAVED_POLL = 0.05  # seconds between looks at whether the engine's idle save has ended


class ChatHeldElsewhere(Exception):
    """A script's chat/open while a terminal holds the engine's one chat: try again later."""


class EngineEnding(ConnectionRefusedError):
    """The engine reached is ending (`hailo-repl daemon stop`, /quit in its chat): as if none
    listened, so the client waits for it to let go and starts the next one (daemon.spawn)."""


class SocketEngine:
    """The chat in the engine process, over a connected socket (engine.api.Engine)."""

    def __init__(self, sock: socket.socket, request: OpenRequest | None = None, model: str = "", backend: str = ""):
        self.sock = sock
        self.request = request or OpenRequest()
        self.daemon_pid = 0
        self.daemon_version = ""
        self.opened: Opened | None = None  # chat/open's answer: the snapshot shown on arrival
        self._status = Status(
            model=model,
            backend=backend or self.request.backend,
            state=ModelState.LOADING,
            chat="",
            loads_in_background=True,  # the engine process loads it: the prompt is up meanwhile
            params=dict(self.request.params),
        )
        self._listeners: list[Listener] = []
        self._numbers = itertools.count(1)
        self._replies: dict[int, Callable[[dict[str, Any]], None]] = {}
        self._write_lock = threading.Lock()
        self._changed = threading.Condition()  # the state, for load() to wait on
        self._turn_numbers = itertools.count(1)
        self._turn: SocketTurn | None = None
        self._arriving: Arriving | None = None  # the turn in flight at open(), until the REPL takes it
        self._arriving_lock = threading.Lock()
        # A turn's engine number (set on the reader thread) and an interrupt noted before it came
        # (on the loop): one side sees the other's, so a Ctrl+C right after Enter is never lost.
        self._interrupt_lock = threading.Lock()
        self._leaving = False  # this side ends the connection (quit, detach): its EOF is no news
        self._gone: str | None = None  # the line about a connection that ended
        self._ready_said = False
        self._load_error: str | None = None  # the engine's line about a load that failed
        self._usage: ContextUsage | None = None  # the context's fill, as last said
        self._reader = threading.Thread(target=self._read, name="hailo-repl engine socket", daemon=True)
        self._reader.start()

    # ---- the connection --------------------------------------------------------------------

    def _write(self, line: bytes) -> None:
        with self._write_lock:
            self.sock.sendall(line)

    def _send(self, method: str, params: dict[str, Any], on_reply: Callable[[dict[str, Any]], None] | None) -> None:
        if self._gone is not None:
            raise self._gone_error()
        number = next(self._numbers)
        if on_reply is not None:
            self._replies[number] = on_reply
        try:
            self._write(protocol.request(number, method, params))
        except OSError:
            self._replies.pop(number, None)
            raise self._gone_error() from None

    def notify(self, method: str, params: dict[str, Any]) -> None:
        """A request whose answer nobody waits for (turn/flush)."""
        try:
            self._send(method, params, None)
        except EngineError:
            pass

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        taken: Callable[[dict[str, Any]], None] = lambda message: None,
    ) -> Any:
        """A request, from any thread but the reader's; its result (EngineError for an error).
        `taken(reply)` runs on the reader thread before it reads on (what the events after the
        reply change must be in place first). No timeout: only EOF means the engine is gone."""
        if threading.current_thread() is self._reader:  # (it would wait for itself for ever)
            raise RuntimeError(f"{method}: a request from the socket's reader thread (a listener must not ask)")
        answer: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()

        def reply(message: dict[str, Any]) -> None:
            try:
                taken(message)
            finally:
                answer.set_result(message)

        self._send(method, params or {}, reply)
        message = answer.result()
        if "error" in message:
            failure = message["error"] or {}
            raise RemoteError(str(failure.get("code", "")), str(failure.get("line", "")))
        return message.get("result")

    def request_for_user(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """call(), its error as the EngineError the commands show."""
        try:
            return self.call(method, params)
        except RemoteError as refused:
            raise refused.engine_error() from None

    @property
    def gone(self) -> str | None:
        """The line about the connection's end (the engine stopped or killed, the chat taken over), if it ended."""
        return self._gone

    def _gone_error(self) -> EngineError:
        return EngineError(ErrorCode.LOAD_FAILED, self._gone or "the connection to the engine is closed")

    def _read(self) -> None:
        stream = self.sock.makefile("rb")
        try:
            while True:
                line = stream.readline(protocol.MAX_LINE + 1)
                if not line or not line.endswith(b"\n"):
                    break
                self._take(protocol.decode(line))
        except (OSError, ValueError, protocol.ProtocolError) as error:
            if not self._leaving:
                logger.warning("engine connection: {}", error)
        finally:
            self._ended()

    def _take(self, message: dict[str, Any]) -> None:
        """One message from the engine (the reader thread)."""
        if "id" in message and ("result" in message or "error" in message):
            number = message.get("id")
            on_reply = self._replies.pop(number, None) if isinstance(number, int) else None
            if on_reply is not None:
                on_reply(message)
            elif "error" in message:
                logger.warning("engine: {}", message["error"])
            return
        method, params = message.get("method"), message.get("params") or {}
        if method == protocol.CLIENT_DETACHED:
            self._detached(params)
        elif method == protocol.TURN_FINISHED:
            self._turn_finished(params.get("turn"))
        elif method in protocol.EVENT_CLASSES:
            self._event(protocol.event_from_wire(message))

    def _event(self, event: Event) -> None:
        with self._changed:
            self._keep(event)
            self._changed.notify_all()
        if isinstance(event, (TurnText, TurnNotice, TurnCompleted)):
            with self._arriving_lock:
                turn, arriving = self._turn, self._arriving
                if turn is None and arriving is not None and arriving.remote == event.turn:
                    arriving.events.append(event)  # (shown once the REPL takes the turn: arrival())
                    return
            if turn is not None and turn.remote in (None, event.turn) and not turn.finished.done():
                if isinstance(event, TurnCompleted):
                    turn.completed = event
                    self._status.saving = True  # the engine keeps and saves the reply now, until turn/finished
                self._to_turn(turn, event)
            elif isinstance(event, TurnNotice):  # about a turn this terminal did not show
                self._emit(EngineNotice(event.seq, event.line))
            if not isinstance(event, TurnCompleted):
                return
        self._emit(event)

    def _keep(self, event: Event) -> None:
        """What the toolbar and the commands read of the status, from the events."""
        status = self._status
        if isinstance(event, EngineState):
            status.state, status.busy = event.state, event.busy
            status.model, status.backend = event.model, event.backend
            if event.state is ModelState.FAILED:
                self._load_error = event.error
        elif isinstance(event, ChatChanged):
            status.chat = event.chat
        elif isinstance(event, UsageChanged):
            self._usage = event.usage
        elif isinstance(event, TurnCompleted):
            status.chat = event.chat or status.chat
            self._usage = event.usage or self._usage

    def _to_turn(self, turn: SocketTurn, event: TurnEvent) -> None:
        _on_loop(turn.loop, turn.put, event)

    def _turn_finished(self, remote: Any) -> None:
        with self._arriving_lock:
            if self._arriving is not None and self._arriving.remote == remote:
                self._arriving.finished = True
                return
        turn = self._turn
        if turn is None or turn.remote != remote:
            return
        self._turn = None
        completed = turn.completed or TurnCompleted(0, turn.id, TurnEnd.DONE)
        _on_loop(turn.loop, turn.finish, completed)
        self._refresh_status()

    def _refresh_status(self) -> None:
        """Ask for the status after a turn (saving, unsaved), answered on the reader thread."""

        def keep(message: dict[str, Any]) -> None:
            if isinstance(message.get("result"), dict):
                with self._changed:
                    status = protocol.status_from_wire(message["result"])
                    self._status.saving, self._status.unsaved = status.saving, status.unsaved

        try:
            self._send(protocol.CHAT_GET, {"what": "status"}, keep)
        except EngineError:
            pass

    def _emit(self, event: Event) -> None:
        for listener in list(self._listeners):
            listener(event)

    def _detached(self, params: dict[str, Any]) -> None:
        """The engine lets this terminal go: one line, then the chat ends."""
        reason, by = params.get("reason"), params.get("by") or {}
        leaving, self._leaving = self._leaving, True
        if reason == protocol.QUIT and (leaving or not self._ready_said):
            return  # (its own /quit, or a model that failed to load: said already)
        if reason == protocol.TAKEN_OVER:
            label, code = INFO, 0
            text = (
                f"Chat {self._status.chat} was taken over by {by.get('tty', '?')} (pid {by.get('pid', '?')}); "
                "it goes on there."
            )
        elif reason == protocol.TOO_FAR_BEHIND:
            label, code = ERROR, 1
            text = "This terminal fell too far behind the reply and was let go; `hailo-repl -c` attaches again."
        elif reason == protocol.QUIT or (reason == protocol.STOPPING and by):  # `hailo-repl daemon stop`
            label, code = INFO, 0
            chat = f"chat {self._status.chat} is saved" if self._status.chat else "the chat ends"
            text = f"The hailo-repl engine (pid {self.daemon_pid}) was stopped; {chat}."
        else:
            label, code = INFO, 1
            why = "SIGTERM" if reason == protocol.STOPPING else reason
            text = f"The hailo-repl engine (pid {self.daemon_pid}) is stopping ({why})."
        self._gone = text
        self._end_turn(None)
        self._emit(EngineGone(0, labelled(label, text), code))

    def _ended(self) -> None:
        """EOF: the engine is gone (killed), unless this side was leaving."""
        with self._changed:
            if self._gone is None:
                self._gone = (
                    f"the hailo-repl engine (pid {self.daemon_pid}) ended; chat {self._status.chat or '(new)'} "
                    "is saved up to its last finished turn; `hailo-repl -c` continues it"
                )
                leaving = self._leaving
            else:
                leaving = True
            self._changed.notify_all()
        for on_reply in list(self._replies.values()):
            on_reply({"error": {"code": protocol.NOT_OPEN, "line": self._gone}})
        self._replies.clear()
        if leaving:
            self._end_turn(None)
            return
        logger.error("engine connection lost: {}", self._gone)
        shown_by_turn = self._end_turn(self._gone)
        if self._ready_said:  # (a load waiting says it itself)
            self._emit(EngineGone(0, "" if shown_by_turn else labelled(ERROR, self._gone), 1))

    def _end_turn(self, line: str | None) -> bool:
        """The turn in flight ends (the line as its error, if any); whether one was on screen."""
        turn, self._turn = self._turn, None
        if turn is None or turn.finished.done():
            return False
        completed = TurnCompleted(0, turn.id, TurnEnd.ERROR if line else TurnEnd.INTERRUPTED, error=line)
        _on_loop(turn.loop, turn.finish, completed)
        return line is not None

    def close(self) -> None:
        self._leaving = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    # ---- opening -------------------------------------------------------------------------------

    def initialize(self, tty: str | None = None) -> dict[str, Any]:
        """The handshake (RemoteError VERSION with its one line if the engine speaks another)."""
        about = {"pid": os.getpid(), "tty": tty or _tty_name()}
        hello = self.call(protocol.INITIALIZE, {"v": protocol.PROTOCOL_VERSION, "client": about})
        self.daemon_pid, self.daemon_version = int(hello["daemon_pid"]), str(hello["version"])
        return dict(hello)

    def open(self) -> Opened:
        """chat/open (the table of ENGINE.md §4); EngineError with the one line if refused,
        EngineEnding from an engine on its way out."""

        def taken(message: dict[str, Any]) -> None:  # (on the reader thread: before the events after it)
            if "result" not in message:
                return
            opened = self.opened = protocol.opened_from_wire(message["result"])
            with self._changed:
                opened.status.loads_in_background = True
                self._status, self._usage = opened.status, opened.usage
                self._changed.notify_all()
            snapshot = opened.snapshot
            if snapshot.turn is not None:
                # The reply so far shows at once: its pieces are not counted, or the toolbar's rate
                # (pieces over the seconds since the first) would read thousands a second.
                replayed = [
                    TurnText(event.seq, event.turn, event.text, 0) if isinstance(event, TurnText) else event
                    for event in snapshot.events
                ]
                with self._arriving_lock:
                    self._arriving = Arriving(snapshot.turn, snapshot.question, replayed)

        try:
            self.call(protocol.CHAT_OPEN, protocol.record_to_wire(self.request), taken)
        except RemoteError as refused:
            if refused.code == protocol.ENDING:
                raise EngineEnding(refused.line) from None
            if refused.code == protocol.HELD_ELSEWHERE and not self.request.interactive:
                raise ChatHeldElsewhere(refused.line) from None
            raise EngineError(ErrorCode.LOAD_FAILED, refused.line) from None
        assert self.opened is not None
        self._tell_state(self._listeners)
        return self.opened

    def _tell_state(self, listeners: list[Listener]) -> None:
        """The state and usage as they are now, to `listeners` (one that subscribes late too)."""
        status, usage = self._status, self._usage
        for listener in listeners:
            listener(EngineState(0, status.state, status.model, status.backend, status.busy))
            if usage is not None:
                listener(UsageChanged(0, usage))

    def arrival(self) -> Arrival:
        """What a terminal arriving in the chat shows first (call on the REPL's loop, after
        open()): the lines about it, the recent turns, and the turn in flight, whose events so
        far come first and then the live ones, with no gap and no repeat."""
        opened = self.opened
        assert opened is not None, "open() first"
        lines = self._arrival_lines()
        loop = asyncio.get_running_loop()
        with self._arriving_lock:
            arriving, self._arriving = self._arriving, None
            if arriving is None:
                return Arrival(lines, opened.snapshot.recent)
            turn = SocketTurn(self, next(self._turn_numbers), loop, arriving.question)
            turn.remote = arriving.remote
            for event in arriving.events:
                if isinstance(event, (TurnText, TurnNotice, TurnCompleted)):
                    turn.put(event)
                    turn.completed = event if isinstance(event, TurnCompleted) else turn.completed
            if arriving.finished:
                turn.finish(turn.completed or TurnCompleted(0, turn.id, TurnEnd.DONE))
            else:
                self._turn = turn
        return Arrival(lines, opened.snapshot.recent, turn)

    def _arrival_lines(self) -> list[str]:
        opened = self.opened
        if opened is None:
            return []
        lines = list(opened.lines)
        if opened.unseen:
            chat = opened.status.chat
            lines.append(labelled(INFO, f"Chat {chat}'s reply went on while you were away; /clear starts a new chat."))
        return lines

    # ---- engine.api.Engine -------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        """`listener` hears the state now, then every event (on the reader thread)."""
        self._listeners.append(listener)
        if self.opened is not None:
            self._tell_state([listener])

    def status(self) -> Status:
        return self._status

    def load(self) -> None:
        """chat/open, then wait for the engine's model to be ready (in a thread: the REPL's
        background load). EngineError LOAD_FAILED with the line to show."""
        if self.opened is None:
            self.open()
        with self._changed:
            while self._status.state is ModelState.LOADING and self._gone is None:
                self._changed.wait()
            if self._status.state is ModelState.READY:
                self._ready_said = True
                return
        raise EngineError(ErrorCode.LOAD_FAILED, self._load_error or self._gone or "load failed")

    def start_turn(self, text: str, mode: TurnMode = TurnMode.MESSAGE) -> SocketTurn:
        """turn/start, answered on the reader thread: the turn's events are taken as they come."""
        loop = asyncio.get_running_loop()
        turn = self._turn = SocketTurn(self, next(self._turn_numbers), loop, text)

        def started(message: dict[str, Any]) -> None:
            if "error" in message:
                failure = message["error"] or {}
                line = str(failure.get("line", "the engine refused the message"))
                if self._turn is turn:
                    self._turn = None
                loop.call_soon_threadsafe(turn.finish, TurnCompleted(0, turn.id, TurnEnd.ERROR, error=line))
                return
            with self._interrupt_lock:
                turn.remote = int(message["result"]["turn"])
                interrupt_at = turn.interrupt_at
            if interrupt_at is not None:
                self.notify(protocol.TURN_INTERRUPT, {"turn": turn.remote, "shown_seq": interrupt_at[0]})

        try:
            self._send(protocol.TURN_START, {"text": text, "mode": mode.value}, started)
        except EngineError as gone:
            self._turn = None
            turn.finish(TurnCompleted(0, turn.id, TurnEnd.ERROR, error=gone.line))
        return turn

    def run_turn(
        self, text: str, on_event: Callable[[TurnEvent], None], mode: TurnMode = TurnMode.MESSAGE
    ) -> TurnCompleted:
        """-p and pipes through the engine process: the turn on a loop of this thread's."""

        async def run() -> TurnCompleted:
            turn = self.start_turn(text, mode)
            try:
                while True:
                    event = await turn.next_event()
                    on_event(event)
                    if isinstance(event, TurnCompleted):
                        break
                finished = await turn.finished
                for line in turn.late_notices():  # (its save's: "[Error] Cannot save the chat …")
                    on_event(TurnNotice(0, turn.id, line))
                return finished
            except BaseException:
                self.interrupt(turn.id, None)
                raise

        return asyncio.run(run())

    def interrupt(self, turn: int, shown_seq: int | None) -> None:
        """turn/interrupt, sent at once (the engine answers it before anything queued)."""
        current = self._turn
        if current is None or current.id != turn:
            return
        with self._interrupt_lock:
            remote = current.remote
            if remote is None:  # turn/start not answered yet: its answer sends it
                current.interrupt_at = (shown_seq,)
                return
        self.notify(protocol.TURN_INTERRUPT, {"turn": remote, "shown_seq": shown_seq})

    def hang_up(self) -> None:
        """The terminal is gone: leave the chat; the engine finishes the reply and keeps it."""
        self.detach()

    def detach(self) -> None:
        """chat/detach: the chat and its reply go on in the engine; this connection ends."""
        if self._gone is not None or self._leaving:
            return
        self._leaving = True
        self.notify(protocol.CHAT_DETACH, {})
        self._end_turn(None)
        self.close()

    def clear(self) -> None:
        self.request_for_user(protocol.CHAT_CLEAR)

    def undo(self) -> tuple[str | None, list[str]]:
        answer = self.request_for_user(protocol.CHAT_UNDO)
        return answer["text"], list(answer["lines"])

    def system(self, text: str | None = None) -> str:
        return str(self.request_for_user(protocol.CHAT_SYSTEM, {"text": text})["text"])

    def set(self, name: str, value: object) -> None:
        self.request_for_user(protocol.CHAT_SET, {"name": name, "value": value})
        self._status.params[name] = value

    def load_file(self, path: Path) -> int:
        return int(self.request_for_user(protocol.CHAT_LOAD, {"path": str(path.absolute())})["messages"])

    def save(self, path: Path | None, directory: Path, force: bool = False) -> tuple[Path, int]:
        where = None if path is None else str(path.absolute())
        params = {"path": where, "directory": str(directory.absolute()), "force": force}
        answer = self.request_for_user(protocol.CHAT_SAVE, params)
        return Path(answer["path"]), int(answer["messages"])

    def attach_file(self, path: Path) -> Attached:
        answer = self.request_for_user(protocol.CHAT_ATTACH_FILE, {"path": str(path.absolute())})
        return protocol.attached_from_wire(answer)

    def resume(self, chat_id: str) -> None:
        self.request_for_user(protocol.CHAT_RESUME, {"id": chat_id})

    def list_models(self) -> list[str]:
        return [str(name) for name in self.request_for_user(protocol.MODEL_LIST)["models"]]

    def prepare_switch(self, name: str) -> str:
        return str(self.request_for_user(protocol.MODEL_PREPARE, {"name": name})["name"])

    def switch_model(self, name: str) -> Switched:
        return protocol.switched_from_wire(self.request_for_user(protocol.MODEL_SWITCH, {"name": name}))

    def keep_context(self) -> None:
        self.request_for_user(protocol.CHAT_KEEP_CONTEXT)

    def note_activity(self) -> None:
        """(The engine keeps the device context on its own clock: a save there costs typing nothing.)"""

    async def keep_context_when_idle(self, say_first: Callable[[str], Awaitable[None]]) -> None:
        """(The engine process does it, and says so with an EngineNotice.)"""
        await asyncio.Event().wait()

    async def context_saved(self) -> None:
        while self._status.busy is Busy.SAVING_CONTEXT and self._gone is None:
            await asyncio.sleep(CONTEXT_SAVED_POLL)

    def usage(self) -> ContextUsage:
        return protocol.usage_from_wire(self.request_for_user(protocol.CHAT_GET, {"what": "usage"}))

    def stats_text(self) -> str:
        return str(self.request_for_user(protocol.CHAT_GET, {"what": "stats"}))

    def last_question(self) -> str | None:
        answer = self.request_for_user(protocol.CHAT_GET, {"what": "last_question"})
        return None if answer is None else str(answer)

    def messages(self) -> list[Message]:
        return list(self.request_for_user(protocol.CHAT_GET, {"what": "messages"}))

    def snapshot(self) -> Snapshot:
        return protocol.snapshot_from_wire(self.request_for_user(protocol.CHAT_GET, {"what": "snapshot"}))

    def quit(self, say: Callable[[str], None] | None = None) -> None:
        """The chat ends in this terminal (/quit, Ctrl+D): this connection leaves it (chat/detach);
        the engine process keeps the model loaded for keep-alive, for the next chat."""
        self.detach()

    def stop_engine(self) -> None:
        """chat/quit (blocks): the engine stops the reply, keeps the device context, releases the
        model and exits. After a detach or a lost connection there is nothing to do."""
        if self._gone is not None or self._leaving:
            return
        self._leaving = True
        try:
            self.call(protocol.CHAT_QUIT)
        except (RemoteError, EngineError) as refused:
            logger.info("chat/quit: {}", refused)
        self.close()


# What of the settings the engine process's device-context policy reads (hailo_keeping.keeping_policy).
KEEPING_SETTINGS = ("device-context-budget", "device-context-for-scripts")
# What of the environment picks a remote backend's server and key (servers.resolve_endpoint).
SERVER_ENVIRONMENT = ("OLLAMA_HOST", "OPENAI_BASE_URL", "OPENAI_API_KEY")


def open_request(
    choice: BackendChoice,
    settings: Mapping[str, Any],
    chat: str = "new",
    take_over: bool = False,
    interactive: bool = True,
) -> OpenRequest:
    """chat/open's params for the chat the command line asks for: `choice` as the client resolved
    it (the model picked, downloaded, the HEF found), `settings` the ones in effect; `chat` is
    "new", "latest" (-c) or an id (--resume), which also take the chat over from another terminal."""
    from hailo_repl.settings import GENERATION_SETTINGS

    return OpenRequest(
        chat=chat,
        take_over=take_over,
        backend=choice.backend,
        hef_path=_absolute_if_a_file(choice.hef_path),
        gguf_path=str(choice.gguf_path.absolute()) if choice.gguf_path else None,
        model_name=choice.model_name,
        url=choice.url,
        api_key=choice.api_key,
        context_size=choice.context_size,
        environ={name: choice.environ[name] for name in SERVER_ENVIRONMENT if name in choice.environ},
        params={setting.name: settings[setting.name] for setting in GENERATION_SETTINGS},
        system_prompt=settings["system-prompt"],
        history=bool(settings["history"]),
        settings={name: settings[name] for name in KEEPING_SETTINGS},
        interactive=interactive,
    )


def _absolute_if_a_file(value: str | None) -> str | None:
    """A HEF's path as the engine process (cwd /) finds it; a model's name as it is."""
    if value and Path(value).expanduser().is_file():
        return str(Path(value).expanduser().absolute())
    return value


def _on_loop(loop: asyncio.AbstractEventLoop, work: Callable[..., object], *args: object) -> None:
    """`work(*args)` on `loop`, from the reader thread (nothing once that loop has closed)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(work, *args)


def _tty_name() -> str:
    for fd in (0, 1, 2):
        try:
            return os.ttyname(fd).removeprefix("/dev/")
        except OSError:
            continue
    return "no terminal"


def connect_and_open(
    path: Path | str, request: OpenRequest, model: str = "", backend: str = "", listeners: tuple[Listener, ...] = ()
) -> SocketEngine:
    """connect(), then chat/open, `listeners` hearing every event from the start: a terminal's way
    into its chat (EngineEnding, a ConnectionRefusedError, where the engine is on its way out;
    EngineError where refused)."""
    engine = connect(path, request, model, backend)
    try:
        for listener in listeners:
            engine.subscribe(listener)
        engine.open()
    except BaseException:
        engine.close()
        raise
    return engine


def connect(path: Path | str, request: OpenRequest | None = None, model: str = "", backend: str = "") -> SocketEngine:
    """A SocketEngine on the engine's socket at `path`, past `initialize` (OSError if nothing
    listens there; RemoteError VERSION with its one line if the engine speaks another version)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        raise
    engine = SocketEngine(sock, request, model, backend)
    try:
        engine.initialize()
    except BaseException:
        engine.close()
        raise
    return engine
