"""`LocalEngine`: the Engine in this process, over a `Chat` and its backend.

It owns what the terminal used to reach into: the model's load, the turn's worker thread,
/model switching with its fallback, and the device-context policy (kept when the chat is idle,
at /save, before a switch or a resume, at quit). The terminal reads nothing of the chat on its
loop: what changes reaches it as events (engine.api).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from hailo_repl.backends import backend_for_model, model_names
from hailo_repl.backends.base import Backend, BackendError, Message
from hailo_repl.chat import KEEPING_DEVICE_CONTEXT, Chat, ShownUpTo
from hailo_repl.config import log_file
from hailo_repl.console import INFO, labelled
from hailo_repl.context import ContextOverflowError, ContextUsage
from hailo_repl.conversation import ConversationFileError, load_conversation
from hailo_repl.engine import ops
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
    TurnStarted,
    TurnText,
    UsageChanged,
)
from hailo_repl.engine.turns import TurnBuffer
from hailo_repl.log import logger
from hailo_repl.models import ModelNotFoundError
from hailo_repl.reply_channel import ReplyChannel, ReplyEvent

# No key pressed at the prompt for this long: keep the device context (Chat.keep_device_context).
# It holds the GIL for seconds on a Pi, so a key pressed meanwhile waits: two minutes is longer
# than reading a long reply takes, so the user has most likely stepped away; and it only guards
# against a crash (quit saves anyway), whose cost is the resume reading the chat again.
IDLE_SAVE_SECONDS = 120.0


class LocalTurn:
    """A turn answered in an executor thread; its events reach the loop through a ReplyChannel."""

    def __init__(self, turn: int, channel: ReplyChannel):
        self.id = turn
        self.channel = channel
        self.cancel = threading.Event()
        self.shown = ShownUpTo()
        self.finished: asyncio.Future[TurnCompleted]  # set as the worker starts

    async def next_event(self) -> TurnEvent:
        return await self.channel.next_event()

    def next_text_at_once(self) -> None:
        self.channel.next_text_at_once()

    def stop_showing(self) -> None:
        self.channel.cut()

    def is_finished(self) -> bool:
        return self.finished.done()

    def late_notices(self) -> list[str]:
        return self.channel.notices_left()


class LocalEngine:
    """The chat, its model and the turn in flight, in this process (engine.api.Engine)."""

    def __init__(self, chat: Chat, on_hang_up: Callable[[str], None] = lambda chat: None):
        self.chat = chat
        # The terminal hung up during a turn, which goes on to its end: told the chat's id (the
        # command line notes in the lock file that this process finishes a reply there).
        self.on_hang_up = on_hang_up
        self.model_state = ModelState.LOADING
        self.load_seconds = 0.0
        self.turns = TurnBuffer()
        self.idle_save_seconds = IDLE_SAVE_SECONDS
        self._listeners: list[Listener] = []
        self._turn_ids = itertools.count(1)
        self._turn: LocalTurn | None = None
        self._running_here = False  # a turn runs on the caller's thread (run_turn: -p, pipes)
        self._active_at = time.monotonic()  # the user's last key or prompt
        self._context_save: asyncio.Future[None] | None = None  # an idle save of the device context
        self._busy: Busy | None = None
        self._switch_to: tuple[str, Backend] | None = None  # /model's backend, checked, not loaded yet
        # Every turn on one thread: llama.cpp's OpenMP makes a team of threads for each thread that
        # decodes, and with teams beyond the cores libgomp stops spinning at its barriers (its
        # throttled spin count): turns on the loop's executor, a new thread now and then in the
        # engine process, decoded at 0.6x raw llama-cpp-python there (benchmarks/README.md).
        self._turn_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="turn")

    # ---- events ------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _emit(self, event: Event) -> None:
        for listener in self._listeners:
            listener(event)

    def _state(self, state: ModelState, busy: Busy | None = None, error: str | None = None) -> None:
        self.model_state, self._busy = state, busy
        backend = self.chat.backend
        self._emit(EngineState(self.turns.next_seq(), state, backend.model_name, backend.name, busy, error))

    def _changed(self, why: ChatChange) -> None:
        self._emit(ChatChanged(self.turns.next_seq(), self.chat.session_id, why))
        self._usage_changed()

    def _usage_changed(self) -> None:
        """The context's fill after a change, for the toolbar (once the model can count)."""
        if self.model_state is ModelState.READY:
            self._emit(UsageChanged(self.turns.next_seq(), self.chat.usage()))

    # ---- what the terminal reads ----------------------------------------------------------

    def status(self) -> Status:
        backend, params = self.chat.backend, self.chat.params
        return Status(
            backend.model_name,
            backend.name,
            self.model_state,
            self.chat.session_id,
            backend.loads_in_background,
            {name: getattr(params, setting.attribute) for name, setting in ops.GENERATION.items()},
            self.load_seconds,
            self.chat.saving,
            self.chat.unsaved,
            Busy.SAVING_CONTEXT if self._context_save is not None and not self._context_save.done() else self._busy,
        )

    def usage(self) -> ContextUsage:
        return self.chat.usage()

    def stats_text(self) -> str:
        return self.chat.stats_text()

    def last_question(self) -> str | None:
        return self.chat.last_question()

    def messages(self) -> list[Message]:
        return list(self.chat.messages)

    def snapshot(self) -> Snapshot:
        return self.turns.snapshot(self.chat.session_id, self.chat.messages)

    # ---- the model -------------------------------------------------------------------------

    def load(self) -> None:
        """Load the model (blocks: run it in a thread). A failure to tell the user of is an
        EngineError (its line); anything else is a bug, raised as it is."""
        started = time.perf_counter()
        try:
            self.chat.backend.load()
        except (BackendError, ModelNotFoundError) as error:
            self._state(ModelState.FAILED, error=str(error))
            raise EngineError(ErrorCode.LOAD_FAILED, str(error)) from error
        except BaseException as error:
            self._state(ModelState.FAILED, error=str(error))
            raise
        finally:
            self.load_seconds = time.perf_counter() - started
        self._state(ModelState.READY)
        self._usage_changed()

    def list_models(self) -> list[str]:
        try:
            return model_names(self.chat.backend)
        except (BackendError, ModelNotFoundError) as error:
            raise EngineError(ErrorCode.NOT_FOUND, str(error)) from None

    def prepare_switch(self, name: str) -> str:
        """Check that model `name` can be switched to; the name it goes by (EngineError NOT_FOUND)."""
        try:
            self._switch_to = (name, backend_for_model(self.chat.backend, name))
        except (BackendError, ModelNotFoundError) as error:
            raise EngineError(ErrorCode.NOT_FOUND, str(error)) from None
        return self._switch_to[1].model_name

    def switch_model(self, name: str) -> Switched:
        """/model (blocks): keep the device context, release the model and load `name`. If that
        fails to load, the chat goes back to the model it had."""
        if self._switch_to is None or self._switch_to[0] != name:
            self.prepare_switch(name)
        assert self._switch_to is not None
        backend, self._switch_to = self._switch_to[1], None
        old = self.chat.backend
        self._state(ModelState.LOADING, Busy.SWITCHING_MODEL)
        try:
            self.chat.keep_device_context(self._notice)
            old.release()
            backend.load()
        except Exception as error:
            if not isinstance(error, BackendError):
                logger.opt(exception=error).error("loading {} failed", backend.model_name)
            with contextlib.suppress(Exception):
                backend.release()
            try:
                old.load()
            except Exception as again:
                logger.opt(exception=again).error("reloading {} failed", old.model_name)
                return Switched(str(error), f"{old.model_name} failed to load again ({again}); ending the chat")
            self._state(ModelState.READY)
            return Switched(str(error))
        self.chat.backend = backend
        self._state(ModelState.READY)
        self._usage_changed()
        return Switched()

    # ---- the device context ------------------------------------------------------------------

    def keep_context(self) -> None:
        """Keep the device context if the chat changed since and keeping it pays (blocks for
        seconds on a Hailo: after /save): its lines (KEEPING_DEVICE_CONTEXT first, NOT_KEPT after
        one that failed) reach the terminal as EngineNotice events."""
        self._keep_context(self._notice)

    def _keep_context(self, say: Callable[[str], None] | None) -> None:
        """keep_context, said first as busy (a turn waits), its lines to `say` (None: none)."""
        if self.chat.device_context_unsaved():
            self._state(self.model_state, Busy.SAVING_CONTEXT)
            try:
                self.chat.keep_device_context(say)
            finally:
                self._state(self.model_state)

    def _notice(self, text: str) -> None:
        """A line about the engine's own work (keeping the device context): to the terminal now,
        on the thread that does it (the line before a save must come before the save)."""
        self._emit(EngineNotice(self.turns.next_seq(), labelled(INFO, text)))

    def note_activity(self) -> None:
        """The user is at the terminal (a key, a new prompt): the idle save waits."""
        self._active_at = time.monotonic()

    async def keep_context_when_idle(self, say_first: Callable[[str], Awaitable[None]]) -> None:
        """Keep the device context once the user has done nothing for idle_save_seconds, no turn
        running and the model ready (run as a task on the terminal's loop). The save holds the GIL
        for seconds on a Pi: `say_first` has the terminal show its line before it starts."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(self.idle_save_seconds / 4, 5.0))
            idle = time.monotonic() - self._active_at >= self.idle_save_seconds
            turn_running = self._turn is not None and not self._turn.is_finished()
            if idle and self.model_state is ModelState.READY and not turn_running:
                if self.chat.device_context_unsaved():
                    await say_first(labelled(INFO, KEEPING_DEVICE_CONTEXT))
                    self._context_save = loop.run_in_executor(None, self._keep_context, None)
                    await asyncio.shield(self._context_save)

    async def context_saved(self) -> None:
        """Until an idle save that a key press came during has ended."""
        if self._context_save is not None:
            await asyncio.wait([self._context_save])
            self._context_save = None

    def quit(self, say: Callable[[str], None] | None = None) -> None:
        """Keep the device context and release the model (blocks). `say` gets the line before a
        save the user waits for (KEEPING_DEVICE_CONTEXT: seconds on a Pi), and NOT_KEPT after one
        that failed; none when there is nothing to keep."""
        self._keep_context(say)
        self.chat.backend.release()
        self._listeners.clear()  # (the terminal is gone too)

    # ---- turns -------------------------------------------------------------------------------

    def start_turn(self, text: str, mode: TurnMode = TurnMode.MESSAGE) -> LocalTurn:
        """Answer `text` in an executor thread (call from the running loop)."""
        loop = asyncio.get_running_loop()
        turn_id = next(self._turn_ids)
        turn = LocalTurn(turn_id, ReplyChannel(loop, turn=turn_id))
        turn.finished = loop.run_in_executor(self._turn_thread, self._work, turn, text, mode)
        self._turn = turn
        return turn

    def _work(self, turn: LocalTurn, text: str, mode: TurnMode) -> TurnCompleted:
        """The executor thread's part of a turn: run it, posting each event to the loop."""
        channel = turn.channel

        def post(event: TurnEvent) -> None:
            # After an interrupt no text is shown: the reply ends within a token (closing it early
            # would abort at once, holding the GIL on a Hailo).
            if isinstance(event, TurnText) and not turn.cancel.is_set():
                channel.put_text(event.text, event.seq)
            elif isinstance(event, TurnNotice):
                channel.put(ReplyEvent.NOTICE, event.line, event.seq)
            elif isinstance(event, TurnCompleted):
                end = ReplyEvent.ERROR if event.reason is TurnEnd.ERROR else ReplyEvent.DONE
                channel.put(end, event, event.seq)

        try:
            return self._answer(turn.id, text, mode, turn.cancel, turn.shown, post, keep=True)
        except BaseException as error:  # a bug here: the screen still gets its end
            logger.exception("turn failed")
            channel.put(ReplyEvent.ERROR, f"unexpected {type(error).__name__}: {error} (details in {log_file()})")
            raise

    def run_turn(
        self, text: str, on_event: Callable[[TurnEvent], None], mode: TurnMode = TurnMode.MESSAGE
    ) -> TurnCompleted:
        """Answer `text` on this thread (-p, pipes), each event to `on_event` as it comes. A
        signal's exception raised meanwhile (SIGTERM's SystemExit, Ctrl+C) ends the reply,
        kept interrupted, and goes on up. Its events are not kept for a terminal that arrives
        (none does): only numbered."""
        self._running_here = True
        try:
            return self._answer(next(self._turn_ids), text, mode, threading.Event(), None, on_event, keep=False)
        finally:
            self._running_here = False

    def interrupt(self, turn: int, shown_seq: int | None) -> None:
        """Stop `turn`, keeping its reply up to the text event `shown_seq` the terminal showed
        (None: all of it, when no terminal shows it)."""
        current = self._turn
        if current is None or current.id != turn or current.cancel.is_set():
            return
        if shown_seq is not None:
            current.shown.keep = self.turns.raw_shown(turn, shown_seq)
        current.cancel.set()

    def hang_up(self) -> None:
        """The terminal is gone (SIGHUP, or EIO while drawing): the turn in flight is not stopped
        but runs to its end, kept whole and saved; quit() then keeps the device context and
        releases the model, as at any end."""
        current = self._turn
        if current is not None and not current.is_finished() and not current.cancel.is_set() or self._running_here:
            self.on_hang_up(self.chat.session_id)

    def _answer(
        self,
        turn: int,
        text: str,
        mode: TurnMode,
        cancel: threading.Event,
        shown: ShownUpTo | None,
        post: Callable[[TurnEvent], None],
        keep: bool,
    ) -> TurnCompleted:
        """Run a turn, each event to `post` as it comes. Its TurnCompleted comes as soon as the
        reply has ended and is kept, before the chat is saved (a save may wait seconds for a lock);
        the save's lines, and a ChatChanged if it went on as a new chat, come after it. With
        `keep` the turn's events are kept for a terminal that arrives meanwhile (snapshot)."""
        chat, seq, shown = self.chat, self.turns.next_seq, shown or ShownUpTo()
        started = TurnStarted(seq(), turn, mode, text)
        self.turns.begin(started, keep)
        self._emit(started)
        chat_before = chat.session_id
        completed: TurnCompleted | None = None

        def notify(line: str) -> None:
            notice = TurnNotice(seq(), turn, line)
            self.turns.add(notice)
            post(notice)

        def end(error: str | None = None) -> None:
            nonlocal completed
            completed = self._completed(turn, seq(), error, cancel.is_set())
            post(completed)

        try:
            replace_last = mode is TurnMode.RETRY
            with contextlib.closing(chat.reply(text, cancel, notify, replace_last, shown, ended=end)) as pieces:
                for piece in pieces:
                    post(self.turns.add_text(turn, piece, shown.produced))
        except (BackendError, ContextOverflowError) as failure:
            end(str(failure))
        except Exception as failure:
            logger.exception("reply failed")
            end(f"unexpected {type(failure).__name__}: {failure} (details in {log_file()})")
        if completed is None:  # (a reply closed early by its reader)
            end()
        assert completed is not None
        if chat.session_id != chat_before:  # another process saved it meanwhile: a new chat now
            self._emit(ChatChanged(seq(), chat.session_id, ChatChange.FORKED))
        return completed

    def _completed(self, turn: int, seq: int, error: str | None, interrupted: bool) -> TurnCompleted:
        """How the turn ended, with the reply's stats and the context's fill after it."""
        chat = self.chat
        stats = chat.last_stats
        if stats is not None and chat.session_stats[:1] == [stats]:
            stats.load = self.load_seconds  # the first reply's --verbose block counts the load
        reason = TurnEnd.ERROR if error is not None else ops.turn_end(chat, interrupted)
        try:
            usage: ContextUsage | None = chat.usage()
        except Exception:  # the turn is over whatever the count does
            logger.exception("the context's usage after a turn")
            usage = None
        completed = TurnCompleted(seq, turn, reason, error, stats, usage, chat.session_id)
        self.turns.add(completed)
        self._emit(completed)  # (its usage is the context's after the turn: no UsageChanged beside it)
        return completed

    # ---- the chat ------------------------------------------------------------------------------

    def resume(self, chat_id: str) -> None:
        try:
            self.chat.resume(chat_id, self._notice)  # (it keeps the device context of the chat it leaves)
        except ConversationFileError as error:
            raise EngineError(ErrorCode.BAD_FILE, str(error)) from None
        self._changed(ChatChange.RESUMED)

    def clear(self) -> None:
        self.chat.clear()
        self._changed(ChatChange.CLEARED)

    def undo(self) -> tuple[str | None, list[str]]:
        """Drop the last question and its reply: their text (None if none), and lines about the save."""
        lines: list[str] = []
        text = self.chat.undo(notify=lines.append)
        if text is not None:
            self._changed(ChatChange.UNDONE)
        return text, lines

    def system(self, text: str | None = None) -> str:
        if text is not None:
            self.chat.set_system_prompt(text)
            self._changed(ChatChange.SYSTEM)
        return self.chat.system_prompt

    def set(self, name: str, value: object) -> None:
        ops.set_generation(self.chat, name, value)
        self._changed(ChatChange.PARAMS)

    def load_file(self, path: Path) -> int:
        try:
            messages = load_conversation(path)
        except ConversationFileError as error:
            raise EngineError(ErrorCode.BAD_FILE, str(error)) from None
        self.chat.replace_messages(messages)
        self._changed(ChatChange.LOADED)
        return len(messages)

    def save(self, path: Path | None, directory: Path, force: bool = False) -> tuple[Path, int]:
        """Write the conversation (the device context is kept after: keep_context)."""
        return ops.save(self.chat, path, directory, force)

    def attach_file(self, path: Path) -> Attached:
        return ops.attach_file(self.chat, path)
