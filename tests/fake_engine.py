"""A fake Engine (engine.api) with no chat and no backend, for testing the terminal side alone:
it records what it is asked and answers from a script, each reply's text one event at a time."""

from __future__ import annotations

import asyncio
import collections

from hailo_repl.context import ContextUsage
from hailo_repl.engine.api import (
    Attached,
    EngineError,
    EngineState,
    ErrorCode,
    ModelState,
    Snapshot,
    Status,
    Switched,
    TurnCompleted,
    TurnEnd,
    TurnMode,
    TurnStarted,
    TurnText,
    UsageChanged,
)
from hailo_repl.stats import ReplyStats


class FakeTurn:
    def __init__(self, turn, pieces, delay, finish_late=0.0):
        self.id = turn
        self.finished = asyncio.get_running_loop().create_future()
        self._waiting = collections.deque()
        self._wakeup = asyncio.Event()
        self.stopped = False
        self.taken = []  # the events the terminal has taken
        self.produce = asyncio.ensure_future(self._produce(pieces, delay, finish_late))

    async def _produce(self, pieces, delay, finish_late):
        for index, piece in enumerate(pieces):
            await asyncio.sleep(delay)
            if self.stopped:  # a device stops at its next token, and takes its time to end
                await asyncio.sleep(finish_late)
                break
            self._put(TurnText(100 * self.id + index + 1, self.id, piece, 1))
        stats = ReplyStats(generated_tokens=len(pieces), time_to_first_token=0.1, total=1.1)
        completed = TurnCompleted(100 * self.id + 99, self.id, TurnEnd.DONE, stats=stats, usage=ContextUsage(120, 1000))
        self._put(completed)
        self.finished.set_result(completed)

    def _put(self, event):
        self._waiting.append(event)
        self._wakeup.set()

    async def next_event(self):
        while not self._waiting:
            self._wakeup.clear()
            await self._wakeup.wait()
        self.taken.append(self._waiting.popleft())
        return self.taken[-1]

    def next_text_at_once(self):
        pass

    def stop_showing(self):
        self.stopped = True
        self._waiting.clear()
        self._put(TurnCompleted(0, self.id, TurnEnd.INTERRUPTED))

    def is_finished(self):
        return self.finished.done()

    def late_notices(self):
        return self.late

    late: list[str] = []  # lines about the turn after its end (a save's)


class FakeEngine:
    """Replies from `replies` (lists of pieces, `delay` seconds apart); `calls` records every request."""

    def __init__(self, *replies, delay=0.0, load_error=None, switch=None, finish_late=0.0, late_notices=()):
        self.replies = list(replies)
        self.delay = delay
        self.load_error = load_error
        self.switch = switch or Switched()
        self.finish_late = finish_late
        self.late_notices = list(late_notices)
        self.calls = []
        self.listeners = []
        self.model, self.state = "fake-model", ModelState.LOADING
        self.turns = []
        self.system_prompt = "sys"

    def _emit(self, event):
        for listener in self.listeners:
            listener(event)

    def subscribe(self, listener):
        self.listeners.append(listener)

    def status(self):
        return Status(self.model, "llama", self.state, "chat-1", True, {"temperature": 0.7})

    def load(self):
        self.calls.append(("load",))
        if self.load_error is not None:
            self.state = ModelState.FAILED
            raise self.load_error
        self.state = ModelState.READY
        self._emit(EngineState(1, ModelState.READY, self.model, "llama"))
        self._emit(UsageChanged(2, ContextUsage(20, 1000)))

    def start_turn(self, text, mode=TurnMode.MESSAGE):
        self.calls.append(("start_turn", text, mode))
        pieces = self.replies.pop(0) if self.replies else ["ok"]
        turn = FakeTurn(len(self.turns) + 1, pieces, self.delay, self.finish_late)
        turn.late = self.late_notices
        self.turns.append(turn)
        self._emit(TurnStarted(100 * turn.id, turn.id, mode, text))
        # The engine's TurnCompleted comes after the turn's own end is taken, as it may across threads.
        turn.finished.add_done_callback(lambda done: self._emit(done.result()))
        return turn

    def run_turn(self, text, on_event, mode=TurnMode.MESSAGE):
        raise AssertionError("the REPL runs turns with start_turn")

    def interrupt(self, turn, shown_seq):
        self.calls.append(("interrupt", turn, shown_seq))

    def hang_up(self):
        self.calls.append(("hang_up",))

    def clear(self):
        self.calls.append(("clear",))

    def undo(self):
        self.calls.append(("undo",))
        return "the question", ["[Error] Cannot save the chat: disk full"]

    def system(self, text=None):
        self.calls.append(("system", text))
        self.system_prompt = text or self.system_prompt
        return self.system_prompt

    def set(self, name, value):
        self.calls.append(("set", name, value))
        if name == "max-tokens" and value > 500:
            raise EngineError(ErrorCode.BAD_VALUE, "max-tokens must leave room for your message: at most 500")

    def load_file(self, path):
        self.calls.append(("load_file", path))
        return 3

    def save(self, path, directory, force=False):
        self.calls.append(("save", path, force))
        return path or directory / "chat-new.json", 5

    def attach_file(self, path):
        self.calls.append(("attach_file", path))
        return Attached(path.name, 10, 4, 1)

    def list_models(self):
        return ["fake-model", "other-model"]

    def prepare_switch(self, name):
        self.calls.append(("prepare_switch", name))
        if name not in self.list_models():
            raise EngineError(ErrorCode.NOT_FOUND, f"{name} is not among the models; /model lists them")
        return name

    def switch_model(self, name):
        self.calls.append(("switch_model", name))
        if self.switch.error is None:
            self.model = name
        return self.switch

    def keep_context(self):
        self.calls.append(("keep_context",))

    def note_activity(self):
        pass

    async def keep_context_when_idle(self, say_first):
        await asyncio.Event().wait()  # (never idle here)

    async def context_saved(self):
        pass

    def usage(self):
        return ContextUsage(120, 1000)

    def stats_text(self):
        return "No replies yet."

    def last_question(self):
        return "the question"

    def messages(self):
        return [{"role": "system", "content": self.system_prompt}]

    def snapshot(self):
        return Snapshot("chat-1", [])

    def quit(self, say=None):
        self.calls.append(("quit",))
