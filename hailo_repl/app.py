"""The interactive chat: an asyncio loop driving one prompt_toolkit PromptSession.

A reply runs in an executor thread through the backend protocol; its text crosses to the
loop through a ReplyChannel, a few frames a second. In a terminal the prompt for the next
message is up while the reply streams: the reply goes into the scrollback above it line by
line (hailo_repl.pane), the toolbar stays live, and what the user types shows; Ctrl+C is then
a key that stops the reply (keys.load_reply_bindings). Where nothing can be redrawn
(TERM=dumb) the reply is written as it comes, with no prompt on screen, and Ctrl+C is a
SIGINT that hailo_repl.signals routes to the reply's cancel event. Either way the backend
stops generating and the prompt is back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, cast

from prompt_toolkit import PromptSession
from prompt_toolkit.application import run_in_terminal
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.completion import ThreadedCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.enums import EditingMode
from prompt_toolkit.filters import Condition, is_done, renderer_height_is_known
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.key_binding import merge_key_bindings
from prompt_toolkit.layout import ConditionalContainer, Dimension, FormattedTextControl, HSplit, Layout, Window
from prompt_toolkit.output.vt100 import Vt100_Output
from prompt_toolkit.utils import is_dumb_terminal

from hailo_repl import __version__
from hailo_repl.backends.base import Backend, BackendError
from hailo_repl.chat import KEEPING_DEVICE_CONTEXT, Chat
from hailo_repl.commands import (
    BUILTINS,
    CommandCompleter,
    OffTheLoop,
    Quit,
    Resend,
    Send,
    SwitchModel,
    is_command,
)
from hailo_repl.config import data_dir, log_file, sessions_dir
from hailo_repl.config_file import config_path
from hailo_repl.console import ERROR, INFO, Console, labelled
from hailo_repl.context import ContextOverflowError
from hailo_repl.entry import start_is_over
from hailo_repl.history import input_history
from hailo_repl.keys import EmptyLineInterrupt, keys_welcome_text, load_input_bindings, load_reply_bindings
from hailo_repl.log import logger
from hailo_repl.pane import ReplyPane
from hailo_repl.render import (
    ASSISTANT_PREFIX,
    USER_PREFIX,
    ConsoleScreen,
    ReplyRenderer,
    ReplyScreen,
    color_wanted,
    recent_turns_text,
    show_reply,
)
from hailo_repl.reply_channel import ReplyChannel, ReplyEvent
from hailo_repl.sessions import ChatSummary
from hailo_repl.settings import GENERATION_SETTINGS, SETTINGS_TABLE, ResolvedSettings
from hailo_repl.signals import CtrlC, route_to_loop
from hailo_repl.stats import ReplyStats
from hailo_repl.terminal_modes import keep_pastes_bracketed, restore_raw_mode, restore_typeahead_mode, typeahead_mode
from hailo_repl.toolbar import STYLE, ModelState, ToolbarState, toolbar_fragments
from hailo_repl.wrap import WordWrap

CONTINUATION = " " * len(USER_PREFIX)  # the prompt's lines after the first
SETTLE_NOTICE_AFTER = 0.3  # seconds of waiting for the previous reply before saying so
# No key pressed at the prompt for this long: keep the device context (Chat.keep_device_context).
# It holds the GIL for seconds on a Pi, so a key pressed meanwhile waits: two minutes is longer
# than reading a long reply takes, so the user has most likely stepped away; and it only guards
# against a crash (quit saves anyway), whose cost is the resume reading the chat again.
IDLE_SAVE_SECONDS = 120.0
SENT_AFTER_THE_SAVE = "Your message goes as soon as the device context is kept."
TOOLBAR_REFRESH_SECONDS = 0.5  # the toolbar's clock and figures are never older than this


def welcome_text(chat: Chat) -> str:
    names = " ".join(entry.name for entry in BUILTINS.unique())
    return (
        f"hailo-repl {__version__} — chat with {chat.backend.model_name} on {chat.backend.name}\n"
        f"{keys_welcome_text()}\n"
        f"Commands: {names}\n"
    )


class _PaneStream(io.TextIOBase):
    """The console's stream in a live terminal: above the prompt while one is up."""

    def __init__(self, pane: ReplyPane):
        self.pane = pane

    def write(self, text: str) -> int:
        self.pane.print(text)
        return len(text)


