"""What SIGINT, SIGTERM and SIGHUP do: the one module that installs signal handlers.

- Outside the REPL (pipes, `-p`, before the chat starts) SIGTERM and SIGHUP end the run
  with exit code 128+n, through every `finally`, so the device is still released; but a
  hang-up (SIGHUP, or EIO writing to the terminal) during a reply lets it run to its end,
  saved whole, and then ends the run with 129 (HangUp).
- In the REPL the event loop owns all three: while a prompt is up the terminal is raw and
  Ctrl+C is a key, so a SIGINT means Ctrl+C between prompts and goes to whatever is
  running then (a reply, the wait for the model); SIGTERM and SIGHUP end the chat (a hang-up
  lets a reply in flight run to its end first: app.Repl.quit).
- While the backend is released every one of them waits: a release cut short leaves the
  device held.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
from collections.abc import Callable, Iterator
from types import FrameType

TERMINATING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def exit_on_termination() -> None:
    """SIGTERM and SIGHUP end the run as SystemExit(128+n), so `finally` blocks still run."""
    for signum in TERMINATING:
        signal.signal(signum, _exit_on_signal)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ignore Ctrl+C, SIGTERM and SIGHUP meanwhile."""
    held = (signal.SIGINT, *TERMINATING)
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class CtrlC:
    """Where a Ctrl+C between prompts goes: to what is running now (`stopping`), and it is
    remembered until the next prompt starts (`pressed`)."""

    def __init__(self) -> None:
        self.pressed = False
        self._stop: Callable[[], object] | None = None

    def __call__(self) -> None:
        self.pressed = True
        if self._stop is not None:
            self._stop()

    def prompt_started(self) -> None:
        """From now on, only a new Ctrl+C is about the next message."""
        self.pressed = False

    @contextlib.contextmanager
    def stopping(self, stop: Callable[[], object]) -> Iterator[None]:
        """Meanwhile a Ctrl+C calls `stop`."""
        self._stop = stop
        try:
            yield
        finally:
            self._stop = None


def route_to_loop(
    loop: asyncio.AbstractEventLoop,
    ctrl_c: CtrlC,
    terminate: Callable[[int], None],
    resumed: Callable[[], None],
) -> None:
    """The REPL's handlers; the loop removes them when it closes. `terminate` gets the
    signal's number; `resumed` runs on SIGCONT (after Ctrl+Z and `fg`)."""
    loop.add_signal_handler(signal.SIGINT, ctrl_c)
    for signum in TERMINATING:
        loop.add_signal_handler(signum, terminate, signum)
    if hasattr(signal, "SIGCONT"):
        loop.add_signal_handler(signal.SIGCONT, resumed)


class HangUp:
    """-p and pipes: the terminal going away during a reply (SIGHUP, or EIO writing to it) does
    not stop the reply: it runs to its end and is saved whole, as in the REPL, and the run ends
    after it with 129. From the hang-up on, what was written to the terminal (the reply, the
    notices) goes to /dev/null; a stdout redirected to a file or a pipe keeps getting the reply."""

    def __init__(self) -> None:
        self.terminals = [fd for fd in (1, 2) if os.isatty(fd)]  # (a hung-up terminal is no tty any more)
        self.happened = False

    @contextlib.contextmanager
    def finishing(self) -> Iterator[None]:
        """Meanwhile (a reply) SIGHUP is noted, not an end of the run. The handler only notes
        it and drops the writes: what takes a lock (the log, the lock file) the caller does at
        its next event."""
        if not hasattr(signal, "SIGHUP"):
            yield
            return
        previous = signal.signal(signal.SIGHUP, lambda signum, frame: self.hung_up())
        try:
            yield
        finally:
            signal.signal(signal.SIGHUP, previous)

    def hung_up(self) -> None:
        self.happened = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            for fd in self.terminals:
                os.dup2(devnull, fd)
        finally:
            os.close(devnull)

    def at(self, write_error: OSError, fd: int) -> bool:
        """Whether a write to `fd` failed because the terminal went away (EIO; its SIGHUP may
        come later or not at all), or the reader of a pipe went with it (a pipe to `less`):
        then the writes to it are dropped from now on."""
        from hailo_repl.terminal_modes import terminal_gone

        if write_error.errno == errno.EIO and fd in self.terminals and terminal_gone(fd):
            self.hung_up()
            return True
        if self.happened:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
            return True
        return False
