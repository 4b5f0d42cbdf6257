"""Saving and loading a conversation as JSON, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from hailo_repl.backends.base import Message

ROLES = {"system", "user", "assistant"}


class ConversationFileError(Exception):
    """A file that cannot be read or written as a conversation; the message is one line."""


def write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory, renamed over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def save_conversation(path: Path, messages: list[Message], model: str) -> None:
    try:
        write_atomically(path, json.dumps({"model": model, "messages": messages}, indent=2, ensure_ascii=False))
    except OSError as error:
        raise ConversationFileError(f"Cannot save to {path}: {error.strerror or error}") from None


def load_conversation(path: Path) -> list[Message]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConversationFileError(f"Cannot read {path}: {error.strerror or error}") from None
    except (ValueError, UnicodeDecodeError):
        raise ConversationFileError(f"{path} is not a saved conversation (not valid JSON)") from None
    messages = data.get("messages") if isinstance(data, dict) else None
    if not (isinstance(messages, list) and messages and all(_is_message(m) for m in messages)):
        raise ConversationFileError(f"{path} is not a saved conversation (no list of role/content messages)")
    return [_message(m) for m in messages]


def _is_message(item: object) -> bool:
    return isinstance(item, dict) and item.get("role") in ROLES and isinstance(item.get("content"), str)


def _message(item: dict[str, Any]) -> Message:
    message = Message(role=item["role"], content=item["content"])
    if item.get("interrupted"):
        message["interrupted"] = True
    if item.get("truncated"):
        message["truncated"] = True
    return message
