"""The terminal between prompts: type-ahead kept for the next prompt, pastes kept whole."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

BRACKETED_PASTE_ON, BRACKETED_PASTE_OFF = "\x1b[?2004h", "\x1b[?2004l"

# While typeahead_mode() is on: the terminal and the attributes it set, for restore_typeahead_mode().
_typeahead: tuple[int, list[Any]] | None = None


@contextlib.contextmanager
def typeahead_mode() -> Iterator[None]:
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
    global _typeahead
    _typeahead = (fd, changed)
    try:
        yield
    finally:
        _typeahead = None
        with contextlib.suppress(termios.error):  # the terminal may be gone (hang-up)
            termios.tcsetattr(fd, termios.TCSANOW, saved)
        if sys.stdout.isatty():
            with contextlib.suppress(OSError):
                sys.stdout.write(BRACKETED_PASTE_OFF)
                sys.stdout.flush()


def restore_typeahead_mode() -> None:
    """Set typeahead_mode()'s attributes again, after a suspend in which the shell put the
    terminal back in its own (echoing, line-by-line) mode."""
    if _typeahead is None:
        return
    import termios

    fd, attributes = _typeahead
    with contextlib.suppress(termios.error):
        termios.tcsetattr(fd, termios.TCSANOW, attributes)


def keep_pastes_bracketed() -> None:
    """A prompt turns bracketed paste off as it ends; turned back on, a block of lines
    pasted during a reply still reaches the next prompt as one paste, one message."""
    if sys.stdout.isatty():
        sys.stdout.write(BRACKETED_PASTE_ON)
        sys.stdout.flush()


def restore_raw_mode(fileno: int) -> None:
    """The prompt's raw mode again, after a suspend in which the shell put the terminal back
    in its own mode while the prompt was up (prompt_toolkit's own restore runs when it ends)."""
    from prompt_toolkit.input.vt100 import raw_mode

    with contextlib.suppress(OSError):
        raw_mode(fileno).__enter__()


def terminal_gone(output: Any) -> bool:
    """Whether the terminal of `output` (a prompt_toolkit Output, or a file descriptor) has hung
    up: then even its settings cannot be read (EIO)."""
    import termios

    try:
        termios.tcgetattr(output if isinstance(output, int) else output.fileno())
    except (OSError, termios.error, ValueError, NotImplementedError):
        return True
    return False
