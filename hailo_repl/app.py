"""The interactive chat: an asyncio loop driving one prompt_toolkit PromptSession.

The REPL talks to the chat only through an Engine (engine.api): it starts a turn, shows the
turn's events as they come (a few frames a second), and draws the toolbar from what the engine
has said. In a terminal the prompt for the next message is up while the reply streams: the reply
goes into the scrollback above it line by line (hailo_repl.pane), the toolbar stays live, and
what the user types shows; Ctrl+C is then a key that stops the reply (keys.load_reply_bindings).
Where nothing can be redrawn (TERM=dumb) the reply is written as it comes, with no prompt on
screen, and Ctrl+C is a SIGINT that hailo_repl.signals routes to the same interrupt. Either way
the engine keeps what was shown, and the prompt is back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import ThreadedCompleter
from prompt_toolkit.filters import Condition
from prompt_toolkit.key_binding import merge_key_bindings
from prompt_toolkit.output.vt100 import Vt100_Output
from prompt_toolkit.utils import is_dumb_terminal

from hailo_repl.chat_ends import ChatEnds
from hailo_repl.commands import (
    BUILTINS,
    CommandCompleter,
    Detach,
    OffTheLoop,
    Quit,
    Send,
    SwitchModel,
    is_command,
    needs_the_engine,
    run_command,
    waits_for_the_engine,
)
from hailo_repl.commands_base import CommandContext, in_engine_process
from hailo_repl.config import data_dir, sessions_dir
from hailo_repl.config_file import config_path
from hailo_repl.console import INFO, Console, labelled
from hailo_repl.engine.api import EngineError, EngineGone, EngineNotice, Event, TurnMode
from hailo_repl.history import input_history
from hailo_repl.keys import EmptyLineInterrupt, load_input_bindings, load_reply_bindings
from hailo_repl.log import logger
from hailo_repl.pane import ReplyPane
from hailo_repl.prompt_line import PromptLine, ReplyArrived
from hailo_repl.render import USER_PREFIX, color_wanted, recent_turns_text
from hailo_repl.settings import SETTINGS_TABLE, ResolvedSettings
from hailo_repl.signals import CtrlC, route_to_loop
from hailo_repl.startup import start_is_over
from hailo_repl.terminal_modes import (
    keep_pastes_bracketed,
    typeahead_mode,
)
from hailo_repl.toolbar import STYLE
from hailo_repl.turn_view import TurnView
from hailo_repl.view import PaneStream, Toolbar, lay_out, resumed_lines, welcome_text
from hailo_repl.wrap import WordWrap

if TYPE_CHECKING:
    from hailo_repl.engine.api import Engine
    from hailo_repl.sessions import ChatSummary, SessionStore


class Repl(ChatEnds):
    """The chat's lifecycle: load the model, prompt, run commands and replies, quit.

    It is also what a command sees of the chat (commands.CommandContext).
    """

    def __init__(
        self,
        engine: Engine,
        history: bool = True,
        verbose: bool = False,
        console: Console | None = None,
        settings: dict[str, Any] | None = None,
        config_file: Path | None = None,
        resumed: ChatSummary | None = None,
        store: SessionStore | None = None,
    ):
        self.engine = engine
        self.store = store
        self.verbose = verbose
        self.sessions_dir: Path = sessions_dir()
        self.config_file = config_file or config_path()[0]
        status = engine.status()
        # The value in effect of every setting; /set changes it, and the REPL reads the
        # live ones from here when it uses them (the generation ones are the engine's too).
        self.settings = {setting.name: setting.default for setting in SETTINGS_TABLE} | (settings or {})
        self.settings |= status.params
        self.console = console or Console(wrap_width=self.wrap_width)
        self.resumed = resumed
        self.color = color_wanted(self.settings["color"], os.environ)
        self.ctrl_c = CtrlC()
        self.quitting = False
        self.hung_up = False  # the terminal went away (SIGHUP, or EIO while drawing)
        # The chat runs in the engine process: a hang-up, SIGTERM or /detach leaves it running there.
        self.in_engine_process = in_engine_process(engine)
        self.detached = False  # /detach
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0  # (its thread's ident)
        self._drawn = asyncio.Event()  # the prompt has been drawn at least once
        self.session: PromptSession[str] = PromptSession(
            message=[("class:prompt", USER_PREFIX)],
            history=input_history(data_dir() if history else None, warn=self.notice_from_any_thread),
            enable_suspend=True,  # Ctrl+Z at the prompt suspends, as in a shell, instead of typing ^Z
            completer=ThreadedCompleter(CommandCompleter(BUILTINS, self)),
            complete_while_typing=False,
            style=STYLE,
            vi_mode=self.settings["vi-mode"],
        )
        self.pane = ReplyPane(self.session.app)
        self.prompt = PromptLine(self)
        self.toolbar = Toolbar(self.session, self.pane, status)
        self.turns = TurnView(self)
        replying = Condition(lambda: self.prompt.handling)
        self.session.key_bindings = merge_key_bindings(
            [
                load_input_bindings(),
                load_reply_bindings(replying, self.prompt.stop_reply, self.prompt.queue, self.pane.end_after),
            ]
        )
        lay_out(self.session, self.pane, self.toolbar, replying | Condition(lambda: self.prompt.in_reply))
        self.session.app.key_processor.before_key_press += lambda _: engine.note_activity()
        self.session.app.after_render += self._after_render
        # The reply streams under a live prompt wherever prompt_toolkit redraws the screen.
        self.live = isinstance(self.session.output, Vt100_Output) and not is_dumb_terminal()
        if self.live and console is None:
            self.console = Console(cast(TextIO, PaneStream(self.pane)), wrap_width=self.wrap_width)

    def _after_render(self, _app: object) -> None:
        if not self._drawn.is_set():
            self._first_frame()

    def _first_frame(self) -> None:
        """The first prompt is up: what waited for it (a model's load, the collector) goes on."""
        start_is_over()
        self._drawn.set()

    @property
    def model(self) -> str:
        """The model in use, as the engine last said (the toolbar keeps it from its events)."""
        return self.toolbar.model

    def wrap_width(self) -> int | None:
        """The terminal's width while word-wrap is on (read at each use: a resize applies at once)."""
        return self.session.output.get_size().columns if self.settings["word-wrap"] else None

    def reply_wrap(self, column: int = 0) -> WordWrap | None:
        return WordWrap(lambda: self.wrap_width() or 0, column) if self.settings["word-wrap"] else None

    # ---- lifecycle ----------------------------------------------------------------

    def notice_from_any_thread(self, text: str) -> None:
        """An [Info] line from any thread, drawn above the prompt if one is up."""
        if self._loop is None:
            self.console.info(text)
        else:
            self._loop.call_soon_threadsafe(self.prompt.say, labelled(INFO, text))

    def _take_event(self, event: Event) -> None:
        """An engine event, from any thread, taken on the loop: at once when it comes on the loop's
        own thread (a line before a save that holds the GIL must show first), else as the loop's
        next callback (none once the loop has closed)."""
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._on_event(event)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._on_event, event)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, EngineNotice):
            self.prompt.say(event.line)
        elif isinstance(event, EngineGone):  # another terminal took the chat, or the engine died
            if event.line:
                self.prompt.say(event.line)
            self.exit_code = event.exit_code
            self.quit()
        self.toolbar.take(event)

    async def run(self) -> int:
        loop = self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.engine.subscribe(self._take_event)
        route_to_loop(loop, self.ctrl_c, terminate=self.quit, resumed=self._resumed)
        loop.set_exception_handler(self._loop_error)
        status = self.engine.status()
        self.console.say(welcome_text(status, [entry.name for entry in BUILTINS.unique()]))
        if self.resumed is not None:
            self.show_resumed(self.resumed)
        load = asyncio.ensure_future(self._load(status.loads_in_background))
        load.add_done_callback(self._loaded)
        idle_saves = asyncio.ensure_future(self.engine.keep_context_when_idle(self.prompt.say))
        toolbar_refresh = asyncio.ensure_future(self.toolbar.keep_fresh())
        try:
            with typeahead_mode():
                if not status.loads_in_background:
                    start_is_over()  # seconds of loading: the few ms the collector would save are nothing
                    # The load holds the GIL: a Ctrl+C meanwhile is handled only once it ends.
                    self.console.info(f"Loading {status.model}… (Ctrl+C ends the chat once it has loaded)")
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
                        await self.prompt.end()
        except OSError as write_error:
            if not self.hung_up_at(write_error):
                raise
            self.quit(signal.SIGHUP)
        finally:
            idle_saves.cancel()
            toolbar_refresh.cancel()
            await self.turns.settle()
            self._drawn.set()  # a chat ended before its first frame: the load still runs, to be released
            if not load.done():
                self.console.info("Waiting for the model to finish loading, to release it…")
            with contextlib.suppress(Exception):
                await load  # the backend is released only after its load has ended
        failed = load.exception()
        if failed is not None:
            if not isinstance(failed, EngineError):
                logger.opt(exception=failed).error("model load failed")
            self.console.error(str(failed))
            return 1
        return self.exit_code

    async def _load(self, in_background: bool) -> None:
        """The model's load, in a thread. With a backend that loads in the background it starts once
        the first prompt's frame is drawn: the load's imports hold the GIL and would hold that frame up."""
        if in_background:
            await self._drawn.wait()
        await asyncio.get_running_loop().run_in_executor(None, self.engine.load)
        arrival = getattr(self.engine, "arrival", None)  # (the engine process: what a terminal arriving is shown)
        if arrival is not None and not self.quitting:
            status = self.engine.status()
            await self.turns.show_arrival(arrival(), status.chat, status.model)

    def detach(self) -> None:
        """/detach: this terminal leaves; the chat, and its reply if one runs, go on in the engine
        process (`hailo-repl -c` attaches again)."""
        if self.quitting:
            return
        chat = self.engine.status().chat
        where = f"chat {chat}" if chat else "the chat"
        self.prompt.say(
            labelled(INFO, f"Detached: {where} goes on in the engine process; `hailo-repl -c` returns to it.")
        )
        self.detached = self.quitting = True
        self._hang_up()
        self.prompt.exit_if_quitting()

    def show_resumed(self, chat: ChatSummary) -> None:
        """The last turns of a chat just resumed, so the user sees where it stopped."""
        for line in resumed_lines(chat, self.model):
            self.console.info(line)
        self.console.write(recent_turns_text(self.engine.messages(), self.color, self.reply_wrap))

    async def _command(self, text: str) -> Send | SwitchModel | OffTheLoop | None:
        """Run the command `text`. One that waits for the engine process's answer runs in a
        thread, so the terminal stays live meanwhile (the engine holds its GIL for seconds keeping
        a device context; a wedged one would hang it): typed keys echo under the prompt, which is
        up as during a reply, and a Ctrl+C stops the wait (the engine still does what was asked)."""
        if not (self.in_engine_process and waits_for_the_engine(text)):
            return run_command(self, text)
        loop = asyncio.get_running_loop()
        if self.live and not self.prompt.up:
            self.prompt.start(in_reply=True)
        work = loop.run_in_executor(None, run_command, cast(CommandContext, CommandInAThread(self, loop)), text)
        waiting = asyncio.ensure_future(asyncio.shield(work))
        with self.ctrl_c.stopping(waiting.cancel):
            await asyncio.wait([waiting])
        if waiting.cancelled():
            self.console.info(f"Not waiting for {text.split()[0]}; the engine process still does it.")
            return None
        return work.result()

    def _loaded(self, load: asyncio.Future[None]) -> None:
        """The model finished loading (the toolbar hears it from the engine); a failed load ends the chat."""
        if load.exception() is not None:
            self.quit()

    async def _converse(self, load: asyncio.Future[None]) -> None:
        while not self.quitting:
            self.engine.note_activity()
            try:
                text = await self.prompt.next_message()
            except EOFError:
                return
            except EmptyLineInterrupt:  # Ctrl+C on an empty line: never the end of a chat
                self.console.info("Ctrl+D or /quit ends the chat.")
                continue
            except ReplyArrived:  # this terminal attached mid-reply: Ctrl+C stops it, Enter queues
                self.prompt.handling = True
                self.ctrl_c.prompt_started()
                await self.turns.follow_arrived()
                continue
            self.ctrl_c.prompt_started()
            keep_pastes_bracketed()
            if not text.strip():
                continue
            if self.turns.arrived is not None:  # sent as the reply in flight arrived: it waits for that reply's end
                self.pane.queue(text)
                await self.turns.follow_arrived()
                continue
            if not await self.turns.settle(interruptible=True):
                if not self.quitting:
                    self.console.info("Not sent (Ctrl+C); Up brings the message back.")
                continue
            mode = TurnMode.MESSAGE
            if is_command(text):
                # (the engine process loads after the first prompt: a command typed meanwhile waits)
                if self.in_engine_process and needs_the_engine(text) and not await self.turns.model_ready(load):
                    if self.ctrl_c.pressed and not self.quitting:
                        self.console.info("Not done (Ctrl+C); Up brings the command back.")
                    continue
                try:
                    outcome = await self._command(text)
                except Detach:
                    self.detach()
                    return
                except Quit:
                    return
                if isinstance(outcome, SwitchModel):
                    if await self.turns.model_ready(load):
                        await self.turns.switch_model(outcome)
                    continue
                if isinstance(outcome, OffTheLoop):
                    self.prompt.say_when_done(outcome.work, text.split()[0])
                    continue
                if not isinstance(outcome, Send):
                    continue
                text, mode = outcome.text, outcome.mode
            if await self.turns.model_ready(load):
                await self.turns.reply(text, mode)
            elif self.ctrl_c.pressed and not self.quitting:
                self.console.info("Not sent (Ctrl+C); Up brings the message back.")


class CommandInAThread:
    """The Repl as a command run in a thread (Repl._command) sees it: what it says is written on
    the REPL's loop, in order."""

    def __init__(self, repl: Repl, loop: asyncio.AbstractEventLoop):
        self._repl = repl
        self.console = LoopConsole(repl.console, loop)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repl, name)

    def show_resumed(self, chat: ChatSummary) -> None:
        Repl.show_resumed(cast(Repl, self), chat)


class LoopConsole(Console):
    """A console for a thread: each write goes to `console` on `loop` (whole lines wrapped here)."""

    def __init__(self, console: Console, loop: asyncio.AbstractEventLoop):
        super().__init__(wrap_width=console.wrap_width)
        self._console, self._loop = console, loop

    def write(self, text: str) -> None:
        self._loop.call_soon_threadsafe(self._console.write, text)


def run_repl(
    engine: Engine,
    settings: ResolvedSettings,
    config_file: Path,
    resumed: ChatSummary | None = None,
    store: SessionStore | None = None,
) -> int:
    repl = Repl(
        engine,
        settings["history"],
        settings["verbose"],
        settings=settings.values,
        config_file=config_file,
        resumed=resumed,
        store=store,
    )
    return asyncio.run(repl.run())
