"""The command line's chat through the engine process (settings `daemon`: auto, always).

The REPL gets an `EngineProcess`: an Engine whose connection is made by its `load()`, which the
REPL runs after its first frame (app.Repl._load), so the prompt is up before anything is
connected, started or loaded. Before that it answers from what the command line settled: the
model's name, the backend, the settings. `load()` connects to the user's engine process or starts
one (daemon.spawn), opens the chat there (chat/open: -c and --resume take it over from another
terminal; a plain start never does), and waits for the model; then every request goes to the
SocketEngine (engine.socket_client). -p and pipes run their turns on it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hailo_repl.engine.api import EngineError, ErrorCode, Listener, ModelState, Status, TurnEnd, TurnMode

if TYPE_CHECKING:
    from hailo_repl.backends import BackendChoice
    from hailo_repl.backends.base import Message
    from hailo_repl.context import ContextUsage
    from hailo_repl.daemon.protocol import Opened, OpenRequest
    from hailo_repl.engine.api import Attached, Snapshot, Switched, Turn, TurnCompleted, TurnEvent
    from hailo_repl.engine.socket_client import SocketEngine
    from hailo_repl.engine.socket_turn import Arrival


HELD_POLL_SECONDS = 0.5  # how often a script asks again for the engine's chat a terminal holds


def backend_named(choice: BackendChoice) -> str:
    """The backend the engine will open, as far as the client can tell without a device (auto
    with no HEF named: the engine's probe decides)."""
    if choice.backend != "auto":
        return choice.backend
    return "llama" if choice.gguf_path else "hailo" if choice.hef_path else "auto"


def model_named(choice: BackendChoice) -> str:
    """The model's name as the engine will call it, before it is asked (the welcome line)."""
    if choice.model_name:
        return choice.model_name
    if choice.gguf_path:
        return choice.gguf_path.stem
    if choice.hef_path:
        return Path(choice.hef_path).name.removesuffix(".hef")
    if choice.backend == "llama":
        from hailo_repl.models import BUNDLED_MODEL_NAME

        return BUNDLED_MODEL_NAME
    return "the engine's model"


class EngineProcess:
    """The Engine of a chat in the engine process, reached when `load()` runs (engine.api.Engine).
    Until then it answers from what the command line settled; every other request is refused
    NOT_LOADED (the REPL asks nothing else before its model is ready). The wire's modules (json,
    sockets, threads) are imported by `load()`, after the first frame, not before it."""

    def __init__(
        self,
        request: Callable[[], OpenRequest],
        model: str,
        backend: str,
        params: dict[str, object],
        keep_alive: float,
        history: bool = True,
        chatting: bool = True,
        say: Callable[[str], None] | None = None,
    ):
        """`say`: a line for the user before the chat opens (a script waiting for a terminal's chat)."""
        self.request = request  # chat/open's, made when it is sent
        self.say = say or (lambda line: print(line, file=sys.stderr))
        self.keep_alive = keep_alive
        self.history = history
        self.chatting = chatting  # a REPL's (not -p's or a pipe's)
        self.engine: SocketEngine | None = None
        self._listeners: list[Listener] = []
        self._status = Status(
            model=model,
            backend=backend,
            state=ModelState.LOADING,
            chat="",
            loads_in_background=True,  # the engine process loads it: the prompt is up meanwhile
            params=dict(params),
        )

    @property
    def opened(self) -> Opened | None:
        """chat/open's answer (the snapshot the REPL shows on arrival), once opened."""
        return self.engine.opened if self.engine is not None else None

    def arrival(self) -> Arrival:
        """What this terminal shows on arriving in the chat (SocketEngine.arrival), once opened."""
        return self._connected().arrival()

    def connect(self) -> SocketEngine:
        """Connect to the engine process, or start one (EngineError LOAD_FAILED with the line)."""
        from hailo_repl.daemon.protocol import RemoteError
        from hailo_repl.daemon.spawn import EngineUnavailable, connect_or_spawn
        from hailo_repl.engine.socket_client import ChatHeldElsewhere, connect_and_open

        model, backend, request = self._status.model, self._status.backend, self.request()
        listeners = tuple(self._listeners)
        told = False
        try:
            while True:
                try:
                    engine = connect_or_spawn(
                        lambda path: connect_and_open(path, request, model, backend, listeners),
                        self.keep_alive,
                        self.history,
                    )
                    break
                except ChatHeldElsewhere as held:  # a script waits for a terminal's chat, as for the device
                    if not told:
                        self.say(f"{held} (Ctrl+C gives up)")
                        told = True
                    time.sleep(HELD_POLL_SECONDS)
        except EngineUnavailable as failure:
            raise EngineError(ErrorCode.LOAD_FAILED, str(failure)) from None
        except RemoteError as refused:  # another version's engine
            raise EngineError(ErrorCode.LOAD_FAILED, refused.line) from None
        self.engine = engine
        return engine

    def _connected(self) -> SocketEngine:
        if self.engine is None:
            raise EngineError(ErrorCode.NOT_LOADED, "The engine process is not reached yet.")
        return self.engine

    # ---- engine.api.Engine -------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)
        if self.engine is not None:
            self.engine.subscribe(listener)

    def status(self) -> Status:
        return self.engine.status() if self.engine is not None else self._status

    def load(self) -> None:
        """Connect (or start the engine process), open the chat there and wait for its model (blocks)."""
        (self.engine or self.connect()).load()

    def detach(self) -> None:
        """Leave the chat to the engine process (/detach, a hang-up, SIGTERM): its reply goes on."""
        if self.engine is not None:
            self.engine.detach()

    def hang_up(self) -> None:
        """The terminal is gone: a REPL's leaves the chat (its reply goes on in the engine). -p and
        a pipe read on: a stdout that is a file or a pipe still gets the whole reply, as in process
        (cli_chat.run_turn), and the run ends with 129 after it."""
        if self.chatting:
            self.detach()

    def quit(self, say: Callable[[str], None] | None = None) -> None:
        """The chat ends here (/quit, Ctrl+D): this terminal leaves (SocketEngine.quit); the engine
        keeps the model loaded for keep-alive, for the next chat."""
        if self.engine is not None:
            self.engine.quit(say)

    def note_activity(self) -> None:
        if self.engine is not None:
            self.engine.note_activity()

    async def keep_context_when_idle(self, say_first: Callable[[str], Awaitable[None]]) -> None:
        await asyncio.Event().wait()  # (the engine process keeps the device context on its own clock)

    async def context_saved(self) -> None:
        if self.engine is not None:
            await self.engine.context_saved()

    def messages(self) -> list[Message]:
        return self.engine.messages() if self.engine is not None else []

    def resume(self, chat_id: str) -> None:
        self._connected().resume(chat_id)

    def start_turn(self, text: str, mode: TurnMode = TurnMode.MESSAGE) -> Turn:
        return self._connected().start_turn(text, mode)

    def run_turn(
        self, text: str, on_event: Callable[[TurnEvent], None], mode: TurnMode = TurnMode.MESSAGE
    ) -> TurnCompleted:
        """-p and pipes: the turn, then the chat's state after its save (whether it is in a file),
        asked for before the next turn or the exit code reads it."""
        from hailo_repl.daemon.protocol import CHAT_GET, RemoteError, status_from_wire

        engine = self._connected()
        completed = engine.run_turn(text, on_event, mode)
        if completed.reason is TurnEnd.INTERRUPTED:  # not by this process (a signal here raises): the engine ends
            raise EngineError(
                ErrorCode.LOAD_FAILED,
                "the engine process stopped the reply (saved [interrupted]); `hailo-repl -c` goes on with the chat",
            )
        with contextlib.suppress(RemoteError, EngineError):  # (the engine gone meanwhile: `gone` says so)
            after = status_from_wire(engine.call(CHAT_GET, {"what": "status"}))
            engine.status().saving, engine.status().unsaved = after.saving, after.unsaved
        return completed

    @property
    def gone(self) -> str | None:
        """The line about the engine's end (stopped, killed) or the chat taken over, if it came."""
        return self.engine.gone if self.engine is not None else None

    def interrupt(self, turn: int, shown_seq: int | None) -> None:
        self._connected().interrupt(turn, shown_seq)

    def clear(self) -> None:
        self._connected().clear()

    def undo(self) -> tuple[str | None, list[str]]:
        return self._connected().undo()

    def system(self, text: str | None = None) -> str:
        return self._connected().system(text)

    def set(self, name: str, value: object) -> None:
        self._connected().set(name, value)

    def load_file(self, path: Path) -> int:
        return self._connected().load_file(path)

    def save(self, path: Path | None, directory: Path, force: bool = False) -> tuple[Path, int]:
        return self._connected().save(path, directory, force)

    def attach_file(self, path: Path) -> Attached:
        return self._connected().attach_file(path)

    def list_models(self) -> list[str]:
        return self._connected().list_models()

    def prepare_switch(self, name: str) -> str:
        return self._connected().prepare_switch(name)

    def switch_model(self, name: str) -> Switched:
        return self._connected().switch_model(name)

    def keep_context(self) -> None:
        self._connected().keep_context()

    def usage(self) -> ContextUsage:
        return self._connected().usage()

    def stats_text(self) -> str:
        return self._connected().stats_text()

    def last_question(self) -> str | None:
        return self._connected().last_question()

    def snapshot(self) -> Snapshot:
        return self._connected().snapshot()
