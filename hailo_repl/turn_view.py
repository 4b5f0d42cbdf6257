"""A turn as the REPL shows it: started on the engine, its events drawn (in the pane above a
live prompt, or straight to the console), Ctrl+C turned into an interrupt that names the last
text shown; and the waits around it (the turn before, a /model switch)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

from prompt_toolkit.application import run_in_terminal

from hailo_repl.commands_base import SwitchModel
from hailo_repl.engine.api import Busy, TurnCompleted, TurnEnd, TurnMode
from hailo_repl.render import (
    ASSISTANT_PREFIX,
    USER_PREFIX,
    ConsoleScreen,
    ReplyRenderer,
    ReplyScreen,
    ShownReply,
    recent_turns_text,
    show_reply,
)

if TYPE_CHECKING:
    from hailo_repl.app import Repl
    from hailo_repl.engine.api import Turn
    from hailo_repl.engine.socket_turn import Arrival, SocketTurn

SETTLE_NOTICE_AFTER = 0.3  # seconds of waiting for the previous reply before saying so
SENT_AFTER_THE_SAVE = "Your message goes as soon as the device context is kept."


class TurnView:
    def __init__(self, repl: Repl):
        self.repl = repl
        self.turn: Turn | None = None  # the last turn, until it has settled
        self._showing: asyncio.Future[TurnCompleted] | None = None  # the turn on screen, if one is
        self._stopped = False  # the turn on screen was interrupted
        self.arrived: SocketTurn | None = None  # the turn in flight when this terminal arrived, until followed

    async def reply(self, text: str, mode: TurnMode = TurnMode.MESSAGE) -> None:
        await self.show(self.repl.engine.start_turn(text, mode))

    async def follow_arrived(self) -> None:
        """The turn in flight when this terminal arrived (its question, its reply so far and
        then live): shown as if it had been sent from here."""
        repl, turn = self.repl, self.arrived
        if turn is None:
            return
        self.arrived = None
        user = repl.reply_wrap(len(USER_PREFIX))
        question = turn.question
        repl.console.write(USER_PREFIX + (user.feed(question) + user.flush() if user else question) + "\n")
        await self.show(turn)

    async def show(self, turn: Turn) -> None:
        repl = self.repl
        self.turn = turn
        shown = ShownReply()
        self._stopped = False

        def interrupt() -> None:
            self._stopped = True
            repl.engine.interrupt(turn.id, shown.seq)  # what is kept is what was shown
            turn.stop_showing()  # the display ends now, without waiting for the engine

        ended: TurnCompleted | None = None
        renderer = ReplyRenderer(repl.color, repl.reply_wrap(len(ASSISTANT_PREFIX)))
        screen: ReplyScreen = ConsoleScreen(repl.console, renderer)
        if repl.live:
            screen = repl.pane
            repl.pane.begin(repl.toolbar.usage)
            if not repl.prompt.up:
                repl.prompt.start(in_reply=True)

        def ending(completed: TurnCompleted) -> None:
            repl.toolbar.take_shown_end(completed)
            # Keys from the frame that shows the end are the prompt's (Enter sends, Ctrl+C on an
            # empty line says how to quit), not queued or taken as a stop: the reply is over.
            repl.prompt.handling = False

        showing = self._showing = asyncio.ensure_future(show_reply(turn, renderer, repl.console, screen, shown, ending))
        try:
            with repl.ctrl_c.stopping(interrupt):
                await asyncio.wait([showing])
            ended = None if showing.cancelled() else showing.result()
        except OSError as write_error:
            if not repl.hung_up_at(write_error):
                raise
            repl.quit(signal.SIGHUP)
        finally:
            self._showing = None
            if not repl.hung_up:
                showing.cancel()
                if ended is None:  # showing ended abnormally: the generation must end too
                    interrupt()
                screen.end("")  # (a reply that ended abnormally: what came stays, then a blank line)
        if repl.hung_up or ended is None:
            return
        # Lines that came after the reply's end (its save's, or an interrupted one's): once the turn is done.
        turn.finished.add_done_callback(lambda _: repl.prompt.say_each(turn.late_notices()))
        stats = ended.stats
        if repl.verbose and ended.reason in (TurnEnd.DONE, TurnEnd.TRUNCATED, TurnEnd.EMPTY) and stats is not None:
            repl.console.say(stats.verbose_block() + "\n")

    def stop_showing_for_good(self) -> bool:
        """The terminal is gone: stop showing the turn on screen, if one is (not interrupted);
        whether one was."""
        if self._showing is None or self._stopped:
            return False
        self._showing.cancel()
        return True

    def stop_left_running(self) -> None:
        """SIGTERM: a turn left running by a hang-up stops too, kept as far as it came (no
        terminal shows it: all of it)."""
        if self.turn is not None and not self.turn.is_finished():
            self.repl.engine.interrupt(self.turn.id, None)

    async def show_arrival(self, arrival: Arrival, chat: str, model: str) -> None:
        """What a terminal arriving at the engine process's chat is shown: the lines about it, its
        recent turns, and a turn in flight: its question once, its reply so far, then live (it
        is this terminal's to wait for, or stop with Ctrl+C, from here)."""
        repl = self.repl

        def show() -> None:
            for line in arrival.lines:
                repl.console.say(line)
            if arrival.recent or arrival.turn is not None:
                repl.console.info(f"Chat {chat} with {model}:")
                repl.console.write(
                    recent_turns_text(arrival.recent, repl.color, repl.reply_wrap, count=len(arrival.recent))
                )
            if arrival.turn is not None:
                repl.console.info("Its reply is still running in the engine process; it goes on here.")

        await self._above_the_prompt(show)
        if arrival.turn is not None:  # the conversation follows it (Repl._converse), as a message sent here
            self.arrived = arrival.turn
            repl.prompt.make_way()

    async def _above_the_prompt(self, show: Callable[[], None]) -> None:
        if self.repl.session.app.is_running and not self.repl.live:
            await run_in_terminal(show)
        else:
            show()

    async def model_ready(self, load: asyncio.Future[None]) -> bool:
        """Wait for the model if it is still loading. False if it failed to load, or a
        Ctrl+C (or a quit) came since the prompt."""
        repl = self.repl
        if not load.done():
            repl.console.info("Waiting for the model to load… (Ctrl+C to go back)")
            waiting = asyncio.ensure_future(asyncio.shield(load))
            with repl.ctrl_c.stopping(waiting.cancel):
                await asyncio.wait([waiting])
        return not repl.ctrl_c.pressed and load.exception() is None

    async def settle(self, interruptible: bool = False) -> bool:
        """Wait for the previous reply's thread, so the conversation is complete again.

        A device stops only at its next token (after a prompt evaluation, or a stall of
        up to HailoRT's 2-minute request timeout), so with `interruptible` a Ctrl+C ends
        the wait instead: False then, and the thread is still running.
        """
        repl = self.repl
        if repl.engine.status().busy is Busy.SAVING_CONTEXT:  # an idle save that a key press came during
            repl.console.info(SENT_AFTER_THE_SAVE)
        await repl.engine.context_saved()
        if self.turn is None:
            return True
        worker = self.turn.finished
        done, _ = await asyncio.wait([worker], timeout=SETTLE_NOTICE_AFTER)
        if not done and interruptible:
            waiting_for = "to be saved" if repl.engine.status().saving else "to end on the device"
            repl.console.info(f"Waiting for the previous reply {waiting_for}… (Ctrl+C to go back)")
            waiting = asyncio.ensure_future(asyncio.shield(worker))
            with repl.ctrl_c.stopping(waiting.cancel):
                await asyncio.wait([waiting])
            if not worker.done():
                return False
        elif not done:
            if not repl.hung_up:
                waiting_for = "to be saved" if repl.engine.status().saving else "to end, to release the model"
                repl.console.info(f"Waiting for the previous reply {waiting_for}…")
            await asyncio.wait([worker])
        self.turn = None
        return True

    async def switch_model(self, switch: SwitchModel) -> None:
        """/model: the engine releases the model and loads the other; the conversation stays. If
        the other fails to load, the chat goes back to the one it had."""
        repl = self.repl
        old = repl.model
        repl.console.info(f"Releasing {old} and loading {switch.model}…")
        switched = await asyncio.get_running_loop().run_in_executor(None, repl.engine.switch_model, switch.name)
        if switched.error is None:
            repl.console.info(f"Now chatting with {switch.model}; the conversation goes on.")
            return
        repl.console.error(f"{switched.error} — going on with {old}")
        if switched.fatal is not None:
            repl.console.error(switched.fatal)
            repl.exit_code = 1
            repl.quit()
