"""The seam between the terminal and the chat: the `Engine` protocol, its events and its errors.

The terminal side (the REPL, the commands, `-p` and pipes) holds an `Engine`, never a `Chat` or a
backend. What happens in the engine reaches it as events, each with a sequence number that grows
through the chat's life, so a terminal that arrives later can be told what it missed. The names
follow the Codex app-server's (`turn/start`, `turn/interrupt`, `turn/completed`), the closest
published analogue (docs/design.md, "The engine seam").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

# ---- events ---------------------------------------------------------------------------------


if TYPE_CHECKING:
    from typing_extensions import dataclass_transform

    from hailo_repl.backends.base import Message  # (the backends package is not on the path to the first prompt)
    from hailo_repl.context import ContextUsage
    from hailo_repl.stats import ReplyStats  # (not on the path to the first prompt: the first reply's)
else:

    def dataclass_transform() -> Callable[[type], type]:
        return lambda cls: cls


@dataclass_transform()
class Record:
    """The base of this module's records: fields from the class's annotations (a base's first),
    defaults from its class attributes (immutable ones), set by one __init__ for all. (A dataclass
    compiles its methods as its class is defined, and this module is on the path to the first
    prompt: its 12 dataclasses took ~2 ms of a ~130 ms start, these take ~0.1 ms.)"""

    _names: tuple[str, ...] = ()  # the fields, in order (set for each subclass)

    def __init_subclass__(cls) -> None:
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            names += [name for name in vars(klass).get("__annotations__", {}) if not name.startswith("_")]
        cls._names = tuple(dict.fromkeys(names))

    def __init__(self, *values: object, **named: object) -> None:
        if len(values) > len(self._names):
            raise TypeError(f"{type(self).__name__}() takes {len(self._names)} fields, not {len(values)}")
        for name, value in zip(self._names, values, strict=False):
            setattr(self, name, value)
        for name in self._names[len(values) :]:
            if name in named:
                setattr(self, name, named.pop(name))
            elif not hasattr(type(self), name):  # (else the class's default is read through the instance)
                raise TypeError(f"{type(self).__name__}() needs {name}")
        if named:
            raise TypeError(f"{type(self).__name__}() has no field {', '.join(named)}")

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._names)
        return f"{type(self).__name__}({shown})"


class ModelState(Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class Busy(Enum):
    """What the engine does meanwhile that holds a turn back."""

    SAVING_CONTEXT = "saving_context"
    SWITCHING_MODEL = "switching_model"


class TurnMode(Enum):
    MESSAGE = "message"
    RETRY = "retry"  # the new exchange takes the last one's place (/retry)
    CONTINUE = "continue"  # go on with a reply cut off (/continue)


class TurnEnd(Enum):
    DONE = "done"
    TRUNCATED = "truncated"  # stopped by max-tokens: /continue may go on
    INTERRUPTED = "interrupted"
    ERROR = "error"
    EMPTY = "empty"  # nothing came back


class ChatChange(Enum):
    CLEARED = "cleared"
    UNDONE = "undone"
    LOADED = "loaded"
    RESUMED = "resumed"
    FORKED = "forked"  # another process saved the chat meanwhile: this one goes on as a new chat
    SYSTEM = "system"
    PARAMS = "params"


class Event(Record):
    seq: int  # per chat, growing; 0 for what the terminal makes itself (its own end of a turn shown)


class EngineState(Event):
    state: ModelState
    model: str
    backend: str
    busy: Busy | None = None
    error: str | None = None  # the load's, when it failed


class EngineNotice(Event):
    """A labelled line about the engine's own work (keeping the device context), not a turn's."""

    line: str


class EngineGone(Event):
    """The engine has let this terminal go (another took the chat over) or has ended (killed):
    `line` to show (empty if the turn on screen showed it), then the chat ends with `exit_code`."""

    line: str
    exit_code: int = 1


class UsageChanged(Event):
    usage: ContextUsage


class TurnStarted(Event):
    turn: int
    mode: TurnMode
    question: str


class TurnText(Event):
    """The reply's next displayable text (filtered: no think tags), from `pieces` tokens; paced a
    few frames a second (reply_channel). `seq` is its last piece's."""

    turn: int
    text: str
    pieces: int

    def __init__(self, seq: int, turn: int, text: str, pieces: int) -> None:  # (one per token: Record's is slower)
        self.seq, self.turn, self.text, self.pieces = seq, turn, text, pieces


class TurnNotice(Event):
    """A labelled line about the turn ([Context] turns dropped, a stall, a save that failed)."""

    turn: int
    line: str


class TurnCompleted(Event):
    turn: int
    reason: TurnEnd
    error: str | None = None  # the line to show, for ERROR
    stats: ReplyStats | None = None
    usage: ContextUsage | None = None
    chat: str = ""  # the chat's id (a fork may have changed it)


class ChatChanged(Event):
    chat: str
    why: ChatChange


TurnEvent = TurnText | TurnNotice | TurnCompleted
Listener = Callable[[Event], None]  # called on any thread: the listener takes the event where it needs it

# ---- answers --------------------------------------------------------------------------------


class ErrorCode(Enum):
    BUSY = "busy"  # a turn runs
    NOT_LOADED = "not_loaded"  # the model is not loaded yet
    LOAD_FAILED = "load_failed"  # the model did not load (the line says why)
    BAD_FILE = "bad_file"  # a chat file or /file that cannot be read or written
    BAD_VALUE = "bad_value"  # a setting the model cannot take
    NOT_FOUND = "not_found"  # no such model or saved chat
    OVERFLOW = "overflow"  # more than the context holds


class EngineError(Exception):
    """A request the engine refused; `line` is the one line to show (str(error) too)."""

    def __init__(self, code: ErrorCode, line: str):
        super().__init__(line)
        self.code = code
        self.line = line


class Status(Record):
    model: str
    backend: str
    state: ModelState
    chat: str  # the chat's id
    loads_in_background: bool  # False: the load holds the whole process, so it comes before the prompt
    params: dict[str, object]  # the generation settings, by name
    load_seconds: float = 0.0
    saving: bool = False  # the chat is being saved (a save may wait seconds for another process's lock)
    unsaved: bool = False  # the last save failed: the latest turns are in no file
    busy: Busy | None = None  # keeping the device context or switching models: a turn waits


class Attached(Record):
    """A file put into the next message (/file)."""

    name: str
    characters: int
    tokens: int
    share: int  # percent of the context


class Switched(Record):
    """How /model went: `error` is None when the chat now goes on with the new model; else it
    goes on with the old one, unless `fatal` (the old one failed to load again too)."""

    error: str | None = None
    fatal: str | None = None


class Snapshot(Record):
    """What a terminal arriving now is shown: the chat's recent turns, and the turn in flight
    so far (its events since it started)."""

    chat: str
    recent: list[Message]
    turn: int | None = None
    question: str = ""
    events: tuple[Event, ...] = ()


# The protocols are for the type checker (and the reader) only: a Protocol class takes ~3.5 ms to
# define, and the terminal side imports this module before its first prompt.
if TYPE_CHECKING:

    class Turn(Protocol):
        """A turn in flight as the terminal sees it: its events in order, a few frames a second."""

        id: int

        async def next_event(self) -> TurnEvent:
            """The next event; a TurnCompleted is the last."""
            ...

        def next_text_at_once(self) -> None:
            """Hand the next text over as it comes, not a frame after the last."""
            ...

        def stop_showing(self) -> None:
            """End the events here (Ctrl+C): the next is a TurnCompleted(INTERRUPTED) with seq 0,
            before any text not handed over yet."""
            ...

        finished: asyncio.Future[TurnCompleted]  # the engine's end of the turn: the reply kept and saved

        def is_finished(self) -> bool: ...

        def late_notices(self) -> list[str]:
            """The lines about the turn that came after its end was shown (its save's), once it
            is finished; said once."""
            ...

    class Engine(Protocol):
        """What the terminal may ask of a chat. Requests return at once, except those said to block
        (a load, a switch, a save of the device context): the REPL runs those in a thread."""

        def subscribe(self, listener: Listener) -> None: ...

        def status(self) -> Status: ...

        # ---- the chat
        def resume(self, chat_id: str) -> None:
            """Go on with the saved chat `chat_id` (EngineError BAD_FILE when it cannot be read)."""
            ...

        def load(self) -> None:
            """Load the model (blocks). EngineError LOAD_FAILED with the line to show; anything
            else it raises is a bug."""
            ...

        def start_turn(self, text: str, mode: TurnMode = TurnMode.MESSAGE) -> Turn:
            """Answer `text` in a thread of the engine's, from a running event loop."""
            ...

        def run_turn(
            self, text: str, on_event: Callable[[TurnEvent], None], mode: TurnMode = TurnMode.MESSAGE
        ) -> TurnCompleted:
            """Answer `text` on the caller's thread (-p, pipes): each event to `on_event` as it
            comes, TurnCompleted last. An exception raised meanwhile ends the turn, kept interrupted."""
            ...

        def interrupt(self, turn: int, shown_seq: int | None) -> None:
            """Stop `turn`; what is kept is its text up to the TurnText event `shown_seq` (0: none;
            None: all that came, when no terminal shows it)."""
            ...

        def hang_up(self) -> None:
            """The terminal is gone: the turn in flight runs to its end, kept whole and saved
            (not interrupted); quit() then keeps the device context and releases the model."""
            ...

        def clear(self) -> None: ...

        def undo(self) -> tuple[str | None, list[str]]:
            """Drop the last question and its reply: their text (None if there was none), and the
            lines about saving the chat after."""
            ...

        def system(self, text: str | None = None) -> str:
            """The system prompt, after replacing it with `text` if given."""
            ...

        def set(self, name: str, value: object) -> None:
            """A generation setting (temperature, max-tokens, top-p); EngineError BAD_VALUE."""
            ...

        def load_file(self, path: Path) -> int:
            """Go on with the conversation saved in `path`; how many messages it had."""
            ...

        def save(self, path: Path | None, directory: Path, force: bool = False) -> tuple[Path, int]:
            """Save the conversation to `path` (a new file in `directory` if None), then keep the
            device context (blocks for seconds on a Hailo); where, and how many messages."""
            ...

        def attach_file(self, path: Path) -> Attached: ...

        def list_models(self) -> list[str]: ...

        def prepare_switch(self, name: str) -> str:
            """Check that model `name` can be switched to: the name it goes by (EngineError NOT_FOUND)."""
            ...

        def switch_model(self, name: str) -> Switched:
            """Keep the device context, release the model and load `name` (blocks); on failure go
            back to the model before."""
            ...

        def keep_context(self) -> None:
            """Keep the device context if it changed (blocks for seconds on a Hailo: after /save)."""
            ...

        def note_activity(self) -> None:
            """The user is at the terminal (a key, a new prompt): the idle save of the device context waits."""
            ...

        async def keep_context_when_idle(self, say_first: Callable[[str], Awaitable[None]]) -> None:
            """Keep the device context when the user has been away a while (a task on the terminal's
            loop); `say_first` shows the line about it before the save holds the GIL."""
            ...

        async def context_saved(self) -> None:
            """Until an idle save of the device context under way has ended (the next turn waits for it)."""
            ...

        # ---- what the terminal reads
        def usage(self) -> ContextUsage: ...

        def stats_text(self) -> str: ...

        def last_question(self) -> str | None: ...

        def messages(self) -> list[Message]: ...

        def snapshot(self) -> Snapshot: ...

        def quit(self, say: Callable[[str], None] | None = None) -> None:
            """Keep the device context and release the model (blocks); `say` gets the line before
            a save the user waits for, and one after if it failed (None: -p and pipes)."""
            ...
