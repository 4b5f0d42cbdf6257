"""What SIGINT, SIGTERM and SIGHUP do: the one module that installs signal handlers.

- Outside the REPL (pipes, `-p`, before the chat starts) SIGTERM and SIGHUP end the run
  with exit code 128+n, through every `finally`, so the device is still released.
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