class Repl:
    """The chat's lifecycle: load the model, prompt, run commands and replies, quit.

    It is also what a command sees of the chat (commands.CommandContext).
    """

    def __init__(
        self,
        chat: Chat,
        history: bool = True,
        verbose: bool = False,
        console: Console | None = None,
        settings: dict[str, Any] | None = None,
        config_file: Path | None = None,
        resumed: ChatSummary | None = None,
        on_hang_up: Callable[[], None] = lambda: None,
    ):
        self.chat = chat
        self.verbose = verbose
        self.sessions_dir: Path = sessions_dir()
        self.config_file = config_file or config_path()[0]
        # The value in effect of every setting; /set changes it, and the REPL reads the
        # live ones from here when it uses them (the generation ones live in chat.params).
        self.settings = {setting.name: setting.default for setting in SETTINGS_TABLE} | (settings or {})
        self.settings |= {setting.name: getattr(chat.params, setting.attribute) for setting in GENERATION_SETTINGS}
        self.console = console or Console(wrap_width=self.wrap_width)
        self.resumed = resumed
        self.color = color_wanted(self.settings["color"], os.environ)
        self.model_state = ModelState.LOADING
        self.load_seconds = 0.0
        self.ctrl_c = CtrlC()
        self.quitting = False
        self.exit_code = 0
        self.on_hang_up = on_hang_up  # the terminal went away during a reply, which goes on to its end
        self.hung_up = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: asyncio.Future[None] | None = None  # the thread of the last reply
        self._stats_before: ReplyStats | None = None  # chat.last_stats as that reply began
        self._showing: asyncio.Future[ReplyEvent] | None = None  # the reply on screen, if one is
        self._cancel: threading.Event | None = None  # the reply's, while its thread runs
        self._prompt: asyncio.Future[str] | None = None  # the prompt on screen, if one is
        self._prompt_in_reply = False  # the prompt on screen came up for a reply
        self._handling = False  # a message is being answered: Enter queues, Ctrl+C stops what runs
        self.idle_save_seconds = IDLE_SAVE_SECONDS
        self._last_key = time.monotonic()  # or the last prompt's start
        self._context_save: asyncio.Future[None] | None = None  # an idle save of the device context
        self._drawn = asyncio.Event()  # the prompt has been drawn at least once
        self.session: PromptSession[str] = PromptSession(
            message=[("class:prompt", USER_PREFIX)],
            history=input_history(data_dir() if history else None, warn=self.notice_from_any_thread),
            enable_suspend=True,  # Ctrl+Z at the prompt suspends, as in a shell, instead of typing ^Z
            completer=ThreadedCompleter(CommandCompleter(BUILTINS, self)),
            complete_while_typing=False,
            prompt_continuation=CONTINUATION,
            style=STYLE,
            vi_mode=self.settings["vi-mode"],
        )
        self.pane = ReplyPane(self.session.app)
        replying = Condition(lambda: self._handling)
        self.session.key_bindings = merge_key_bindings(
            [
                load_input_bindings(),
                load_reply_bindings(replying, self._stop_reply, self._queue, self.pane.end_after),
            ]
        )
        self._add_pane_and_toolbar(replying)
        # The reply streams under a live prompt wherever prompt_toolkit redraws the screen.
        self.live = isinstance(self.session.output, Vt100_Output) and not is_dumb_terminal()
        if self.live and console is None:
            self.console = Console(cast(TextIO, _PaneStream(self.pane)), wrap_width=self.wrap_width)

    def _add_pane_and_toolbar(self, replying: Condition) -> None:
        """The prompt's layout with the pane's rows above it and the toolbar below, drawn
        during a reply even before the terminal has said where the cursor is (it may never
        say: PROMPT_TOOLKIT_NO_CPR, some SSH clients); between replies, as prompt_toolkit
        draws a bottom toolbar, once the height below the prompt is known."""
        toolbar = Window(
            FormattedTextControl(self.toolbar, style="class:bottom-toolbar.text"),
            style="class:bottom-toolbar",
            dont_extend_height=True,
            height=Dimension(min=1),
        )
        shown = ~is_done & (renderer_height_is_known | replying | Condition(lambda: self._prompt_in_reply))
        prompt = self.session.layout
        self.session.app.layout = Layout(
            HSplit([self.pane.rows(), prompt.container, ConditionalContainer(toolbar, shown)]),
            focused_element=prompt.current_window,
        )
        self.session.app.key_processor.before_key_press += lambda _: setattr(self, "_last_key", time.monotonic())
        self.session.app.after_render += self._after_render

    def _after_render(self, _app: object) -> None:
        if not self._drawn.is_set():
            self._first_frame()

    def _first_frame(self) -> None:
        """The first prompt is up: what waited for it (a model's load, the collector) goes on."""
        start_is_over()
        self._drawn.set()

    def wrap_width(self) -> int | None:
        """The terminal's width while word-wrap is on (read at each use: a resize applies at once)."""
        return self.session.output.get_size().columns if self.settings["word-wrap"] else None

    def reply_wrap(self, column: int = 0) -> WordWrap | None:
        return WordWrap(lambda: self.wrap_width() or 0, column) if self.settings["word-wrap"] else None

    def toolbar(self) -> StyleAndTextTuples:
        backend = self.chat.backend
        state = ToolbarState(backend.model_name, backend.name, self.model_state)
        app = self.session.app
        if app.editing_mode is EditingMode.VI:
            state.vi_mode = app.vi_state.input_mode
        if self.pane.streaming:  # the chat's own count waits for the reply's thread
            state.usage = self.pane.usage(backend.context_used)
            state.reply = self.pane.progress()
        elif self._worker is not None and not self._worker.done() and self.chat.last_stats is self._stats_before:
            # A stopped reply's thread ends within a token: its figures come then, not the last reply's.
            state.usage = self.pane.usage(backend.context_used)
        elif self.model_state is ModelState.READY:
            state.usage = self.chat.usage()
            state.tokens_per_second = self.chat.last_stats.tokens_per_second if self.chat.last_stats else None
        return toolbar_fragments(state)

    # ---- lifecycle ----------------------------------------------------------------

    def notice_from_any_thread(self, text: str) -> None:
        """An [Info] line from any thread, drawn above the prompt if one is up."""
        if self._loop is None:
            self.console.info(text)
        else:
            self._loop.call_soon_threadsafe(self._say, labelled(INFO, text))

    def _say_each(self, lines: list[str]) -> None:
        for line in lines:
            self._say(line)

    def _say(self, line: str) -> None:
        """A line (labelled), drawn above the prompt if one is up."""
        if self.session.app.is_running and not self.live:
            run_in_terminal(lambda: self.console.say(line))
        else:
            self.console.say(line)

    async def run(self) -> int:
        loop = self._loop = asyncio.get_running_loop()
        route_to_loop(loop, self.ctrl_c, terminate=self.quit, resumed=self._resumed)
        loop.set_exception_handler(self._loop_error)
        self.console.say(welcome_text(self.chat))
        if self.resumed is not None:
            self.show_resumed(self.resumed)
        backend = self.chat.backend
        load = asyncio.ensure_future(self._load(backend))
        load.add_done_callback(self._loaded)
        idle_saves = asyncio.ensure_future(self._keep_context_when_idle())
        toolbar_refresh = asyncio.ensure_future(self._refresh_toolbar())
        try:
            with typeahead_mode():
                if not backend.loads_in_background:
                    start_is_over()  # seconds of loading: the few ms the collector would save are nothing
                    # The load holds the GIL: a Ctrl+C meanwhile is handled only once it ends.
                    self.console.info(f"Loading {backend.model_name}… (Ctrl+C ends the chat once it has loaded)")
                    await asyncio.wait([load])
                    await asyncio.sleep(0)  # a Ctrl+C that waited for the load is handled now
                    if self.ctrl_c.pressed and not self.quitting:
                        self.console.info("Ending the chat (Ctrl+C during the model load).")
                        self.quit(signal.SIGINT)
                if is_dumb_terminal():
                    # prompt_toolkit then prompts through an application of its own (PromptSession.
                    # prompt_async → _dumb_prompt), whose frames this one never sees; the prompt is
                    # plain text, up as soon as it is asked for.
                    self._first_frame()
                try:
                    await self._converse(load)
                finally:
                    # A prompt still up (a queued /quit, a signal) ends in its own raw mode, before the
                    # shell's mode is back: the answer to its last cursor-position request is read,
                    # not echoed on the screen.
                    with contextlib.suppress(OSError):  # (a terminal that went away)
                        await self._end_prompt()
        except OSError as write_error:
            if not self._hung_up(write_error):
                raise
            self.quit(signal.SIGHUP)
        finally:
            idle_saves.cancel()
            toolbar_refresh.cancel()
            await self._settle()
            self._drawn.set()  # a chat ended before its first frame: the load still runs, to be released
            if not load.done():
                self.console.info("Waiting for the model to finish loading, to release it…")
            with contextlib.suppress(Exception):
                await load  # the backend is released only after its load has ended
        if self.model_state is ModelState.FAILED:
            error = load.exception()
            if not isinstance(error, BackendError):
                logger.opt(exception=error).error("model load failed")
            self.console.error(str(error))
            return 1
        return self.exit_code

    async def _load(self, backend: Backend) -> None:
        """The model's load, in a thread. With a backend that loads in the background it starts once
        the first prompt's frame is drawn: the load's imports hold the GIL and would hold that frame up."""
        if backend.loads_in_background:
            await self._drawn.wait()
        started = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(None, backend.load)
        finally:
            self.load_seconds = time.perf_counter() - started

    def show_resumed(self, chat: ChatSummary) -> None:
        """The last turns of a chat just resumed, so the user sees where it stopped."""
        self.console.info(f"Continuing chat {chat.id} from {chat.when()} ({chat.turns} turns, {chat.model}).")
        if chat.model != self.chat.backend.model_name:
            self.console.info(f"It was saved with {chat.model}; it goes on with {self.chat.backend.model_name}.")
        self.console.write(recent_turns_text(self.chat.messages, self.color, self.reply_wrap))

    def _loaded(self, load: asyncio.Future[None]) -> None:
        """The model finished loading: show it in the toolbar, or end the chat if it failed."""
        self.model_state = ModelState.READY if load.exception() is None else ModelState.FAILED
        if self.model_state is ModelState.FAILED:
            self.quit()
        elif self.session.app.is_running:
            self.session.app.invalidate()

    def quit(self, signum: int | None = None) -> None:
        """A signal (SIGTERM, SIGHUP; SIGINT during a load) or a failed load: leave the prompt;
        cleanup follows in run(), which returns 128+signum. A hang-up (SIGHUP: the terminal or
        the SSH link is gone) lets a reply in flight run to its end, to be saved whole; anything
        else stops it (saved interrupted), even one left running by a hang-up."""
        if signum is not None and (not self.quitting or signum != signal.SIGHUP):
            self.exit_code = 128 + signum
        self.quitting = True
        if signum == signal.SIGHUP:
            self._hang_up()
        else:
            self.ctrl_c()
            if self._cancel is not None:
                self._cancel.set()
        self._exit_if_quitting()

    def _hang_up(self) -> None:
        """Nothing can be shown any more: stop showing the reply, but not its thread, which
        run() waits for; any other wait (for the model, for a reply stopped before) ends."""
        if self.hung_up:
            return
        self.hung_up = True
        if self._showing is not None and self._cancel is not None and not self._cancel.is_set():
            logger.info("the terminal hung up during a reply: it runs to its end, then the chat ends")
            self._showing.cancel()
            self.on_hang_up()
        else:
            logger.info("the terminal hung up: the chat ends")
            self.ctrl_c()

    def _resumed(self) -> None:
        """SIGCONT after a Ctrl+Z and `fg`: the shell gave the terminal back in its own mode."""
        app = self.session.app
        if not app.is_running:
            restore_typeahead_mode()
        elif self.live:  # a prompt up while a reply streams (a stop from outside, not Ctrl+Z)
            restore_raw_mode(app.input.fileno())
            app.invalidate()

    def _exit_if_quitting(self) -> None:
        """End the prompt if the chat is quitting (also run as each prompt starts, for a
        quit that came while none was on screen)."""
        app = self.session.app
        # future.done(): Enter may already have given the prompt its result.
        if self.quitting and app.is_running and app.future is not None and not app.future.done():
            app.exit(exception=EOFError)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """An error in a callback or a forgotten task: to the log file, never over the chat; a
        redraw that finds the terminal gone is a hang-up."""
        error = context.get("exception")
        if isinstance(error, OSError) and self._hung_up(error):
            self.quit(signal.SIGHUP)
            return
        logger.opt(exception=error).error("event loop: {}", context.get("message", "error"))

    def _hung_up(self, write_error: OSError) -> bool:
        """Whether a write failed because the terminal went away (its window closed, the SSH link
        dropped): its SIGHUP may come after the first failed write, or not at all."""
        if write_error.errno != errno.EIO or not self._terminal_gone():
            return False
        logger.info("the terminal went away ({})", write_error)
        return True

    def _terminal_gone(self) -> bool:
        """Whether the terminal has hung up: then even its settings cannot be read (EIO)."""
        import termios

        try:
            termios.tcgetattr(self.session.output.fileno())
        except (OSError, termios.error, ValueError, NotImplementedError):
            return True
        return False

    async def _refresh_toolbar(self) -> None:
        """Redraw the toolbar when no frame has for TOOLBAR_REFRESH_SECONDS. (Not prompt_toolkit's
        refresh_interval: it redraws on top of a reply's frames, and each is taken from llama.cpp's
        decoding: see reply_channel.)"""
        app = self.session.app
        while True:
            wait = self.pane.drawn_at + TOOLBAR_REFRESH_SECONDS - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            app.invalidate()
            await asyncio.sleep(TOOLBAR_REFRESH_SECONDS)

    async def _keep_context_when_idle(self) -> None:
        """Keep the device context once nothing has happened at the prompt for idle_save_seconds."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(self.idle_save_seconds / 4, 5.0))
            idle = time.monotonic() - self._last_key >= self.idle_save_seconds
            prompt_up = self.session.app.is_running and self.model_state is ModelState.READY
            if idle and prompt_up and (self._worker is None or self._worker.done()):
                if self.chat.device_context_unsaved():
                    await run_in_terminal(lambda: self.console.info(KEEPING_DEVICE_CONTEXT))  # before it holds the GIL
                    self._context_save = loop.run_in_executor(None, self.chat.keep_device_context)
                    await asyncio.shield(self._context_save)

    async def _converse(self, load: asyncio.Future[None]) -> None:
        while not self.quitting:
            self._last_key = time.monotonic()
            try:
                text = await self._next_message()
            except EOFError:
                return
            except EmptyLineInterrupt:  # Ctrl+C on an empty line: never the end of a chat
                self.console.info("Ctrl+D or /quit ends the chat.")
                continue
            self.ctrl_c.prompt_started()
            keep_pastes_bracketed()
            if not text.strip():
                continue
            if not await self._settle(interruptible=True):
                if not self.quitting:
                    self.console.info("Not sent (Ctrl+C); Up brings the message back.")
                continue
            replace_last = False
            if is_command(text):
                try:
                    outcome = self._run_command(text)
                except Quit:
                    return
                if isinstance(outcome, SwitchModel):
                    if await self._model_ready(load):
                        await self._switch_model(outcome.backend)
                    continue
                if isinstance(outcome, OffTheLoop):
                    self._off_the_loop(outcome, text.split()[0])
                    continue
                if not isinstance(outcome, Send):
                    continue
                text, replace_last = outcome.text, isinstance(outcome, Resend)
            if await self._model_ready(load):
                await self._reply(text, replace_last)
            elif self.ctrl_c.pressed and not self.quitting:
                self.console.info("Not sent (Ctrl+C); Up brings the message back.")

    def _start_prompt(self, in_reply: bool = False) -> asyncio.Future[str]:
        """Put the prompt on screen, with the next message a Ctrl+C gave back in its input line."""
        self.session.editing_mode = EditingMode.VI if self.settings["vi-mode"] else EditingMode.EMACS
        self._prompt_in_reply = in_reply
        default = self.pane.take_given_back()
        # handle_sigint=False: prompt_toolkit would remove our SIGINT handler on exit;
        # set_exception_handler=False: errors go to the log, not over the screen.
        self._prompt = asyncio.ensure_future(
            self.session.prompt_async(
                default=default, pre_run=self._exit_if_quitting, handle_sigint=False, set_exception_handler=False
            )
        )
        return self._prompt

    async def _next_message(self) -> str:
        """What the user sends next: a message queued meanwhile (shown as if typed now, while
        the prompt, if up, stays up with what is being typed), or what they type."""
        self._handling = False
        if self.pane.queued:
            text = self.pane.queued.pop(0)
            self.pane.echo([("class:prompt", USER_PREFIX), ("", text.replace("\n", "\n" + CONTINUATION))])
        elif self.pane.ends_after:  # Ctrl+D during the reply
            self.pane.ends_after = False
            await self._end_prompt()
            raise EOFError
        else:
            prompt, self._prompt = self._prompt or self._start_prompt(), None
            text = await prompt
        self._handling = True
        return text

    async def _end_prompt(self) -> None:
        """Take the prompt off the screen, if one is up (the chat ends)."""
        prompt, self._prompt = self._prompt, None
        app = self.session.app
        if prompt is None:
            return
        if app.future is not None and not app.future.done():
            app.erase_when_done = not app.current_buffer.text  # an empty "You: " left behind says nothing
            app.exit(exception=EOFError)
        with contextlib.suppress(EOFError, EmptyLineInterrupt):
            await prompt

    def _queue(self, buffer: Buffer) -> None:
        """Enter while a reply streams: the message waits for the reply's end (and is in the history now)."""
        buffer.append_to_history()
        self.pane.queue(buffer.text)
        buffer.reset()

    def _stop_reply(self, buffer: Buffer) -> None:
        """Ctrl+C while a message is answered: stop the reply (or the wait before it). The queued
        messages come back unsent, each on its own (a command never merges with text): the first
        in the input line, the others and then what was being typed in the next prompts' input line."""
        queued = self.pane.unqueue()
        if queued:
            buffer.append_to_history()  # what was being typed: Up brings it back too
            self.pane.give_back(queued[1:] + ([buffer.text] if buffer.text else []))
            buffer.document = Document(queued[0], len(queued[0]))
        self.ctrl_c()

    async def _switch_model(self, backend: Backend) -> None:
        """/model: release the model and load the other; the conversation stays. If the
        other fails to load, the chat goes back to the one it had."""
        loop = asyncio.get_running_loop()
        old = self.chat.backend
        self.console.info(f"Releasing {old.model_name} and loading {backend.model_name}…")
        self.model_state = ModelState.LOADING
        try:
            await loop.run_in_executor(None, self.chat.keep_device_context, self.console.info)
            await loop.run_in_executor(None, old.release)
            await loop.run_in_executor(None, backend.load)
        except Exception as error:
            if not isinstance(error, BackendError):
                logger.opt(exception=error).error("loading {} failed", backend.model_name)
            self.console.error(f"{error} — going on with {old.model_name}")
            with contextlib.suppress(Exception):
                await loop.run_in_executor(None, backend.release)
            try:
                await loop.run_in_executor(None, old.load)
            except Exception as again:
                logger.opt(exception=again).error("reloading {} failed", old.model_name)
                self.console.error(f"{old.model_name} failed to load again ({again}); ending the chat")
                self.exit_code = 1
                self.quit()
                return
        else:
            self.chat.backend = backend
            self.console.info(f"Now chatting with {backend.model_name}; the conversation goes on.")
        self.model_state = ModelState.READY

    def _off_the_loop(self, command: OffTheLoop, word: str) -> None:
        """Run a command's file reading in a thread; its text comes above the prompt when done."""

        def done(work: asyncio.Future[str]) -> None:
            try:
                self._say(work.result())
            except Exception as error:
                logger.opt(exception=error).error("command {} failed", word)
                self._say(labelled(ERROR, f"{word} failed: {error} (details in {log_file()})"))

        asyncio.get_running_loop().run_in_executor(None, command.work).add_done_callback(done)

    def _run_command(self, text: str) -> Send | SwitchModel | OffTheLoop | None:
        entry, argument, word = BUILTINS.parse(text)
        if entry is None:
            self.console.say(BUILTINS.unknown_message(word))
            return None
        try:
            return entry.handler(self, argument)
        except Quit:
            raise
        except Exception as error:
            logger.exception("command {} failed", word)
            self.console.error(f"{word} failed: {error} (details in {log_file()})")
            return None

    async def _model_ready(self, load: asyncio.Future[None]) -> bool:
        """Wait for the model if it is still loading. False if it failed to load, or a
        Ctrl+C (or a quit) came since the prompt."""
        if not load.done():
            self.console.info("Waiting for the model to load… (Ctrl+C to go back)")
            waiting = asyncio.ensure_future(asyncio.shield(load))
            with self.ctrl_c.stopping(waiting.cancel):
                await asyncio.wait([waiting])
        return not self.ctrl_c.pressed and load.exception() is None

    async def _settle(self, interruptible: bool = False) -> bool:
        """Wait for the previous reply's thread, so the conversation is complete again.

        A device stops only at its next token (after a prompt evaluation, or a stall of
        up to HailoRT's 2-minute request timeout), so with `interruptible` a Ctrl+C ends
        the wait instead: False then, and the thread is still running.
        """
        if self._context_save is not None:  # an idle save that a key press came during
            if not self._context_save.done():
                self.console.info(SENT_AFTER_THE_SAVE)
            await asyncio.wait([self._context_save])
            self._context_save = None
        worker = self._worker
        if worker is None:
            return True
        done, _ = await asyncio.wait([worker], timeout=SETTLE_NOTICE_AFTER)
        if not done and interruptible:
            waiting_for = "to be saved" if self.chat.saving else "to end on the device"
            self.console.info(f"Waiting for the previous reply {waiting_for}… (Ctrl+C to go back)")
            waiting = asyncio.ensure_future(asyncio.shield(worker))
            with self.ctrl_c.stopping(waiting.cancel):
                await asyncio.wait([waiting])
            if not worker.done():
                return False
        elif not done:
            if not self.hung_up:
                waiting_for = "to be saved" if self.chat.saving else "to end, to release the model"
                self.console.info(f"Waiting for the previous reply {waiting_for}…")
            await asyncio.wait([worker])
        self._worker = None
        return True

    # ---- one reply ------------------------------------------------------------------

    async def _reply(self, text: str, replace_last: bool = False) -> None:
        loop = asyncio.get_running_loop()
        events = ReplyChannel(loop)
        cancel = threading.Event()
        usage_before = self.chat.usage() if self.live else None  # read before the reply's thread uses the backend
        self._stats_before = self.chat.last_stats
        self._worker = loop.run_in_executor(None, self._generate, text, replace_last, cancel, events)
        self._worker.add_done_callback(lambda _: self.session.app.invalidate())  # the toolbar: this reply's figures

        def interrupt() -> None:
            cancel.set()
            events.put(ReplyEvent.INTERRUPTED)

        ended = None
        renderer = ReplyRenderer(self.color, self.reply_wrap(len(ASSISTANT_PREFIX)))
        screen: ReplyScreen = ConsoleScreen(self.console, renderer)
        if self.live:
            screen = self.pane
            assert usage_before is not None
            self.pane.begin(usage_before)
            if self._prompt is None:
                self._start_prompt(in_reply=True)
        showing = self._showing = asyncio.ensure_future(show_reply(events, renderer, self.console, screen))
        self._cancel = cancel
        try:
            with self.ctrl_c.stopping(interrupt):
                await asyncio.wait([showing])
            ended = None if showing.cancelled() else showing.result()
        except OSError as write_error:
            if not self._hung_up(write_error):
                raise
            self.quit(signal.SIGHUP)
        finally:
            self._showing = None
            if not self.hung_up:
                showing.cancel()
                cancel.set()  # if showing ended abnormally, the generation must end too
                screen.end("")  # (a reply that ended abnormally: what came stays, then a blank line)
        if not self.hung_up:
            # Lines that came after the reply's end (its save's, or an interrupted one's): once its thread is done.
            self._worker.add_done_callback(lambda _: self._say_each(events.notices_left()))
        stats = self.chat.last_stats
        if self.verbose and ended is ReplyEvent.DONE and stats is not None:  # DONE comes after the stats
            if len(self.chat.session_stats) == 1:
                stats.load = self.load_seconds
            self.console.say(stats.verbose_block() + "\n")

    def _generate(
        self,
        text: str,
        replace_last: bool,
        cancel: threading.Event,
        events: ReplyChannel,
    ) -> None:
        """The executor thread's part of a reply: run it, posting each event to the loop. The
        reply is shown ended before it is saved (a save may wait for a lock); the save's lines
        come after it (_reply)."""
        notify: Callable[[str], None] = lambda line: events.put(ReplyEvent.NOTICE, line)  # noqa: E731
        ended = threading.Event()

        def end() -> None:
            ended.set()
            events.put(ReplyEvent.DONE)

        try:
            reply = self.chat.reply(text, cancel, notify=notify, replace_last=replace_last, ended=end)
            with contextlib.closing(reply) as pieces:
                for piece in pieces:
                    if not cancel.is_set():  # else the reply ends within a token (closing it early would abort at once)
                        events.put_text(piece)
            if not ended.is_set():
                events.put(ReplyEvent.DONE)
        except (BackendError, ContextOverflowError) as error:
            events.put(ReplyEvent.ERROR, str(error))
        except Exception as error:
            logger.exception("reply failed")
            events.put(ReplyEvent.ERROR, f"unexpected {type(error).__name__}: {error} (details in {log_file()})")


def run_repl(
    chat: Chat,
    settings: ResolvedSettings,
    config_file: Path,
    resumed: ChatSummary | None = None,
    on_hang_up: Callable[[], None] = lambda: None,
) -> int:
    repl = Repl(
        chat,
        settings["history"],
        settings["verbose"],
        settings=settings.values,
        config_file=config_file,
        resumed=resumed,
        on_hang_up=on_hang_up,
    )
    return asyncio.run(repl.run())
