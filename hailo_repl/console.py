"""Where hailo-repl's own lines go, and the one place their labels are written.

The REPL, the commands and the line-by-line mode write through a Console rather than
`print`, so tests can hand one a buffer and the labels read the same everywhere.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from hailo_repl.streaming import terminal_safe
from hailo_repl.wrap import wrap_text

INFO = "[Info]"
ERROR = "[Error]"
CONTEXT = "[Context]"
FATAL = "Error:"
CHECK_PASSED = "✓"  # `hailo-repl doctor`'s marks
CHECK_FAILED = "✗"  # the one line a failing non-interactive run ends with, as other CLIs say it


def labelled(label: str, text: str) -> str:
    return f"{label} {text}"


class Console:
    """Writes whole lines to `stream` (stdout by default, looked up at each write so that
    a test's or prompt_toolkit's replacement of sys.stdout is honoured).

    With `wrap_width` (the terminal's columns, or None while word-wrap is off) whole
    lines are wrapped at word boundaries; streamed text is the caller's to wrap.
    """

    def __init__(self, stream: TextIO | None = None, wrap_width: Callable[[], int | None] | None = None):
        self._stream = stream
        self.wrap_width = wrap_width

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    def write(self, text: str) -> None:
        """Text as it is, no newline added: a reply streaming."""
        self.stream.write(text)
        self.stream.flush()

    def say(self, text: str) -> None:
        """One or more whole lines, wrapped at the terminal's width; escape sequences and
        hidden format characters in them (a file name, a system prompt from a chat file, a
        mistyped command) are removed."""
        self.write(self.wrapped(terminal_safe(text)) + "\n")

    def wrapped(self, text: str) -> str:
        width = self.wrap_width() if self.wrap_width else None
        return wrap_text(text, width) if width else text

    def info(self, text: str) -> None:
        self.say(labelled(INFO, text))

    def error(self, text: str) -> None:
        self.say(labelled(ERROR, text))

    def fatal(self, text: str) -> None:
        self.say(f"{FATAL} {text}")
