"""XDG locations of hailo-repl's files, and the log file."""

from __future__ import annotations

import os
from pathlib import Path

from loguru import logger

from hailo_repl.private_files import append_whole, private_dir

APP_NAME = "hailo-repl"


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable)
    base = Path(value) if value and os.path.isabs(value) else Path.home() / fallback
    return base / APP_NAME


def config_dir() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config")


def data_dir() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share")


def state_dir() -> Path:
    return _xdg("XDG_STATE_HOME", ".local/state")


def sessions_dir() -> Path:
    """Where every chat is saved after each turn (and /save puts a chat without a name)."""
    return data_dir() / "sessions"


def device_contexts_dir() -> Path:
    """Where the hailo backend keeps each HEF's context of the system prompt (a cache)."""
    return data_dir() / "contexts"


def log_file() -> Path:
    return state_dir() / "hailo-repl.log"


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


def setup_logging(to_file: bool = True) -> None:
    """Logs go to the log file only (none with `to_file` False: --no-history writes nothing),
    never to the terminal; without the values of variables in tracebacks (`diagnose`), so
    what a user typed does not end up there."""
    logger.remove()
    if not to_file:
        return
    try:
        private_dir(state_dir())
    except OSError:
        return  # a read-only home must not stop the chat
    logger.add(_LogFile(log_file()), level="DEBUG", backtrace=False, diagnose=False, catch=False)
