"""Saving and loading a conversation as JSON (private files, written whole).

A chat file is what `read_chat_file` accepts: at most MAX_CHAT_FILE_BYTES of UTF-8 JSON, an
object whose `messages` is a non-empty list of role/content messages. Loading, listing and
resuming all read through it, and every writer encodes through `encode_chat`, which refuses
a chat larger than the reader takes, so hailo-repl never writes a chat it will not read.

Every file written says its `format` (CHAT_FORMAT; a file without one is format 1). A later
hailo-repl that only adds fields keeps the number, and this one keeps what it does not know
(top-level fields, settings, a message's own keys) when it rewrites such a file; one that
changes what a field means writes a higher number, and this one reads that file but never
rewrites it (docs/saved-chats.md).
"""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from hailo_repl.private_files import (
    FileTooLarge,
    create_exclusively,
    not_regular,
    read_bytes_limited,
    write_bytes_atomically,
)

if TYPE_CHECKING:  # (the backends package is not on the path to the first prompt)
    from hailo_repl.backends.base import Message

ROLES = {"system", "user", "assistant"}
CHAT_FORMAT = 1  # the `format` of the chat files this version writes (see above)
# A message's keys that this version reads; any other is a later version's, kept as it was.
MESSAGE_KEYS = {"role", "content", "interrupted", "truncated"}
# Far more than any context holds (a 4,096-token context is ~16 KB of text); a larger file
# is not a chat, and reading it whole would only cost memory and time.
MAX_CHAT_FILE_BYTES = 32 << 20


class ConversationFileError(Exception):
    """A file that cannot be read or written as a conversation; the message is one line."""


class NotAChatFile(ConversationFileError):
    """/save would replace a file that is not a saved chat; the user must say so."""


class ChatFile(NamedTuple):
    """A chat file as read: all its fields, its messages checked, and its version."""

    fields: dict[str, Any]
    messages: list[Message]
    version: str  # changes whenever the file's bytes do (see `version_of`)

    @property
    def newer_format(self) -> str | None:
        """The file's `format` when a later hailo-repl changed what its fields mean (this one
        must not rewrite it); None when this version writes it as it is."""
        return newer_format(self.fields)


def newer_format(fields: dict[str, Any]) -> str | None:
    """`fields`' format, as it reads, when it is not one this version writes (missing: 1)."""
    number = fields.get("format", 1)
    if type(number) is int and 1 <= number <= CHAT_FORMAT:  # `is`: true is no format
        return None
    return str(number)


def version_of(data: bytes) -> str:
    """What tells one state of a chat file from another: a digest of its bytes."""
    return hashlib.sha256(data).hexdigest()


def encode_chat(path: Path, document: dict[str, Any]) -> bytes:
    """A chat's file as bytes; ConversationFileError (one line) when it would be larger than
    hailo-repl reads back."""
    import json  # at the first save or load, not before the first prompt

    data = json.dumps(document, indent=1, ensure_ascii=False).encode("utf-8")
    if len(data) > MAX_CHAT_FILE_BYTES:
        raise ConversationFileError(
            f"Cannot save the chat to {path}: it would be larger than the {MAX_CHAT_FILE_BYTES >> 20} MiB "
            "hailo-repl reads back (/undo drops the last exchange)"
        )
    return data


def _document(path: Path, messages: list[Message], model: str) -> bytes:
    return encode_chat(path, {"format": CHAT_FORMAT, "model": model, "messages": messages})


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def save_conversation(path: Path, messages: list[Message], model: str, replace_any: bool = False) -> None:
    """Write the chat to `path`. An existing file that is not a saved chat is replaced only
    with `replace_any` (NotAChatFile otherwise); a device, FIFO or folder never."""
    refused = not_regular(path)
    if refused is not None:
        raise ConversationFileError(f"Cannot save to {path}: {refused}")
    if not replace_any and path.exists():
        why = _why_not_to_replace(path)
        if why is not None:
            raise NotAChatFile(f"{path} exists and {why}; /save --force {path} replaces it")
    data = _document(path, messages, model)
    try:
        write_bytes_atomically(path, data)
    except OSError as error:
        raise ConversationFileError(f"Cannot save to {path}: {_reason(error)}") from None


def save_new_conversation(directory: Path, messages: list[Message], model: str) -> Path:
    """Save under a new name in `directory`, never over another process's file; returns the path."""
    stem = f"chat-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    data = _document(directory / f"{stem}.json", messages, model)
    for attempt in range(1, 1000):
        path = directory / (f"{stem}.json" if attempt == 1 else f"{stem}-{attempt}.json")
        try:
            create_exclusively(path, data)
            return path
        except FileExistsError:
            continue
        except OSError as error:
            raise ConversationFileError(f"Cannot save to {path}: {_reason(error)}") from None
    raise ConversationFileError(f"Cannot save in {directory}: too many chats saved in the same second")


def _why_not_to_replace(path: Path) -> str | None:
    """Why /save must not replace the file at `path` unasked: it is not a saved chat, or a
    later hailo-repl's that this one would write without what it does not know."""
    try:
        newer = read_chat_file(path).newer_format
    except ConversationFileError:
        return "is not a saved chat"
    return None if newer is None else f"was saved by a newer hailo-repl (format {newer})"


def load_conversation(path: Path) -> list[Message]:
    return read_chat_file(path).messages


def read_chat_file(path: Path) -> ChatFile:
    """The chat saved at `path`; ConversationFileError (one line, with the reason) when it is not one."""
    import json

    try:
        raw = read_bytes_limited(path, MAX_CHAT_FILE_BYTES)
        data = json.loads(raw.decode("utf-8"))
    except OSError as error:
        raise ConversationFileError(f"Cannot read {path}: {_reason(error)}") from None
    except FileTooLarge as error:
        raise ConversationFileError(str(error)) from None
    except UnicodeDecodeError:
        raise ConversationFileError(f"{path} is not a saved conversation (not text)") from None
    except ValueError:
        raise ConversationFileError(f"{path} is not a saved conversation (not valid JSON)") from None
    messages = data.get("messages") if isinstance(data, dict) else None
    own_format = isinstance(data, dict) and newer_format(data) is None
    if isinstance(messages, list) and not own_format:
        # A later format's file is read, never rewritten: the messages this version can tell are
        # shown and go on in a new chat; its other kinds (a role this version has not) stay in the file.
        messages = [m for m in messages if _is_message(m)]
    if not (isinstance(messages, list) and messages and all(_is_message(m) for m in messages)):
        raise ConversationFileError(f"{path} is not a saved conversation (no list of role/content messages)")
    # A later format's message keys may mean what this version cannot tell: those are not kept.
    return ChatFile(data, [_message(m, own_format) for m in messages], version_of(raw))


def _is_message(item: object) -> bool:
    return isinstance(item, dict) and item.get("role") in ROLES and isinstance(item.get("content"), str)


def _message(item: dict[str, Any], keep_unknown: bool) -> Message:
    """A message as this version uses it; with `keep_unknown`, with the keys a later version
    added (written back as they were; backends get only role and content: chat.for_model)."""
    kept = {key: value for key, value in item.items() if key not in MESSAGE_KEYS} if keep_unknown else {}
    message = cast("Message", kept | {"role": item["role"], "content": item["content"]})
    if item.get("interrupted"):
        message["interrupted"] = True
    if item.get("truncated"):
        message["truncated"] = True
    return message
