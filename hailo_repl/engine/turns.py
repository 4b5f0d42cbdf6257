"""The turn in flight as the engine keeps it, for a terminal that arrives in the middle of it.

Finished turns are in the conversation; the question of the turn in flight is too (Chat.reply
puts it there before the reply streams). So what a terminal arriving now needs is the chat's
recent turns plus this turn's events since it started: the buffer holds those, one event per
piece of text, so it is bounded by max-tokens (and by MAX_EVENTS whatever a backend does). It
also remembers, for each text event, how many raw pieces were behind it: an interrupt names the
last event the terminal showed, and the reply is kept up to there (chat.ShownUpTo).
"""

from __future__ import annotations

import itertools
import threading

from hailo_repl.backends.base import Message
from hailo_repl.context import RECENT_TURNS, split_turns
from hailo_repl.engine.api import Event, Snapshot, TurnCompleted, TurnStarted, TurnText

MAX_EVENTS = 100_000  # a backend that ignores max-tokens is stopped by Chat.reply; this is a last guard


class TurnBuffer:
    """The sequence numbers of a chat's events, and the events of the turn in flight.
    Events come from the engine's thread; a snapshot may be taken from any."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._turn: TurnStarted | None = None
        self._events: list[Event] = []
        self._raw_at: dict[int, int] = {}  # a text event's seq -> raw pieces behind the text up to it

    def next_seq(self) -> int:
        with self._lock:
            return next(self._seq)

    def begin(self, started: TurnStarted, keep: bool = True) -> None:
        """A turn starts; without `keep` its events are numbered, not kept (-p and pipes: no
        terminal arrives in the middle of them)."""
        with self._lock:
            self._turn, self._events, self._raw_at = (started, [started], {}) if keep else (None, [], {})

    def add_text(self, turn: int, text: str, raw: int) -> TurnText:
        """The turn's next text event, numbered, and kept with the raw pieces behind the text so
        far (one lock a token: this runs for each)."""
        with self._lock:
            seq = next(self._seq)
            event = TurnText(seq, turn, text, 1)
            if self._turn is not None and len(self._events) < MAX_EVENTS:
                self._events.append(event)
                self._raw_at[seq] = raw
            return event

    def add(self, event: Event) -> None:
        """One event of the turn in flight other than its text (a notice, its end)."""
        with self._lock:
            if self._turn is None or len(self._events) >= MAX_EVENTS:
                return
            self._events.append(event)
            if isinstance(event, TurnCompleted):
                self._turn, self._events, self._raw_at = None, [], {}

    def raw_shown(self, turn: int, shown_seq: int) -> int:
        """The raw pieces behind what the terminal had shown of `turn` at its event `shown_seq`."""
        with self._lock:
            if self._turn is None or self._turn.turn != turn:
                return 0
            shown = [seq for seq in self._raw_at if seq <= shown_seq]
            return self._raw_at[max(shown)] if shown else 0

    def snapshot(self, chat: str, messages: list[Message]) -> Snapshot:
        """The chat's last RECENT_TURNS finished turns, and the turn in flight so far (its text
        events joined into one)."""
        with self._lock:
            turn, events = self._turn, list(self._events)
        in_flight = turn is not None
        _, turns = split_turns(messages[:-1] if in_flight and messages[-1]["role"] == "user" else messages)
        recent = [message for past in turns[-RECENT_TURNS:] for message in past]
        if turn is None:
            return Snapshot(chat, recent)
        return Snapshot(chat, recent, turn.turn, turn.question, tuple(joined(events[1:])))


def joined(events: list[Event]) -> list[Event]:
    """Adjacent text events as one (the pieces counted, the last seq kept)."""
    out: list[Event] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, TurnText) and isinstance(last, TurnText):
            out[-1] = TurnText(event.seq, event.turn, last.text + event.text, last.pieces + event.pieces)
        else:
            out.append(event)
    return out
