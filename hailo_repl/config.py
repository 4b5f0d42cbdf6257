"""XDG locations of hailo-repl's files, and the log file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from loguru import logger

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


def log_file() -> Path:
    return state_dir() / "hailo-repl.log"


def setup_logging(verbose: bool, to_file: bool = True) -> None:
    """Logs go to the log file (unless `to_file` is False: --no-history); to the terminal
    only with --verbose (warnings and worse)."""
    logger.remove()
    if to_file:
        try:
            state_dir().mkdir(parents=True, exist_ok=True)
            logger.add(log_file(), level="DEBUG", rotation="5 MB", retention=3, enqueue=False)
        except OSError:
            pass  # a read-only home must not stop the chat
    if verbose:
        logger.add(sys.stderr, level="WARNING", format="{level}: {message}")
