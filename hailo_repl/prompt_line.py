"""The input line: put the prompt up (also while a reply streams), take the next message (one
queued meanwhile first), queue Enter during a reply, and give queued messages back on Ctrl+C."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING

from prompt_toolkit.application import run_in_terminal
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.document import Document
from prompt_toolkit.enums import EditingMode

from hailo_repl.config import log_file
from hailo_repl.console import ERROR, labelled
from hailo_repl.keys import EmptyLineInterrupt
from hailo_repl.log import logger
from hailo_repl.render import USER_PREFIX

if TYPE_CHECKING:
    from hailo_repl.app import Repl

CONTINUATION = " " * len(USER_PREFIX)  # the prompt's lines after the first


class ReplyArrived(Exception):
    """The prompt waiting for a message ends with this when a reply in flight arrives (this
    terminal attached mid-reply): the conversation shows it as a reply to a message sent here."""


class PromptLine:
    def __init__(self, repl: Repl):
        self.repl = repl
        self.session = repl.session
        self.session.prompt_continuation = CONTINUATION
        self.handling = False  # a message is being answered: Enter queues, Ctrl+C stops what runs
        self.in_reply = False  # the prompt on screen came up for a reply
        self._prompt: asyncio.Future[str] | None = None  # the prompt on screen, if one is
        self._waiting = False  # next_message waits for the prompt on screen

    @property
    def up(self) -> bool:
        return self._prompt is not None

    def say(self, line: str) -> Awaitable[None]:
        """A line (labelled; on the loop), drawn above the prompt if one is up. Awaiting what it
        returns waits until the line is drawn (before what holds the GIL next: an idle save)."""
        repl = self.repl
        if self.session.app.is_running and not repl.live:
            return run_in_terminal(lambda: repl.console.say(line))
        repl.console.say(line)
        return _Drawn()

    def say_each(self, lines: list[str]) -> None:
        for line in lines:
            self.say(line)

    def say_when_done(self, work: Callable[[], str], word: str) -> None:
        """Run a command's file reading in a thread (the prompt stays up); say its text when done."""

        def done(work: asyncio.Future[str]) -> None:
            try:
                self.say(work.result())
            except Exception as error:
                logger.opt(exception=error).error("command {} failed", word)
                self.say(labelled(ERROR, f"{word} failed: {error} (details in {log_file()})"))

        asyncio.get_running_loop().run_in_executor(None, work).add_done_callback(done)

    def start(self, in_reply: bool = False) -> asyncio.Future[str]:
        """Put the prompt on screen, with the next message a Ctrl+C gave back in its input line."""
        self.session.editing_mode = EditingMode.VI if self.repl.settings["vi-mode"] else EditingMode.EMACS
        self.in_reply = in_reply
        default = self.repl.pane.take_given_back()
        # handle_sigint=False: prompt_toolkit would remove our SIGINT handler on exit;
        # set_exception_handler=False: errors go to the log, not over the screen.
        self._prompt = asyncio.ensure_future(
            self.session.prompt_async(
                default=default, pre_run=self._pre_run, handle_sigint=False, set_exception_handler=False
            )
        )
        return self._prompt

    def _pre_run(self) -> None:
        self.exit_if_quitting()
        if self.repl.turns.arrived is not None:
            self.make_way()

    async def next_message(self) -> str:
        """What the user sends next: a message queued meanwhile (shown as if typed now, while
        the prompt, if up, stays up with what is being typed), or what they type."""
        self.handling = False
        pane = self.repl.pane
        if pane.queued:
            text = pane.queued.pop(0)
            pane.echo([("class:prompt", USER_PREFIX), ("", text.replace("\n", "\n" + CONTINUATION))])
            self._take_given_back_if_empty()
        elif pane.ends_after:  # Ctrl+D during the reply
            pane.ends_after = False
            await self.end()
            raise EOFError
        elif self.repl.turns.arrived is not None:  # (it came while no prompt was waiting)
            raise ReplyArrived
        else:
            prompt, self._prompt = self._prompt or self.start(), None
            self._waiting = True
            try:
                text = await prompt
            finally:
                self._waiting = False
        self.handling = True
        return text

    def make_way(self) -> None:
        """A reply in flight arrived (TurnView.arrived: this terminal attached mid-reply): the
        prompt waiting for a message ends with ReplyArrived, what was typed given back to the
        prompt under the reply, so that Ctrl+C stops the reply and Enter queues, as for a
        message sent here."""
        app = self.session.app
        if self._waiting and app.is_running and app.future is not None and not app.future.done():
            if app.current_buffer.text:
                self.repl.pane.give_back([app.current_buffer.text])
            app.erase_when_done = True  # (the reply's question is written as the prompt's line)
            app.exit(exception=ReplyArrived)

    def _take_given_back_if_empty(self) -> None:
        """A prompt up with an empty input line takes the next message a Ctrl+C gave back: an
        Enter pressed as the stopped reply ended (still "during" it) queued the line it held."""
        buffer = self.session.default_buffer
        if self._prompt is not None and not buffer.text and self.repl.pane.given_back:
            text = self.repl.pane.take_given_back()
            buffer.document = Document(text, len(text))

    async def end(self) -> None:
        """Take the prompt off the screen, if one is up (the chat ends)."""
        prompt, self._prompt = self._prompt, None
        app = self.session.app
        if prompt is None:
            return
        if app.future is not None and not app.future.done():
            app.erase_when_done = not app.current_buffer.text  # an empty "You: " left behind says nothing
            app.exit(exception=EOFError)
        with contextlib.suppress(EOFError, EmptyLineInterrupt, ReplyArrived):
            await prompt

    def exit_if_quitting(self) -> None:
        """End the prompt if the chat is quitting (also run as each prompt starts, for a
        quit that came while none was on screen)."""
        app = self.session.app
        # future.done(): Enter may already have given the prompt its result.
        if self.repl.quitting and app.is_running and app.future is not None and not app.future.done():
            app.exit(exception=EOFError)

    def queue(self, buffer: Buffer) -> None:
        """Enter while a reply streams: the message waits for the reply's end (and is in the history now);
        /detach is done at once (the reply goes on in the engine process)."""
        buffer.append_to_history()
        if buffer.text.strip() == "/detach" and self.repl.in_engine_process:
            buffer.reset()
            self.repl.detach()
            return
        self.repl.pane.queue(buffer.text)
        buffer.reset()

    def stop_reply(self, buffer: Buffer) -> None:
        """Ctrl+C while a message is answered: stop the reply (or the wait before it). The queued
        messages come back unsent, each on its own (a command never merges with text): the first
        in the input line, the others and then what was being typed in the next prompts' input line."""
        queued = self.repl.pane.unqueue()
        if queued:
            buffer.append_to_history()  # what was being typed: Up brings it back too
            self.repl.pane.give_back(queued[1:] + ([buffer.text] if buffer.text else []))
            buffer.document = Document(queued[0], len(queued[0]))
        self.repl.ctrl_c()


class _Drawn:
    """An awaitable that is done: the line went straight to the console."""

    def __await__(self) -> Generator[None, None, None]:
        yield from ()
