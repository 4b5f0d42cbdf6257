"""The interactive chat: an asyncio loop driving one prompt_toolkit PromptSession.

A reply runs in an executor thread through the backend protocol; its text crosses to
the loop through an asyncio queue and is written while no prompt is on screen (a
prompt redrawn under streaming text garbles partial lines). Ctrl+C during a reply is
a SIGINT (only a prompt puts the terminal in raw mode): its handler sets the reply's
cancel event, so the backend stops generating, and the loop goes back to the prompt
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time

from loguru import logger
from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings

from hailo_repl import __version__
from hailo_repl.backends.base import BackendError
from hailo_repl.chat import Chat
from hailo_repl.commands import BUILTINS, CommandCompleter, Quit, Resend, is_command
from hailo_repl.config import data_dir, log_file
from hailo_repl.context import ContextOverflowError
from hailo_repl.render import ReplyRenderer
from hailo_repl.toolbar import STYLE, ToolbarState, toolbar_fragments

ASSISTANT_PREFIX = "Assistant: "
INTERRUPTED_NOTE = " [interrupted]"
SETTLE_NOTICE_AFTER = 0.3  # seconds of waiting for the previous reply before saying so
BRACKETED_PASTE_ON, BRACKETED_PASTE_OFF = "\x1b[?2004h", "\x1b[?2004l"


def load_input_bindings() -> KeyBindings:
    """Enter sends (prompt_toolkit's default); these add newlines and Ctrl+C's behaviour."""
    bindings = KeyBindings()

    @bindings.add("escape", "enter")  # Alt+Enter
    @bindings.add("c-j")
    def _newline(event):
        event.current_buffer.insert_text("\n")

    @bindings.add("c-c")
    def _clear_or_quit(event):
        if event.current_buffer.text:
            event.current_buffer.reset()
        else:
            event.app.exit(exception=EOFError)

    return bindings


@contextlib.contextmanager
def typeahead_mode():
    """The terminal between prompts (while a reply streams, a command runs, the model
    loads): keys typed ahead wait, unechoed and unchanged, for the next prompt, and
    Ctrl+C still raises SIGINT. Each prompt takes raw mode and gives this back.

    In the terminal's cooked mode an Enter typed ahead would reach the prompt as a
    line feed (ICRNL), which is Ctrl+J, a newline, so the message would never be sent.
    """
    try:
        import termios
    except ImportError:  # not a POSIX system
        yield
        return
    try:
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
    except (OSError, ValueError, termios.error):  # stdin is not a terminal
        yield
        return
    changed = list(saved)
    changed[0] &= ~termios.ICRNL  # iflag
    changed[3] &= ~(termios.ICANON | termios.ECHO)  # lflag; ISIG stays on
    termios.tcsetattr(fd, termios.TCSANOW, changed)
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):  # the terminal may be gone (hang-up)
            termios.tcsetattr(fd, termios.TCSANOW, saved)
        if sys.stdout.isatty():
            with contextlib.suppress(OSError):
                sys.stdout.write(BRACKETED_PASTE_OFF)
                sys.stdout.flush()


def keep_pastes_bracketed() -> None:
    """A prompt turns bracketed paste off as it ends; turned back on, a block of lines
    pasted during a reply still reaches the next prompt as one paste, one message."""
    if sys.stdout.isatty():
        sys.stdout.write(BRACKETED_PASTE_ON)
        sys.stdout.flush()


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """An error in a callback or a forgotten task: to the log file, never over the chat."""
    error = context.get("exception")
    logger.opt(exception=error).error("event loop: {}", context.get("message", "error"))


def welcome_text(chat: Chat) -> str:
    names = " ".join(entry.name for entry in BUILTINS.unique())
    return (
        f"hailo-repl {__version__} — chat with {chat.backend.model_name} on {chat.backend.name}\n"
        f"Type a message and press Enter (Alt+Enter for a new line). Ctrl+C stops a reply; "
        f"Ctrl+D or /quit ends the chat.\n"
        f"Commands: {names}\n"
    )


class Repl:
    def __init__(self, chat: Chat, history: bool = True, verbose: bool = False):
        self.chat = chat
        self.verbose = verbose
        self.sessions_dir = data_dir() / "sessions"
        self.color = not os.environ.get("NO_COLOR")
        self.status = "loading"
        self._worker: asyncio.Future | None = None  # the thread of the last reply
        # Ctrl+C outside the prompt: what it stops now (the reply, or the wait for the
        # model), and whether one came since the last prompt started.
        self._on_interrupt = None
        self._interrupted = False
        self.load_seconds = 0.0
        self._quitting = False
        self.session = PromptSession(
            message=[("class:prompt", "You: ")],
            history=self._history(history),
            completer=CommandCompleter(BUILTINS),
            complete_while_typing=False,
            bottom_toolbar=self.toolbar,
            key_bindings=load_input_bindings(),
            prompt_continuation="     ",
            style=STYLE,
            refresh_interval=0.5,
        )

    @staticmethod
    def _history(enabled: bool):
        if not enabled:
            return InMemoryHistory()
        path = data_dir() / "history"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            return InMemoryHistory()
        return FileHistory(str(path))

    def toolbar(self):
        backend = self.chat.backend
        state = ToolbarState(backend.model_name, backend.name, self.status)
        if self.status == "ready":
            state.usage = self.chat.usage()
            state.tokens_per_second = self.chat.last_stats.tokens_per_second if self.chat.last_stats else None
        return toolbar_fragments(state)

    def say(self, text: str) -> None:
        print(text, flush=True)

    # ---- lifecycle ----------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, self.quit)
        # While a prompt runs the terminal is raw and Ctrl+C is a key; at any other time
        # it is SIGINT, and this handler owns it.
        loop.add_signal_handler(signal.SIGINT, self._interrupt)
        loop.set_exception_handler(_log_loop_error)
        self.say(welcome_text(self.chat))
        backend = self.chat.backend
        started = time.perf_counter()
        load = loop.run_in_executor(None, backend.load)
        load.add_done_callback(lambda _: setattr(self, "load_seconds", time.perf_counter() - started))
        load.add_done_callback(self._loaded)
        try:
            with typeahead_mode():
                if not backend.loads_in_background:
                    self.say(f"[Info] Loading {backend.model_name}…")
                    await asyncio.wait([load])
                await self._converse(load)
        finally:
            await self._settle()
            if not load.done():
                self.say("[Info] Waiting for the model to finish loading, to release it…")
            with contextlib.suppress(Exception):
                await load  # the backend is released only after its load has ended
        if self.status == "failed":
            error = load.exception()
            if not isinstance(error, BackendError):
                logger.opt(exception=error).error("model load failed")
            self.say(f"[Error] {error}")
            return 1
        return 0

    def _loaded(self, load: asyncio.Future) -> None:
        """The model finished loading: show it in the toolbar, or end the chat if it failed."""
        self.status = "ready" if load.exception() is None else "failed"
        if self.status == "failed":
            self.quit()
        elif self.session.app.is_running:
            self.session.app.invalidate()

    def quit(self) -> None:
        """SIGTERM, SIGHUP or a failed load: stop any reply and leave the prompt; cleanup
        follows in run()."""
        self._quitting = True
        self._interrupt()
        self._exit_if_quitting()

    def _interrupt(self) -> None:
        self._interrupted = True
        if self._on_interrupt is not None:
            self._on_interrupt()

    def _exit_if_quitting(self) -> None:
        """End the prompt if the chat is quitting (also run as each prompt starts, for a
        quit that came while none was on screen)."""
        app = self.session.app
        # future.done(): Enter may already have given the prompt its result.
        if self._quitting and app.is_running and app.future is not None and not app.future.done():
            app.exit(exception=EOFError)

    async def _converse(self, load: asyncio.Future) -> None:
        while not self._quitting:
            try:
                # handle_sigint=False: prompt_toolkit would remove our SIGINT handler on exit;
                # set_exception_handler=False: errors go to the log, not over the screen.
                text = await self.session.prompt_async(
                    pre_run=self._exit_if_quitting, handle_sigint=False, set_exception_handler=False
                )
            except (EOFError, KeyboardInterrupt):
                return
            self._interrupted = False  # only a Ctrl+C from now on is about this message
            keep_pastes_bracketed()
            if not text.strip():
                continue
            await self._settle()
            replace_last = False
            if is_command(text):
                try:
                    outcome = self._run_command(text)
                except Quit:
                    return
                if not isinstance(outcome, Resend):
                    continue
                text, replace_last = outcome.text, True
            if await self._model_ready(load):
                await self._reply(text, replace_last)
            elif self._interrupted and not self._quitting:
                self.say("[Info] Not sent (Ctrl+C); Up brings the message back.")

    def _run_command(self, text: str) -> Resend | None:
        entry, argument, word = BUILTINS.parse(text)
        if entry is None:
            self.say(BUILTINS.unknown_message(word))
            return None
        try:
            return entry.handler(self, argument)
        except Quit:
            raise
        except Exception as error:
            logger.exception("command {} failed", word)
            self.say(f"[Error] {word} failed: {error} (details in {log_file()})")
            return None

    async def _model_ready(self, load: asyncio.Future) -> bool:
        """Wait for the model if it is still loading. False if it failed to load, or a
        Ctrl+C (or a quit) came since the prompt."""
        if not load.done():
            self.say("[Info] Waiting for the model to load… (Ctrl+C to go back)")
            waiting = asyncio.ensure_future(asyncio.shield(load))
            self._on_interrupt = waiting.cancel
            try:
                await asyncio.wait([waiting])
            finally:
                self._on_interrupt = None
        return not self._interrupted and load.exception() is None

    async def _settle(self) -> None:
        """Wait for the previous reply's thread, so the conversation is complete again."""
        if self._worker is None:
            return
        done, _ = await asyncio.wait([self._worker], timeout=SETTLE_NOTICE_AFTER)
        if not done:
            # After a Ctrl+C during a device's prompt evaluation, the device stops at its first token.
            self.say("[Info] Finishing the previous reply…")
            await asyncio.wait([self._worker])
        self._worker = None

    # ---- one reply ------------------------------------------------------------------

    async def _reply(self, text: str, replace_last: bool = False) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def post(kind: str, value=None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def generate() -> None:
            try:
                reply = self.chat.reply(text, cancel, notify=lambda line: post("notice", line), replace_last=replace_last)
                with contextlib.closing(reply) as pieces:
                    for piece in pieces:
                        if cancel.is_set():
                            break
                        post("text", piece)
                post("done")
            except (BackendError, ContextOverflowError) as error:
                post("error", str(error))
            except Exception as error:
                logger.exception("reply failed")
                post("error", f"unexpected {type(error).__name__}: {error} (details in {log_file()})")

        def interrupt() -> None:
            cancel.set()
            queue.put_nowait(("interrupted", None))

        self._on_interrupt = interrupt
        self._worker = loop.run_in_executor(None, generate)
        kind = None
        try:
            kind = await self._show_reply(queue, ReplyRenderer(color=self.color))
        finally:
            self._on_interrupt = None
            cancel.set()  # if showing ended abnormally, the generation must end too
            sys.stdout.write("\n\n")
            sys.stdout.flush()
        if self.verbose and kind == "done":  # the worker posts "done" after the stats are in
            stats = self.chat.last_stats
            if len(self.chat.session_stats) == 1:
                stats.load = self.load_seconds
            self.say(stats.verbose_block() + "\n")

    async def _show_reply(self, queue: asyncio.Queue, renderer: ReplyRenderer) -> str:
        """Write the reply as its pieces arrive; returns how it ended: done, interrupted or error."""
        write = sys.stdout.write
        started = False
        while True:
            kind, value = await queue.get()
            if kind == "notice":
                write(("\n" if started else "") + value + "\n")
            elif kind == "text":
                if not started:
                    write(ASSISTANT_PREFIX)
                    started = True
                write(renderer.feed(value))
            else:
                write(renderer.flush())
                if kind == "interrupted":
                    write(INTERRUPTED_NOTE)
                elif kind == "error":
                    write(("\n" if started else "") + f"[Error] {value}")
                return kind
            sys.stdout.flush()


def run_repl(chat: Chat, history: bool = True, verbose: bool = False) -> int:
    return asyncio.run(Repl(chat, history, verbose).run())
