"""Where hailo-repl's own lines go, and the one place their labels are written.

The REPL, the commands and the line-by-line mode write through a Console rather than
`print`, so tests can hand one a buffer and the labels read the same everywhere.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from hailo_repl.streaming import terminal_safe
from hailo_repl.wrap import wrap_text

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

INFO = "[Info]"
ERROR = "[Error]"
CONTEXT = "[Context]"
FATAL = "Error:"
CHECK_PASSED = "✓"  # `hailo-repl doctor`'s marks
CHECK_FAILED = "✗"  # the one line a failing non-interactive run ends with, as other CLIs say it


class ArgumentParser(argparse.ArgumentParser):
    """argparse's, except that its --help, --version and usage errors are written like every
    other line: a reader that has gone raises BrokenPipeError, for cli.main to end the run
    with 141, where argparse would ignore it and exit 0."""

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        if message:
            (file or sys.stderr).write(message)


def labelled(label: str, text: str) -> str:
    return f"{label} {text}"


def no_wrap() -> None:
    """The wrap width of a Console whose lines go out as they are (word-wrap off)."""
    return None


class Console:
    """Writes whole lines to `stream` (stdout by default, looked up at each write so that
    a test's or prompt_toolkit's replacement of sys.stdout is honoured).

    Whole lines are wrapped at word boundaries to `wrap_width()` (the REPL gives its
    screen's columns; `no_wrap` while word-wrap is off), by default to the columns of the
    terminal the stream is (a pipe or a file gets them as they are); streamed text is
    the caller's to wrap.
    """

    def __init__(self, stream: TextIO | None = None, wrap_width: Callable[[], int | None] | None = None):
        self._stream = stream
        self.wrap_width = wrap_width or self.terminal_width

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
        width = self.wrap_width()
        return wrap_text(text, width) if width else text

    def terminal_width(self) -> int | None:
        """The columns of the terminal the stream is, None for a pipe or a file."""
        try:
            if not self.stream.isatty():
                return None
        except ValueError:  # a closed stream
            return None
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except OSError:  # a stand-in with no file descriptor: $COLUMNS, else 80
            return shutil.get_terminal_size().columns

    def info(self, text: str) -> None:
        self.say(labelled(INFO, text))

    def error(self, text: str) -> None:
        self.say(labelled(ERROR, text))

    def fatal(self, text: str) -> None:
        self.say(f"{FATAL} {text}")
