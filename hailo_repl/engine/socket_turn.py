"""A turn of a chat in the engine process as the terminal sees it (engine.api.Turn), fed by the
engine's turn/* events on the REPL's loop; and what a terminal arriving in the chat shows first."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

from hailo_repl.backends.base import Message
from hailo_repl.daemon import protocol
from hailo_repl.engine.api import Event, TurnCompleted, TurnEnd, TurnEvent, TurnNotice

if TYPE_CHECKING:
    from hailo_repl.engine.socket_client import SocketEngine


class SocketTurn:
    """A turn as the terminal sees it (engine.api.Turn), fed by the engine's turn/* events.

    The engine paces the text (a few frames a second); this hands each event over as it comes.
    Its `id` is the terminal's own number: the engine's is known once turn/start is answered,
    and an interrupt before that goes as soon as it is."""

    def __init__(self, engine: SocketEngine, turn: int, loop: asyncio.AbstractEventLoop, question: str):
        self.id = turn
        self.engine = engine
        self.question = question
        self.remote: int | None = None  # the engine's number for it
        self.loop = loop
        self.finished: asyncio.Future[TurnCompleted] = loop.create_future()
        self.completed: TurnCompleted | None = None  # the engine's end, once it came
        self.interrupt_at: tuple[int | None] | None = None  # an interrupt waiting for `remote`
        self._waiting: deque[TurnEvent] = deque()
        self._wakeup = asyncio.Event()
        self._ended = False  # the end was put (the engine's, or stop_showing's)
        self._taken_end = False  # the terminal took the end: what comes after is late

    # ---- from the reader thread (via the loop) ----

    def put(self, event: TurnEvent) -> None:
        if self._ended and not isinstance(event, TurnNotice):
            return  # (text after Ctrl+C is never shown)
        if isinstance(event, TurnCompleted):
            self._ended = True
        self._waiting.append(event)
        self._wakeup.set()

    def finish(self, completed: TurnCompleted) -> None:
        if not self._ended:
            self.put(completed)
        if not self.finished.done():
            self.finished.set_result(completed)

    # ---- the terminal's side (engine.api.Turn) ----

    async def next_event(self) -> TurnEvent:
        while not self._waiting:
            self._wakeup.clear()
            await self._wakeup.wait()
        event = self._waiting.popleft()
        if isinstance(event, TurnCompleted):
            self._taken_end = True
        return event

    def next_text_at_once(self) -> None:
        if self.remote is not None and not self._ended:
            self.engine.notify(protocol.TURN_FLUSH, {"turn": self.remote})

    def stop_showing(self) -> None:
        """Ctrl+C: the text not taken yet is never shown; the end is INTERRUPTED, unless an
        error's end is waiting (the engine gone: its line is the one to show)."""
        if self._taken_end:
            return
        errors = [
            event for event in self._waiting if isinstance(event, TurnCompleted) and event.reason is TurnEnd.ERROR
        ]
        self._waiting = deque(event for event in self._waiting if isinstance(event, TurnNotice))
        self._ended = True
        self._waiting.append(errors[0] if errors else TurnCompleted(0, self.id, TurnEnd.INTERRUPTED))
        self._wakeup.set()

    def is_finished(self) -> bool:
        return self.finished.done()

    def late_notices(self) -> list[str]:
        left = [event.line for event in self._waiting if isinstance(event, TurnNotice)]
        self._waiting.clear()
        return left


class Arriving:
    """The turn in flight when the chat was opened: the snapshot's events, then the live ones."""

    def __init__(self, remote: int, question: str, events: list[Event]):
        self.remote = remote
        self.question = question
        self.events = events
        self.finished = False


class Arrival(NamedTuple):
    """What a terminal arriving in a chat shows first (SocketEngine.arrival)."""

    lines: list[str]  # labelled lines: a save that failed meanwhile, a reply that went on unseen
    recent: list[Message]  # the chat's last turns
    turn: SocketTurn | None = None  # the turn in flight: its question, its events so far then live
