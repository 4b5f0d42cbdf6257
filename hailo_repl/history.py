"""The input history file: a convenience, so a failure to read or write it never stops a chat.

Entries are written in prompt_toolkit's FileHistory format, each as one locked write, so two
hailo-repl processes sharing the file never interleave their entries.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from pathlib import Path

from prompt_toolkit.history import FileHistory, History, InMemoryHistory

from hailo_repl.log import logger
from hailo_repl.private_files import append_whole, not_regular, private_dir


class SafeFileHistory(FileHistory):
    """FileHistory that reports the first failure through `warn` and goes on without the
    file: the history of this run stays in memory."""

    def __init__(self, path: Path, warn: Callable[[str], None]):
        super().__init__(str(path))
        self.path = path
        self._warn = warn
        self._broken = False

    def _fail(self, doing: str, error: Exception) -> None:
        logger.warning("input history: {} {} failed: {}", doing, self.path, error)
        if not self._broken:
            self._broken = True
            reason = getattr(error, "strerror", None) or str(error)
            self._warn(f"Input history is off for this chat: cannot {doing} {self.path} ({reason}).")

    def load_history_strings(self) -> Iterable[str]:
        reason = not_regular(self.path)  # a FIFO would block the read for ever
        if reason is not None:
            self._fail("read", OSError(0, reason))
            return []
        try:
            return list(super().load_history_strings())
        except OSError as error:
            self._fail("read", error)
            return []

    def store_string(self, string: str) -> None:
        if self._broken:
            return
        lines = [f"\n# {datetime.datetime.now()}\n", *(f"+{line}\n" for line in string.split("\n"))]
        try:
            append_whole(self.path, "".join(lines).encode("utf-8", errors="replace"))
        except OSError as error:
            self._fail("write", error)


def input_history(directory: Path | None, warn: Callable[[str], None]) -> History:
    """The history file in `directory`, or one kept in memory when history is off (None) or
    its folder cannot be made."""
    if directory is None:
        return InMemoryHistory()
    try:
        private_dir(directory)
    except OSError as error:
        warn(f"Input history is off for this chat: cannot make {directory} ({error.strerror or error}).")
        return InMemoryHistory()
    return SafeFileHistory(directory / "history", warn)
