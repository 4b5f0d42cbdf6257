"""Saving and loading a conversation as JSON (private files, written whole)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from hailo_repl.backends.base import Message
from hailo_repl.private_files import (
    FileTooLarge,
    create_exclusively,
    not_regular,
    read_text_limited,
    write_atomically,
)

ROLES = {"system", "user", "assistant"}
# Far more than any context holds (a 4,096-token context is ~16 KB of text); a larger file
# is not a chat, and reading it whole would only cost memory and time.
MAX_CHAT_FILE_BYTES = 32 << 20


class ConversationFileError(Exception):
    """A file that cannot be read or written as a conversation; the message is one line."""


class NotAChatFile(ConversationFileError):
    """/save would replace a file that is not a saved chat; the user must say so."""


def _document(messages: list[Message], model: str) -> str:
    return json.dumps({"model": model, "messages": messages}, indent=2, ensure_ascii=False)


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def save_conversation(path: Path, messages: list[Message], model: str, replace_any: bool = False) -> None:
    """Write the chat to `path`. An existing file that is not a saved chat is replaced only
    with `replace_any` (NotAChatFile otherwise); a device, FIFO or folder never."""
    refused = not_regular(path)
    if refused is not None:
        raise ConversationFileError(f"Cannot save to {path}: {refused}")
    if not replace_any and path.exists() and not _is_chat_file(path):
        raise NotAChatFile(f"{path} exists and is not a saved chat; /save --force {path} replaces it")
    try:
        write_atomically(path, _document(messages, model))
    except OSError as error:
        raise ConversationFileError(f"Cannot save to {path}: {_reason(error)}") from None


def save_new_conversation(directory: Path, messages: list[Message], model: str) -> Path:
    """Save under a new name in `directory`, never over another process's file; returns the path."""
    stem = f"chat-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    text = _document(messages, model)
    for attempt in range(1, 1000):
        path = directory / (f"{stem}.json" if attempt == 1 else f"{stem}-{attempt}.json")
        try:
            create_exclusively(path, text)
            return path
        except FileExistsError:
            continue
        except OSError as error:
            raise ConversationFileError(f"Cannot save to {path}: {_reason(error)}") from None
    raise ConversationFileError(f"Cannot save in {directory}: too many chats saved in the same second")


def _is_chat_file(path: Path) -> bool:
    try:
        load_conversation(path)
    except ConversationFileError:
        return False
    return True


def load_conversation(path: Path) -> list[Message]:
    try:
        data = json.loads(read_text_limited(path, MAX_CHAT_FILE_BYTES))
    except OSError as error:
        raise ConversationFileError(f"Cannot read {path}: {_reason(error)}") from None
    except FileTooLarge as error:
        raise ConversationFileError(str(error)) from None
    except UnicodeDecodeError:
        raise ConversationFileError(f"{path} is not a saved conversation (not text)") from None
    except ValueError:
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
