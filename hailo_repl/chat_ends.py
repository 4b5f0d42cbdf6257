"""How a chat at the terminal ends or is interrupted from outside: a signal (SIGTERM, SIGHUP, a
SIGINT during a load), a hang-up (the terminal or the SSH link gone: SIGHUP, or EIO while drawing),
and the terminal given back after Ctrl+Z. A hang-up stops only the showing: the engine finishes
the turn in flight (engine.api.Engine.hang_up). The REPL (app.Repl) is this class's one user."""

from __future__ import annotations

import asyncio
import errno
import signal
from typing import TYPE_CHECKING, Any

from hailo_repl.log import logger
from hailo_repl.terminal_modes import restore_raw_mode, restore_typeahead_mode, terminal_gone

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession

    from hailo_repl.engine.api import Engine
    from hailo_repl.prompt_line import PromptLine
    from hailo_repl.signals import CtrlC
    from hailo_repl.turn_view import TurnView


class ChatEnds:
    """The REPL's answers to what ends the chat from outside (a mixin of app.Repl)."""

    engine: Engine
    session: PromptSession[str]
    prompt: PromptLine
    turns: TurnView
    ctrl_c: CtrlC
    live: bool
    quitting: bool
    hung_up: bool
    in_engine_process: bool
    exit_code: int

    def quit(self, signum: int | None = None) -> None:
        """A signal (SIGTERM, SIGHUP; SIGINT during a load) or a failed load: leave the prompt;
        cleanup follows in run(), which returns 128+signum. A hang-up (SIGHUP: the terminal or
        the SSH link is gone) lets a turn in flight run to its end in the engine, to be saved
        whole; anything else stops it (saved interrupted), even one left running by a hang-up. In
        the engine process SIGTERM too is a detach: the chat and its reply go on there."""
        if signum is not None and (not self.quitting or signum != signal.SIGHUP):
            self.exit_code = 128 + signum
        self.quitting = True
        if signum == signal.SIGHUP or (signum == signal.SIGTERM and self.in_engine_process):
            self._hang_up()
        else:
            self.ctrl_c()
            self.turns.stop_left_running()
        self.prompt.exit_if_quitting()

    def _hang_up(self) -> None:
        """Nothing can be shown any more: stop showing the turn, but tell the engine, which
        finishes it (run() waits for that); any other wait (for the model, for a turn stopped
        before) ends."""
        if self.hung_up:
            return
        self.hung_up = True
        if self.turns.stop_showing_for_good():
            logger.info("the terminal hung up during a reply: it runs to its end, then the chat ends")
            self.engine.hang_up()
        else:
            logger.info("the terminal hung up: the chat ends")
            self.ctrl_c()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """An error in a callback or a forgotten task: to the log file, never over the chat; a
        redraw that finds the terminal gone is a hang-up."""
        error = context.get("exception")
        if isinstance(error, OSError) and self.hung_up_at(error):
            self.quit(signal.SIGHUP)
            return
        logger.opt(exception=error).error("event loop: {}", context.get("message", "error"))

    def hung_up_at(self, write_error: OSError) -> bool:
        """Whether a write failed because the terminal went away (its window closed, the SSH link
        dropped): its SIGHUP may come after the first failed write, or not at all."""
        if write_error.errno != errno.EIO or not self._terminal_gone():
            return False
        logger.info("the terminal went away ({})", write_error)
        return True

    def _terminal_gone(self) -> bool:
        return terminal_gone(self.session.output)

    def _resumed(self) -> None:
        """SIGCONT after a Ctrl+Z and `fg`: the shell gave the terminal back in its own mode."""
        app = self.session.app
        if not app.is_running:
            restore_typeahead_mode()
        elif self.live:  # a prompt up while a reply streams (a stop from outside, not Ctrl+Z)
            restore_raw_mode(app.input.fileno())
            app.invalidate()
