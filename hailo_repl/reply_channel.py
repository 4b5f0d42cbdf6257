"""A reply's events on their way from the thread that generates it to the loop that shows it.

The text is paced: what arrives within FRAME_INTERVAL of the last text shown is handed over
together, with a count of its pieces, so the loop wakes and draws a few times a second
instead of once per token. This is for llama.cpp on the CPU: its threads fill the cores,
and every moment the loop spends drawing is taken from decoding. Measured on two cores
(benchmarks/bench_repl.py part e): drawing a frame per token and committing each line
took the loop 0.18 s of CPU in a 3 s reply, and the REPL decoded at 0.94x raw
llama-cpp-python. The first text and every other event (the end, an error, Ctrl+C) are
handed over at once, after any text before them; so is the text after one that showed nothing
(render.show_reply: the word-wrap holds the first word until it ends).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from enum import Enum
from typing import Any

from hailo_repl.engine.api import TurnCompleted, TurnEnd, TurnEvent, TurnNotice, TurnText

# Seconds between two handovers of text: a frame costs ~2 ms of CPU here (a prompt_toolkit
# render of the prompt's layout), so at 5 frames a second drawing takes ~1% of the time.
FRAME_INTERVAL = 0.2


class ReplyEvent(Enum):
    """What the generating thread tells the loop, with a value where it has one."""

    TEXT = "text"  # the reply's next pieces
    NOTICE = "notice"  # a line about the reply (turns dropped to make room)
    DONE = "done"  # the reply is complete
    ERROR = "error"  # the reply failed; the value says why
    INTERRUPTED = "interrupted"  # Ctrl+C stopped it


class ReplyChannel:
    """Events in order; put from any thread, taken by the loop's `get()`. Each may carry the
    engine's sequence number; a TEXT one carries its last piece's (`seq` after `get`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, frame_interval: float = FRAME_INTERVAL, turn: int = 0):
        self._loop = loop
        self.turn = turn
        self._frame_interval = frame_interval
        self._lock = threading.Lock()
        # Waiting events [kind, value, seq]; a TEXT one holds a list of pieces that grows until it is taken.
        self._waiting: deque[list[Any]] = deque()
        self._wakeup = asyncio.Event()  # (the loop's only)
        self._next_frame = 0.0  # (loop time) no text is taken before this
        self.seq = 0  # the sequence number of the event `get` returned last

    def put_text(self, piece: str, seq: int = 0) -> None:
        """The reply's next piece. Wakes the loop only when nothing was waiting and the frame is
        due: before it, the loop waits for the frame's time by itself (one wakeup a frame)."""
        with self._lock:
            wake = not self._waiting and self._loop.time() >= self._next_frame
            last = self._waiting[-1] if self._waiting and self._waiting[-1][0] is ReplyEvent.TEXT else None
            if last is not None:
                last[1].append(piece)
                last[2] = seq
            else:
                self._waiting.append([ReplyEvent.TEXT, [piece], seq])
        if wake:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def put(self, kind: ReplyEvent, value: Any = "", seq: int = 0) -> None:
        with self._lock:
            self._waiting.append([kind, value, seq])
        self._loop.call_soon_threadsafe(self._wakeup.set)

    def cut(self) -> None:
        """Ctrl+C: the text not taken yet is never shown; INTERRUPTED comes next (after any
        line about the reply still waiting)."""
        with self._lock:
            self._waiting = deque(event for event in self._waiting if event[0] is ReplyEvent.NOTICE)
            self._waiting.append([ReplyEvent.INTERRUPTED, "", 0])
        self._loop.call_soon_threadsafe(self._wakeup.set)

    def notices_left(self) -> list[str]:
        """The lines about the reply that came after the loop stopped taking events (a save's,
        after DONE; any after Ctrl+C); the rest of what waits is dropped."""
        with self._lock:
            left = [value for kind, value, _ in self._waiting if kind is ReplyEvent.NOTICE]
            self._waiting.clear()
        return [line for line in left if isinstance(line, str)]

    def next_text_at_once(self) -> None:
        """Hand the next text over as soon as it comes, not a frame after the last (from the loop)."""
        with self._lock:
            self._next_frame = 0.0
        self._wakeup.set()  # (a get() waiting for the frame's time looks again)

    async def get(self) -> tuple[ReplyEvent, Any, int]:
        """The next event, its value, and for TEXT the number of pieces joined in it."""
        while True:
            self._wakeup.clear()  # before looking: a put from now on wakes the wait below
            now = self._loop.time()
            with self._lock:
                head = self._waiting[0] if self._waiting else None
                ready = head is not None and (
                    head[0] is not ReplyEvent.TEXT or len(self._waiting) > 1 or now >= self._next_frame
                )
                if head is not None and ready:
                    self._waiting.popleft()
                    if head[0] is ReplyEvent.TEXT:
                        self._next_frame = now + self._frame_interval
                next_frame = self._next_frame
            if head is not None and ready:
                kind, value, self.seq = head
                if isinstance(value, list):
                    return kind, "".join(value), len(value)
                return kind, value, 0
            # Text that comes before the frame's time does not wake the loop (put_text): look then.
            timer = self._loop.call_at(next_frame, self._wakeup.set) if now < next_frame else None
            try:
                await self._wakeup.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    async def next_event(self) -> TurnEvent:
        """`get()` as the engine's events (engine.api): DONE, ERROR and INTERRUPTED end the turn,
        with the engine's TurnCompleted if it was put as their value."""
        kind, value, pieces = await self.get()
        if kind is ReplyEvent.TEXT:
            return TurnText(self.seq, self.turn, value, pieces)
        if kind is ReplyEvent.NOTICE:
            return TurnNotice(self.seq, self.turn, value)
        if isinstance(value, TurnCompleted):
            return value
        reason = TurnEnd.ERROR if kind is ReplyEvent.ERROR else TurnEnd(kind.value)
        return TurnCompleted(self.seq, self.turn, reason, error=value if kind is ReplyEvent.ERROR else None)
