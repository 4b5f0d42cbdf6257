"""The log file, through loguru, which is imported and given its sink at the first message.

Importing loguru and setting up its sink cost about a tenth of a bare prompt_toolkit start,
and a chat rarely logs anything before its first prompt, so neither happens at start-up:
modules log through `logger` here, which loads loguru when first used.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from hailo_repl.config import log_file, state_dir
from hailo_repl.private_files import append_whole, private_dir

if TYPE_CHECKING:
    from loguru import Logger

LOG_ROTATE_BYTES = 5 << 20  # then the log moves to hailo-repl.log.1 and a new one starts


class _LogFile:
    """loguru's sink for the log file: private (0600, in a 0700 folder), rotated at
    LOG_ROTATE_BYTES, and silent when it cannot be written: a full disk or a read-only
    home must never put a logging error on the chat's screen."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, message: str) -> None:
        try:
            if self.path.exists() and self.path.stat().st_size > LOG_ROTATE_BYTES:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            append_whole(self.path, message.encode("utf-8", errors="replace"))
        except Exception:  # the log is never worth the chat
            pass


_lock = threading.Lock()
_loguru: Logger | None = None  # loguru's logger, once something was logged
_wanted: bool | None = None  # setup_logging's `to_file`, not applied yet


def setup_logging(to_file: bool = True) -> None:
    """Logs go to the log file only (none with `to_file` False: --no-history writes nothing),
    never to the terminal; without the values of variables in tracebacks (`diagnose`), so
    what a user typed does not end up there. Applied at the first message, or at once when
    loguru is loaded already."""
    global _wanted
    with _lock:
        _wanted = to_file
    if "loguru" in sys.modules:
        _loaded()


def _apply(logger: Logger) -> None:
    global _wanted
    to_file, _wanted = _wanted, None
    if to_file is None:
        return
    logger.remove()
    if not to_file:
        return
    try:
        private_dir(state_dir())
    except OSError:
        return  # a read-only home must not stop the chat
    logger.add(_LogFile(log_file()), level="DEBUG", backtrace=False, diagnose=False, catch=False)


def _loaded() -> Logger:
    global _loguru
    with _lock:
        if _loguru is None:
            from loguru import logger

            _loguru = logger
        if _wanted is not None:
            _apply(_loguru)
        return _loguru


class _FirstUse:
    def __getattr__(self, name: str) -> Any:
        return getattr(_loaded(), name)


logger = cast("Logger", _FirstUse())  # loguru's logger, loaded (and set up) when first used
