"""XDG locations of hailo-repl's files."""

from __future__ import annotations

import os
from pathlib import Path

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


def instance_lock_file() -> Path:
    """Which processes hold the Hailo device or finish a reply (hailo_repl.instance_lock)."""
    return state_dir() / "hailo-repl.lock"
