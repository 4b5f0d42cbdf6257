"""`EngineServer`: the engine process's side of the socket (docs: ENGINE.md §3-§5).

The contract, for the process that owns it (hailo_repl.daemon.__main__ / lifetime):

    server = EngineServer(open_engine=open_local_engine, expected_uid=os.getuid())
    task = asyncio.ensure_future(server.serve(sock))  # sock: an AF_UNIX socket, bound and listening
    await server.stop_requested.wait()                # set by chat/quit, daemon/stop, or shutdown()
    await server.shutdown("stopping")                 # idempotent; see below
    task.cancel()

- `EngineServer(open_engine, expected_uid=None, on_stopping=None)`.
  `open_engine(request: protocol.OpenRequest, say: Callable[[str], None]) -> LocalEngine` builds
  the backend, the Chat and the LocalEngine over it, *not loaded* (the server loads it); `say`
  takes lines for the terminal ("no Hailo device; using llama.cpp"). It runs in an executor thread
  (imports and opening a device hold the GIL); it raises BackendError / ModelNotFoundError /
  EngineError for a line to show. The real one is `hailo_repl.daemon.opening.open_local_engine`.
  `expected_uid`: the uid a peer must have (SO_PEERCRED); None means this process's (os.getuid()).
  `on_stopping()`: called once as the engine starts to end (chat/quit, daemon/stop, shutdown()),
  before the seconds its end may take: the owner removes the socket's file there, so a new client
  waits for the next engine. `stopping` is True from then on; a chat/open is refused ENDING.
- `async serve(sock: socket.socket) -> None`: serve clients on `sock` until cancelled or shut
  down (asyncio.start_unix_server(sock=sock, limit=protocol.MAX_LINE)).
- `async shutdown(reason: str = "stopping") -> None`: stop the reply in flight (kept
  interrupted), `engine.quit()` in a thread (keeps the device context, releases the model),
  `client/detached{reason}` to every client, close them, stop accepting. Idempotent. `reason` is
  one of protocol.DETACH_REASONS ("stopping" for SIGTERM, "idle" for the keep-alive, "quit").
- `stop_requested: asyncio.Event`: set when the process should exit (chat/quit, daemon/stop, a
  model that failed to load, shutdown()). The owner then calls shutdown() (a no-op if done) and exits.
- `idle_seconds() -> float | None`: seconds since the last client detached, with no turn running
  and no request under way; None while a client is attached or the engine is busy. With no
  engine opened yet: seconds since the server started serving.
- `last_save_failed: bool` (property): the chat's last autosave failed; the keep-alive must not
  exit then (the latest turns are in no file).
- `status() -> dict`: {"pid", "version", "model", "backend", "state", "chat", "attached": tty or
  None, "idle_seconds", "turn_running", "unsaved"}; the answer to `daemon/status` too.

One chat per engine process (v1), one controlling client at a time (ENGINE.md §4's table).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hailo_repl import __version__
from hailo_repl.backends.base import KeepsContext
from hailo_repl.console import INFO, labelled
from hailo_repl.context import RECENT_TURNS, split_turns
from hailo_repl.daemon import protocol
from hailo_repl.daemon.connection import BACKLOG_LIMIT, Client
from hailo_repl.daemon.opening import asking_for, keeping_of
from hailo_repl.daemon.protocol import Opened, OpenRequest, RemoteError
from hailo_repl.engine.api import (
    EngineError,
    EngineNotice,
    EngineState,
    ErrorCode,
    Event,
    ModelState,
    Snapshot,
    TurnCompleted,
    TurnMode,
    TurnNotice,
)
from hailo_repl.engine.local import LocalEngine, LocalTurn
from hailo_repl.engine.turns import joined
from hailo_repl.log import logger
from hailo_repl.sessions import SessionStore

DRAIN_WAIT_SECONDS = 1.0  # what was said before a call that holds the GIL: waited for this long at most
MISSED_LINES = 20  # lines about the chat kept for the next terminal to attach (a failed save's)

OpenEngine = Callable[[OpenRequest, Callable[[str], None]], LocalEngine]
Handler = Callable[[Client, dict[str, Any]], Awaitable[Any]]


class WireTurn:
    """The turn in flight as the clients were sent it: what a terminal attaching now is
    replayed (so the replay and the live events meet with no gap and no repeat)."""

    def __init__(self, local: LocalTurn, question: str):
        self.local = local
        self.id = local.id
        self.question = question
        self.events: list[Event] = []


class EngineServer:
    """The engine process's clients, its one chat (a LocalEngine) and the turn in flight."""

    def __init__(
        self,
        open_engine: OpenEngine,
        expected_uid: int | None = None,
        on_stopping: Callable[[], None] | None = None,
    ):
        self.open_engine = open_engine
        self.expected_uid = os.getuid() if expected_uid is None else expected_uid
        self.on_stopping = on_stopping
        self.stopping = False  # the engine ends: no chat opens in it any more
        self.engine: LocalEngine | None = None
        # What a terminal asks for to get the engine's model as it is (None: unknown, any open loads its own).
        self.request: OpenRequest | None = None
        self.stop_requested = asyncio.Event()
        self.backlog_limit = BACKLOG_LIMIT
        self.clients: set[Client] = set()
        self.controller: Client | None = None  # the terminal the chat is open in
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening = asyncio.Lock()
        self._releasing = asyncio.Lock()
        self._loading: asyncio.Future[None] | None = None
        self._idle_saves: asyncio.Future[None] | None = None
        self._turn: WireTurn | None = None  # the turn in flight, until its TurnCompleted is sent
        self._pumps: set[asyncio.Future[None]] = set()  # turns being sent (to their save)
        self._working = 0  # requests under way
        self._idle_since = time.monotonic()
        self._unseen = False  # a reply went on, or ended, while no terminal watched
        self._missed: list[str] = []  # lines said while no terminal watched
        self._tasks: set[asyncio.Future[Any]] = set()
        self._stopped_by: dict[str, Any] | None = None  # who asked daemon/stop (the terminal in the chat is told)
        handlers: dict[str, Handler] = {
            protocol.INITIALIZE: self._initialize,
            protocol.CHAT_OPEN: self._open,
            protocol.TURN_START: self._turn_start,
            protocol.TURN_INTERRUPT: self._turn_interrupt,
            protocol.TURN_FLUSH: self._turn_flush,
            protocol.CHAT_DETACH: self._detach,
            protocol.CHAT_QUIT: self._quit,
            protocol.DAEMON_STOP: self._stop,
            protocol.DAEMON_STATUS: self._status,
            protocol.CHAT_GET: self._get,
        }
        self.handlers = handlers | self._engine_handlers()
        # Answered in the reader, never queued behind a request under way (Jupyter's control channel).
        self.at_once = {protocol.TURN_INTERRUPT, protocol.TURN_FLUSH, protocol.DAEMON_STATUS}
        # Asking about the engine is no work on the chat: the idle time (keep-alive's, and what
        # `daemon status` shows) goes on through it.
        self.not_work = {protocol.INITIALIZE, protocol.DAEMON_STATUS}
        # Run to their end even if the asker goes meanwhile (a task of the server's, not the connection's).
        self.run_to_the_end = {protocol.CHAT_OPEN, protocol.CHAT_QUIT, protocol.DAEMON_STOP}

    def _later(self, work: Awaitable[Any]) -> None:
        """`work` as a task of its own, after the answer under way is sent (held until done:
        the loop keeps only weak references to tasks)."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- the process's owner ---------------------------------------------------------------

    async def serve(self, sock: socket.socket) -> None:
        """Serve clients on `sock` (bound and listening) until shut down or cancelled."""
        self._loop = asyncio.get_running_loop()
        self._idle_since = time.monotonic()
        self._server = await asyncio.start_unix_server(self._connected, sock=sock, limit=protocol.MAX_LINE)
        try:
            await self._server.serve_forever()
        except asyncio.CancelledError:
            pass
        finally:
            self._server.close()

    async def shutdown(self, reason: str = protocol.STOPPING) -> None:
        """Stop the reply (kept interrupted), keep the device context and release the model, tell
        every client why and close it, and stop serving. Idempotent."""
        self._begin_stopping()
        async with self._opening:  # an open under way ends first: the engine it makes is released too
            await self._stop_engine()
        why = {"by": self._stopped_by} if self._stopped_by and reason == protocol.STOPPING else {}
        # Each client is told why and handed what is left; one that does not read is not waited
        # out (the next engine waits for this one's end): it gets what fits, then its socket goes.
        closing = {asyncio.ensure_future(client.close(reason, **why)): client for client in list(self.clients)}
        if closing:
            _, stalled = await asyncio.wait(closing, timeout=DRAIN_WAIT_SECONDS)
            for close in stalled:
                close.cancel()
                closing[close].writer.transport.abort()  # (it reads EOF, if it ever reads: the engine ended)
        if self._server is not None:
            self._server.close()
        self.stop_requested.set()

    def _begin_stopping(self) -> None:
        """No new client, no chat opened from now on: the end may take seconds (a device context
        kept), and a device opened again meanwhile would be the ending engine's second."""
        if self.stopping:
            return
        self.stopping = True
        if self._server is not None:
            self._server.close()
        if self.on_stopping is not None:
            self.on_stopping()

    def _refuse_if_stopping(self) -> None:
        if self.stopping:
            raise RemoteError(protocol.ENDING, "The hailo-repl engine is stopping.")

    def idle_seconds(self) -> float | None:
        """Seconds since the chat was left alone (no terminal, no turn, no request); None while not."""
        if self.controller is not None or self._turn is not None or self._pumps or self._working:
            return None
        if self._loading is not None and not self._loading.done():
            return None
        return time.monotonic() - self._idle_since

    @property
    def last_save_failed(self) -> bool:
        return self.engine is not None and self.engine.status().unsaved

    def status(self) -> dict[str, Any]:
        engine = self.engine
        status = engine.status() if engine is not None else None
        idle = self.idle_seconds()
        return {
            "pid": os.getpid(),
            "version": __version__,
            "model": status.model if status else None,
            "backend": status.backend if status else None,
            "state": status.state.value if status else None,
            "chat": status.chat if status else None,
            "attached": self.controller.tty if self.controller is not None else None,
            "idle_seconds": None if idle is None else round(idle, 1),
            "turn_running": self._turn is not None,
            "unsaved": bool(status and status.unsaved),
        }

    # ---- clients -----------------------------------------------------------------------------

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        except (OSError, AttributeError, struct.error):
            pid, uid = 0, -1
        if uid != self.expected_uid:
            logger.warning("engine: refused a connection from uid {} (pid {})", uid, pid)
            writer.close()
            return
        client = Client(self, reader, writer, pid)  # (it reads until EOF)
        self.clients.add(client)
        await client.read()

    def client_gone(self, client: Client) -> None:
        self.clients.discard(client)
        if client is self.controller:
            self.controller = None
            if self._turn is not None:
                self._unseen = True  # the reply goes on (a detach never stops it)
            else:
                self._idle_since = time.monotonic()

    async def dispatch(self, client: Client, number: Any, method: str, params: dict[str, Any]) -> None:
        handler = self.handlers.get(method)
        if handler is None:
            client.send(protocol.error(number, protocol.BAD_REQUEST, f"no such request: {method}"))
            return
        if not client.initialized and method != protocol.INITIALIZE:
            client.send(protocol.error(number, protocol.BAD_REQUEST, "initialize first"))
            return
        answering = self._answer(handler, client, number, method, params)
        if method not in self.run_to_the_end:
            await answering
            return
        # The engine's opening and ending finish whoever asked: a client that goes meanwhile (its
        # connection's task is cancelled) must not leave a device opened or a stop half done.
        task = asyncio.ensure_future(answering)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await asyncio.shield(task)

    async def _answer(self, handler: Handler, client: Client, number: Any, method: str, params: dict[str, Any]) -> None:
        working = method not in self.not_work
        self._working += working
        try:
            answer = await handler(client, params)
        except RemoteError as refused:
            client.send(protocol.error(number, refused.code, refused.line))
        except EngineError as refused:
            client.send(protocol.error(number, refused.code.value, refused.line))
        except (KeyError, TypeError, ValueError, protocol.ProtocolError) as wrong:
            client.send(protocol.error(number, protocol.BAD_REQUEST, f"{method}: bad params ({wrong})"))
        except Exception as bug:
            logger.exception("engine: {} failed", method)
            client.send(protocol.error(number, protocol.BAD_REQUEST, f"unexpected {type(bug).__name__}: {bug}"))
        else:
            if number is not None and not client.closed:
                client.send(protocol.result(number, answer))
        finally:
            self._working -= working
            if working and self.controller is None and self._turn is None:
                self._idle_since = time.monotonic()

    # ---- events ------------------------------------------------------------------------------

    def _from_engine(self, event: Event) -> None:
        """An engine's listener, called on any thread: the event goes out from the loop. A turn's
        end is sent by its pump instead, after the turn's last text (the engine says it at once)."""
        if isinstance(event, TurnCompleted):
            return
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # (a loop that has closed)
            self._loop.call_soon_threadsafe(self._broadcast, event)

    def _broadcast(self, event: Event) -> None:
        if self.controller is not None:  # (the chat's events are its terminal's; a status connection hears none)
            self.controller.send(protocol.event_line(event))
            return
        # Nobody watches: what the next terminal to arrive is told it missed.
        if isinstance(event, (TurnNotice, EngineNotice)):
            self._missed = [*self._missed, event.line][-MISSED_LINES:]
        if isinstance(event, TurnCompleted):
            self._unseen = True

    async def _drained(self) -> None:
        """Until the chat's terminal has been handed what was said: before a call that holds the
        GIL. One that does not read is waited for DRAIN_WAIT_SECONDS at most (it is dropped once
        too far behind; the chat never waits for it); no other client is waited for."""
        controller = self.controller
        if controller is not None:
            drained = asyncio.ensure_future(controller.drained())
            await asyncio.wait([drained], timeout=DRAIN_WAIT_SECONDS)
            drained.cancel()

    # ---- initialize, open ----------------------------------------------------------------------

    async def _initialize(self, client: Client, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("v") != protocol.PROTOCOL_VERSION:
            self._later(client.close())
            raise RemoteError(protocol.VERSION, protocol.version_line(__version__, os.getpid()))
        about = params.get("client") or {}
        client.pid = int(about.get("pid") or client.pid)
        client.tty = str(about.get("tty") or "?")
        client.initialized = True
        return {"v": protocol.PROTOCOL_VERSION, "daemon_pid": os.getpid(), "version": __version__}

    async def _open(self, client: Client, params: dict[str, Any]) -> dict[str, Any]:
        """chat/open: ENGINE.md §4's table. One controller; an explicit attach takes over; a plain
        open never takes another terminal's chat."""
        request = protocol.open_request_from_wire(params)
        logger.info("engine: chat/open from {}: {}", client.name(), request.loggable())
        self._refuse_if_stopping()
        async with self._opening:
            self._refuse_if_stopping()
            if self.engine is None:
                await self._new_engine(client, request)
            else:
                await self._reopen(client, request)
            if client.closed:  # (it went meanwhile: the chat stays in the engine, idle, for the next terminal)
                logger.info("engine: {} left during its chat/open", client.name())
                raise RemoteError(protocol.NOT_OPEN, "gone")
            return self._attach(client)

    async def _new_engine(self, client: Client, request: OpenRequest) -> None:
        loop = asyncio.get_running_loop()

        def say(line: str) -> None:  # ("No Hailo device; using llama.cpp …", whom the Hailo waits for)
            loop.call_soon_threadsafe(self._tell_opening, client, labelled(INFO, line))

        try:
            engine = await loop.run_in_executor(None, self.open_engine, request, say)
        except EngineError:
            raise
        except Exception as failure:
            if not _is_for_the_user(failure):
                logger.opt(exception=failure).error("engine: opening the chat failed")
            raise EngineError(ErrorCode.LOAD_FAILED, str(failure)) from None
        self.engine, self.request = engine, request
        engine.subscribe(self._from_engine)
        try:
            await self._go_to_chat(engine, request.chat)
        except BaseException:
            await loop.run_in_executor(None, engine.quit)
            self.engine = None
            raise
        self._loading = asyncio.ensure_future(self._load(engine))
        self._idle_saves = asyncio.ensure_future(engine.keep_context_when_idle(self._say_first))

    def _tell_opening(self, client: Client, line: str) -> None:
        """A line about the chat's opening, to the terminal opening it as it comes (the open may
        wait for the Hailo-10H); the next to arrive is told it if that one has gone."""
        if client.closed:
            self._missed = [*self._missed, line][-MISSED_LINES:]
        else:
            client.send(protocol.event_line(EngineNotice(0, line)))

    async def _go_to_chat(self, engine: LocalEngine, chat: str) -> None:
        """The chat asked for: a saved one resumed, or the latest saved (-c) if there is one."""
        if chat == "new":
            return
        if chat == "latest":
            store = engine.chat.store
            chats = store.chats() if store is not None else []
            if not chats:
                raise EngineError(ErrorCode.NOT_FOUND, "No saved chats to continue.")
            chat = chats[0].id
        await asyncio.get_running_loop().run_in_executor(None, engine.resume, chat)

    async def _reopen(self, client: Client, request: OpenRequest) -> None:
        """An open while the engine holds chat X."""
        engine = self.engine
        assert engine is not None
        chat = engine.chat.session_id
        same = request.chat in ("latest", chat)
        other = self.controller if self.controller is not client else None
        if other is not None:
            if not request.take_over:
                idle = int((time.monotonic() - other.active_at) // 60)
                where = f"Chat {chat} is open in {other.tty} ({idle} min idle)"
                if not request.interactive:  # -p, a pipe: the engine holds one chat; it waits for that one
                    raise RemoteError(protocol.HELD_ELSEWHERE, f"{where}; waiting until it is left there")
                raise RemoteError(protocol.HELD_ELSEWHERE, f"{where}; `hailo-repl -c` takes it over here")
            if not same:
                raise EngineError(
                    ErrorCode.BUSY,
                    f"Chat {chat} is open in {other.tty} and the engine holds one chat: "
                    "`hailo-repl -c` takes it over here",
                )
            logger.info("engine: {} takes chat {} over from {}", client.name(), chat, other.name())
            self.controller = None
            other.drop(protocol.TAKEN_OVER, by={"pid": client.pid, "tty": client.tty})  # (never waited for)
            return
        if self._turn is not None or self._unseen:
            if request.interactive and (request.chat == "new" or same):
                return  # attach X: its reply went on while nobody watched (a script's -p never lands in X)
            if self._turn is not None and not request.interactive:  # -p, a pipe: it waits for that reply's end
                raise RemoteError(
                    protocol.HELD_ELSEWHERE, f"Chat {chat}'s reply goes on in the engine process; waiting for its end"
                )
            if self._turn is not None:
                raise EngineError(ErrorCode.BUSY, f"Chat {chat}'s reply is still running; `hailo-repl -c` attaches it")
        if same:
            await self._as_this_open_asks(engine, request)
            return
        if self.request is None or self._needs_new_backend(engine, self.request, request):
            logger.info("engine: another model or device-context policy asked for: the engine opens it")
            await self._stop_engine()
            await self._new_engine(client, request)
            return
        # X's context is kept (as /clear does) under X's history setting; then this open's own
        # setting holds: a --no-history chat on a warm engine is saved nowhere, and the reverse.
        await self._blocking(engine.keep_context)
        await self._as_this_open_asks(engine, request)
        if request.chat == "new":
            await asyncio.get_running_loop().run_in_executor(None, self._fresh_chat, engine, request)
        else:
            await self._go_to_chat(engine, request.chat)

    async def _as_this_open_asks(self, engine: LocalEngine, request: OpenRequest) -> None:
        """From now on the chat keeps device contexts as this open asks (a REPL's after a
        script's) and is saved as it asks: nowhere with --no-history."""
        backend = engine.chat.backend
        if isinstance(backend, KeepsContext) and request.settings:
            await self._blocking(backend.keep_as, keeping_of(request))
        store = engine.chat.store
        if store is not None:
            engine.chat.store = SessionStore(store.directory, writable=request.history)

    @staticmethod
    def _needs_new_backend(engine: LocalEngine, opened: OpenRequest, request: OpenRequest) -> bool:
        """Another model; or, on a backend that keeps device contexts, another keeping policy
        (the Hailo backend takes its cache folder and policy as it opens: hailo.HailoBackend)."""
        if request.backend_key() != opened.backend_key():
            return True
        return isinstance(engine.chat.backend, KeepsContext) and request.keeping_key() != opened.keeping_key()

    @staticmethod
    def _fresh_chat(engine: LocalEngine, request: OpenRequest) -> None:
        engine.clear()
        engine.chat.session_stats.clear()  # (a new terminal's /stats count its own replies, as a new process's do)
        if request.system_prompt != engine.chat.system_prompt:  # (this terminal's settings, not the last one's)
            engine.system(request.system_prompt)
        for name, value in request.params.items():
            with contextlib.suppress(EngineError):
                engine.set(name, value)

    def _attach(self, client: Client) -> dict[str, Any]:
        """`client` controls the chat now: its snapshot, after which it hears every event."""
        engine = self.engine
        assert engine is not None
        self.controller = client
        opened = Opened(self._snapshot(), engine.status(), self._usage(), self._unseen, self._missed)
        self._unseen, self._missed = False, []
        return protocol.opened_to_wire(opened)

    def _usage(self) -> Any:
        engine = self.engine
        if engine is None or engine.model_state is not ModelState.READY or self._turn is not None:
            return None
        try:
            return engine.usage()
        except Exception:
            logger.exception("engine: the context's usage")
            return None

    def _snapshot(self) -> Snapshot:
        """The chat's recent turns, and the turn in flight as it was sent so far."""
        engine = self.engine
        assert engine is not None
        messages = engine.messages()
        turn = self._turn
        _, turns = split_turns(messages)
        if turn is not None and turns and turns[-1][0]["role"] == "user":
            if turns[-1][0]["content"].endswith(turn.question):  # (a /file's text goes before it)
                turns = turns[:-1]
        recent = [message for past in turns[-RECENT_TURNS:] for message in past]
        chat = engine.chat.session_id
        if turn is None:
            return Snapshot(chat, recent)
        return Snapshot(chat, recent, turn.id, turn.question, tuple(joined(turn.events)))

    async def _load(self, engine: LocalEngine) -> None:
        """The model's load, said (and drained) before it holds the GIL. A failed load ends the
        engine: its clients hear engine/state{failed}, then client/detached{quit}."""
        status = engine.status()
        self._broadcast(EngineState(engine.turns.next_seq(), ModelState.LOADING, status.model, status.backend))
        await self._drained()
        try:
            await asyncio.get_running_loop().run_in_executor(None, engine.load)
        except Exception as failure:
            if not isinstance(failure, EngineError):
                logger.opt(exception=failure).error("engine: the model's load failed")
            await asyncio.sleep(0)  # (the failed state, said from the load's thread, goes first)
            self._later(self.shutdown(protocol.QUIT))  # (a task of its own: the stop waits for this load)

    async def _say_first(self, line: str) -> None:
        """A line before the idle save of the device context, which holds the GIL: out first."""
        engine = self.engine
        if engine is not None:
            self._broadcast(EngineNotice(engine.turns.next_seq(), line))
            await self._drained()

    async def _blocking(self, work: Callable[..., Any], *args: Any) -> Any:
        """A request that may hold the GIL for seconds (a save of the device context, a load):
        what was said so far goes out first, then it runs in a thread."""
        await self._drained()
        return await asyncio.get_running_loop().run_in_executor(None, work, *args)

    # ---- turns ---------------------------------------------------------------------------------

    def _controlled(self, client: Client) -> LocalEngine:
        """The engine, for the client the chat is open in (NOT_OPEN for anyone else; ENDING once
        the engine stops: no turn starts in an engine being released)."""
        self._refuse_if_stopping()
        if self.engine is None or client is not self.controller:
            raise RemoteError(protocol.NOT_OPEN, "The chat is not open here (chat/open first).")
        return self.engine

    def _idle_engine(self, client: Client) -> LocalEngine:
        engine = self._controlled(client)
        if self._turn is not None or self._pumps:
            raise EngineError(ErrorCode.BUSY, "A reply is running; wait for it to end (Ctrl+C stops it).")
        return engine

    async def _turn_start(self, client: Client, params: dict[str, Any]) -> dict[str, Any]:
        engine = self._idle_engine(client)
        text, mode = str(params["text"]), TurnMode(params.get("mode", TurnMode.MESSAGE.value))
        if engine.model_state is ModelState.LOADING and self._loading is not None:
            await asyncio.wait([self._loading])  # (the client sends once it has heard `ready`)
        if engine.model_state is ModelState.FAILED:
            raise EngineError(ErrorCode.LOAD_FAILED, "The model failed to load.")
        await engine.context_saved()  # an idle save under way ends first
        await self._drained()
        local = engine.start_turn(text, mode)
        turn = self._turn = WireTurn(local, text)
        pump = asyncio.ensure_future(self._pump(engine, turn))
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        return {"turn": local.id}

    async def _pump(self, engine: LocalEngine, turn: WireTurn) -> None:
        """Send a turn's events as the engine paces them (a few a second), then, once it is kept
        and saved, the lines after its end and turn/finished."""
        local = turn.local
        try:
            while True:
                event = await local.next_event()
                if isinstance(event, TurnCompleted):
                    self._turn = None  # the reply is in the conversation now: a snapshot shows it there
                    self._broadcast(event)
                    break
                turn.events.append(event)
                self._broadcast(event)
            with contextlib.suppress(Exception):  # (a bug in the turn: logged by the engine)
                await local.finished
            for late in local.late_notices():
                self._broadcast(TurnNotice(engine.turns.next_seq(), turn.id, late))
        finally:
            self._turn = None
            if self.controller is not None:
                finished = {"seq": engine.turns.next_seq(), "turn": turn.id}
                self.controller.send(protocol.notification(protocol.TURN_FINISHED, finished))
            if self.controller is None:
                self._idle_since = time.monotonic()

    async def _turn_interrupt(self, client: Client, params: dict[str, Any]) -> None:
        engine = self._controlled(client)
        shown = params.get("shown_seq")
        engine.interrupt(int(params["turn"]), None if shown is None else int(shown))

    async def _turn_flush(self, client: Client, params: dict[str, Any]) -> None:
        turn = self._turn
        if turn is not None and client is self.controller and turn.id == params.get("turn"):
            turn.local.next_text_at_once()

    async def _detach(self, client: Client, params: dict[str, Any]) -> None:
        if client is self.controller:
            logger.info("engine: {} detached", client.name())
        self._later(client.close())

    async def _stop_engine(self) -> None:
        """Stop the reply (kept interrupted: all that came), keep the device context, release.
        The engine stays the server's until it has let go (a second stop waits for the first)."""
        async with self._releasing:
            engine = self.engine
            if engine is None:
                return
            try:
                await self._release(engine)
            finally:
                self.engine = None

    async def _release(self, engine: LocalEngine) -> None:
        turn = self._turn
        if turn is not None:
            engine.interrupt(turn.id, None)
        if self._pumps:
            await asyncio.wait(list(self._pumps))
        if self._loading is not None and not self._loading.done():
            await asyncio.wait([self._loading])  # (the model is released once it has loaded)
        if self._idle_saves is not None:
            self._idle_saves.cancel()
            await asyncio.wait([self._idle_saves])
        await engine.context_saved()
        status = engine.status()
        if engine.model_state is ModelState.READY:
            self._broadcast(EngineState(engine.turns.next_seq(), status.state, status.model, status.backend))
        try:
            await self._blocking(engine.quit)
        except Exception:
            logger.exception("engine: releasing the model failed")

    async def _quit(self, client: Client, params: dict[str, Any]) -> dict[str, Any]:
        """chat/quit (SocketEngine.stop_engine; a terminal's /quit only detaches): the engine ends;
        the asker hears the answer, then goes."""
        self._controlled(client)
        return await self._end(client, protocol.QUIT)

    async def _stop(self, client: Client, params: dict[str, Any]) -> dict[str, Any]:
        """daemon/stop (`hailo-repl daemon stop`): as chat/quit, from anyone; a terminal in the
        chat is told the engine is stopping."""
        self._stopped_by = {"pid": client.pid, "tty": client.tty}
        return await self._end(client, protocol.STOPPING)

    async def _end(self, client: Client, reason: str) -> dict[str, Any]:
        self._begin_stopping()
        async with self._opening:
            await self._stop_engine()

        async def then_close() -> None:
            await client.close()
            await self.shutdown(reason)

        self._later(then_close())
        return {}

    async def _status(self, client: Client, params: dict[str, Any]) -> dict[str, Any]:
        return self.status()

    # ---- the chat's requests -----------------------------------------------------------------

    async def _get(self, client: Client, params: dict[str, Any]) -> Any:
        engine = self.engine
        if engine is None:
            raise RemoteError(protocol.NOT_OPEN, "No chat is open in the engine.")
        what = params["what"]
        loop = asyncio.get_running_loop()
        if what == "status":
            return protocol.record_to_wire(engine.status())
        if what == "snapshot":
            return protocol.record_to_wire(self._snapshot())
        if what == "messages":
            return engine.messages()
        if what == "last_question":
            return engine.last_question()
        if what == "stats":
            return engine.stats_text()
        if what == "usage":
            return protocol.usage_to_wire(await loop.run_in_executor(None, engine.usage))
        raise ValueError(f"no such thing to get: {what}")

    def _engine_handlers(self) -> dict[str, Handler]:
        """The chat's commands: each for the controlling client, between turns, in a thread
        (a clear, a count of tokens or a save may take a while; the loop goes on meanwhile)."""

        def between_turns(work: Callable[[LocalEngine, dict[str, Any]], Any], blocks: bool = False) -> Handler:
            async def handle(client: Client, params: dict[str, Any]) -> Any:
                engine = self._idle_engine(client)
                engine.note_activity()
                if blocks:
                    return await self._blocking(work, engine, params)
                return await asyncio.get_running_loop().run_in_executor(None, work, engine, params)

            return handle

        def undo(engine: LocalEngine, params: dict[str, Any]) -> dict[str, Any]:
            text, lines = engine.undo()
            return {"text": text, "lines": lines}

        def switch(engine: LocalEngine, params: dict[str, Any]) -> dict[str, Any]:
            return protocol.record_to_wire(engine.switch_model(params["name"]))

        def save(engine: LocalEngine, params: dict[str, Any]) -> dict[str, Any]:
            path = Path(params["path"]) if params.get("path") else None
            where, count = engine.save(path, Path(params["directory"]), bool(params.get("force")))
            return {"path": str(where), "messages": count}

        return {
            protocol.CHAT_CLEAR: between_turns(lambda engine, params: engine.clear()),
            protocol.CHAT_UNDO: between_turns(undo),
            protocol.CHAT_SYSTEM: between_turns(lambda engine, params: {"text": engine.system(params.get("text"))}),
            protocol.CHAT_SET: between_turns(lambda engine, params: engine.set(params["name"], params["value"])),
            protocol.CHAT_LOAD: between_turns(
                lambda engine, params: {"messages": engine.load_file(Path(params["path"]))}
            ),
            protocol.CHAT_SAVE: between_turns(save),
            protocol.CHAT_ATTACH_FILE: between_turns(
                lambda engine, params: protocol.record_to_wire(engine.attach_file(Path(params["path"])))
            ),
            protocol.CHAT_RESUME: between_turns(lambda engine, params: engine.resume(params["id"]), blocks=True),
            protocol.CHAT_KEEP_CONTEXT: between_turns(lambda engine, params: engine.keep_context(), blocks=True),
            protocol.MODEL_LIST: between_turns(lambda engine, params: {"models": engine.list_models()}),
            protocol.MODEL_PREPARE: between_turns(
                lambda engine, params: {"name": engine.prepare_switch(params["name"])}
            ),
            protocol.MODEL_SWITCH: self._switching(between_turns(switch, blocks=True)),
        }

    def _switching(self, switch: Handler) -> Handler:
        """/model: once it has switched, the engine runs another model than its chat/open asked for."""

        async def handle(client: Client, params: dict[str, Any]) -> Any:
            answer = await switch(client, params)
            if self.engine is not None and self.request is not None and answer.get("error") is None:
                self.request = asking_for(self.request, self.engine.chat.backend)
            return answer

        return handle


def _is_for_the_user(failure: Exception) -> bool:
    """A failure whose message is the line to show (a backend's, a model not found)."""
    from hailo_repl.backends.base import BackendError
    from hailo_repl.models import ModelNotFoundError

    return isinstance(failure, (BackendError, ModelNotFoundError))
