"""Saved chats: one JSON file per conversation, rewritten after every turn, and their list.

Each chat is `<id>.json` in the sessions folder, written atomically (0600, never
half-written), so `/load` and `/save` read and write the same format and a file `/save`
made is listed and resumed like the others (its id is its file name). A file is listed
only if it can be resumed: both read it with `read_chat_file`.

Two hailo-repl processes may hold one chat (`--resume ID` twice, two terminals). A save
is a read-modify-write under the chat's lock (private_files.update_lock): it rewrites
the file only if the file is still what this process last read or wrote (its version).
If another process saved a turn in between, this conversation is saved as a new chat
instead, and the caller says so; neither process's turns are lost. So it is when the file
cannot be rewritten as it stands: its lock held past the wait or blocked by something in
its place, the file replaced by a folder or a symlink that leads to no file, or a newer
hailo-repl's format (conversation.CHAT_FORMAT), which is never rewritten.

Listing reads `.index.json`, a cache of each file's summary keyed by file name and
checked against the file's size and modification time: a file changed by another
hailo-repl is read again, and a missing or broken index, or a broken entry, is rebuilt
from the files.
"""

from __future__ import annotations

import datetime
import functools
import os
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from hailo_repl.conversation import (
    CHAT_FORMAT,
    MAX_CHAT_FILE_BYTES,
    ChatFile,
    ConversationFileError,
    encode_chat,
    read_chat_file,
    version_of,
)
from hailo_repl.log import logger
from hailo_repl.private_files import (
    FileTooLarge,
    LockUnavailable,
    not_a_file_at,
    read_bytes_limited,
    read_text_limited,
    update_lock,
    write_atomically,
    write_bytes_atomically,
)
from hailo_repl.streaming import terminal_safe

if TYPE_CHECKING:  # (the backends package is not on the path to the first prompt)
    from hailo_repl.backends.base import Message

INDEX_NAME = ".index.json"
INDEX_VERSION = 1
INDEX_FILE_LIMIT = 64 << 20  # ~250 bytes a chat: far more chats than anyone keeps
FIRST_WORDS = 60  # characters of the first question shown in a listing
ID_BYTES = 4  # 8 hex digits: unique enough among one user's chats, short to type


def new_session_id() -> str:
    return os.urandom(ID_BYTES).hex()  # as secrets.token_hex, without importing it at start-up


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class ChatRecord:  # (not a dataclass: that took ~0.3 ms of every start)
    """What is saved with a chat besides its messages."""

    FIELDS = ("id", "model", "backend", "settings", "created", "updated")  # as the file has them, in order

    def __init__(
        self, id: str, model: str, backend: str, settings: dict[str, Any], kept: dict[str, Any] | None = None
    ) -> None:
        self.id = id
        self.model = model
        self.backend = backend
        self.settings = settings
        self.created = self.updated = now_iso()
        # Top-level fields a later hailo-repl wrote that this one does not know: written back as they were.
        self.kept = {} if kept is None else kept

    def document(self, messages: list[Message]) -> dict[str, Any]:
        """The chat file's content."""
        own = {name: getattr(self, name) for name in self.FIELDS}
        return {"format": CHAT_FORMAT, **self.kept, **own, "messages": messages}


def unknown_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The top-level fields of a chat file that this version does not write itself."""
    known = {"format", "messages", *ChatRecord.FIELDS}
    return {key: value for key, value in fields.items() if key not in known}


class Saved(NamedTuple):
    """What a save did: the version written, and if the chat had to be saved under a new id
    (record.id), the line that says why."""

    version: str | None
    moved: str | None = None


class ChatSummary(NamedTuple):  # (a frozen dataclass took ~0.6 ms of every start)
    """One line of /history: enough to recognise a chat without opening it."""

    id: str
    updated: str  # ISO 8601
    model: str
    turns: int
    first_words: str

    def when(self) -> str:
        try:
            moment = datetime.datetime.fromisoformat(self.updated)
        except ValueError:
            return self.updated
        return moment.astimezone().strftime("%Y-%m-%d %H:%M")

    def line(self) -> str:
        """The chat in one row of a listing, safe to print: what was typed, piped or put in a
        file runs no escape sequence and breaks no row."""
        row = f"{self.id:<10} {self.when()}  {self.model[:24]:<24} {self.turns:>3} turns  {self.first_words}"
        return terminal_safe(row).replace("\n", " ").replace("\t", " ")


@functools.cache
def summary_types() -> dict[str, type]:
    """What each field of an index entry must be; worked out when the index is first read, not at
    start-up (get_type_hints evaluates every annotation)."""
    return typing.get_type_hints(ChatSummary)


CHANGED = "was changed by another hailo-repl since this one read it"


def _replaced(path: Path) -> str | None:
    """Why the chat file at `path` cannot be rewritten in place when something that leads to
    no regular file is there (a folder, a symlink to a device or to nothing), else None."""
    there = not_a_file_at(path)
    return None if there is None else f"was replaced by {there} ({path})"


def _why_not_rewritten(path: Path, version: str | None) -> str | None:
    """None when the file at `path` is still at `version` (None: when there is none), else why not."""
    why = _replaced(path)
    if why is not None:
        return why
    try:
        on_disk = version_of(read_bytes_limited(path, MAX_CHAT_FILE_BYTES))
    except FileNotFoundError:
        return None  # none yet, or gone since: written anew
    except FileTooLarge:
        return f"has grown past the {MAX_CHAT_FILE_BYTES >> 20} MiB hailo-repl reads"
    except OSError as error:
        return f"can no longer be read ({error.strerror or error})"
    return None if on_disk == version else CHANGED


class SessionNotFoundError(Exception):
    """No saved chat, or several, match what the user typed; the message says which."""


def summarize(path: Path, chat: ChatFile) -> ChatSummary:
    questions = [m["content"] for m in chat.messages if m["role"] == "user"]
    first = " ".join(questions[0].split()) if questions else ""
    if len(first) > FIRST_WORDS:
        first = first[: FIRST_WORDS - 1] + "…"
    updated = chat.fields.get("updated")
    if not isinstance(updated, str):
        moment = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
        updated = moment.isoformat(timespec="seconds")
    model = chat.fields.get("model")
    return ChatSummary(path.stem, updated, model if isinstance(model, str) else "?", len(questions), first)


def _summary_from_index(entry: object, name: str, stat: os.stat_result) -> ChatSummary | None:
    """The summary the index keeps for file `name`, if the entry is well-formed and the file
    has not changed since; None: read the file."""
    if not isinstance(entry, dict) or (entry.get("size"), entry.get("mtime")) != (stat.st_size, stat.st_mtime_ns):
        return None
    fields = entry.get("summary")
    if not isinstance(fields, dict) or set(fields) != set(summary_types()):
        return None
    if not all(type(fields[key]) is kind for key, kind in summary_types().items()):  # `is`: a bool is no count
        return None
    summary = ChatSummary(**fields)
    return summary if summary.id == name.removesuffix(".json") else None


class SessionStore:
    """The sessions folder: save a chat, list, search and find saved ones."""

    def __init__(self, directory: Path, writable: bool = True):
        self.directory = directory
        self.writable = writable  # False (--no-history): read saved chats, write nothing

    def path_of(self, session_id: str) -> Path:
        return self.directory / f"{session_id}.json"

    def context_path(self, session_id: str) -> Path:
        """Where a backend that keeps its model's context (the Hailo device's) keeps the chat's."""
        return self.directory / f"{session_id}.ctx"

    def save(
        self, record: ChatRecord, messages: list[Message], version: str | None, newer_format: str | None = None
    ) -> Saved:
        """Rewrite the chat's file whole, if it is still at `version` (None: no file yet) or gone.
        Else the chat is saved under a new id (record.id changes) beside it, and Saved.moved
        says why: another process has saved to it since, its lock cannot be had, something
        else is in its place, or it is a later version's file (`newer_format`). Returns
        `version` when history is off.

        ConversationFileError (one line) if it cannot be written anywhere.
        """
        if not self.writable:
            return Saved(version)
        record.updated = now_iso()
        if newer_format is None:
            why, written = self._write(record, messages, version)
            if why is None:
                return Saved(written)
        else:
            why = f"was saved by a newer hailo-repl (format {newer_format}), which this one never rewrites"
        first_id = record.id
        record.id, record.created = new_session_id(), record.updated
        cannot, written = self._write(record, messages, None)
        if cannot is not None:  # (a new id taken by another file: one in four billion)
            raise ConversationFileError(f"Cannot save the chat to {self.path_of(record.id)}: it {cannot}")
        both = ", and both keep their turns" if why == CHANGED else ""
        return Saved(written, f"Chat {first_id} {why}: this conversation is saved as a new chat, {record.id}{both}.")

    def _write(self, record: ChatRecord, messages: list[Message], version: str | None) -> tuple[str | None, str]:
        """Write the chat's file if it is still at `version`: (None, the version written), or
        (why not, ""). ConversationFileError (one line) when the folder takes no file."""
        path = self.path_of(record.id)
        data = encode_chat(path, record.document(messages))
        try:
            why = _replaced(path)  # before the lock, which a symlink would lead elsewhere
            if why is not None:
                return why, ""
            with update_lock(path):
                why = _why_not_rewritten(path, version)
                if why is None:
                    write_bytes_atomically(path, data)
                    return None, version_of(data)
                return why, ""
        except LockUnavailable as error:
            return f"could not be saved ({error.strerror or error})", ""
        except OSError as error:
            raise ConversationFileError(f"Cannot save the chat to {path}: {error.strerror or error}") from None

    def load(self, session_id: str) -> ChatFile:
        """A saved chat (ConversationFileError, one line, if it cannot be read)."""
        return read_chat_file(self.path_of(session_id))

    def _files(self) -> dict[str, os.stat_result]:
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return {}
        files = {}
        for entry in entries:
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            try:
                if entry.is_file():
                    files[entry.name] = entry.stat()
            except OSError:  # a symlink loop, or removed since the scan: not a chat to list
                continue
        return files

    def _read_index(self) -> dict[str, Any]:
        import json  # at the first listing, not before the first prompt

        try:
            index = json.loads(read_text_limited(self.directory / INDEX_NAME, INDEX_FILE_LIMIT))
        except (OSError, ValueError, FileTooLarge):
            return {}
        if not isinstance(index, dict) or index.get("version") != INDEX_VERSION:
            return {}
        entries = index.get("files")
        return entries if isinstance(entries, dict) else {}

    def chats(self) -> list[ChatSummary]:
        """Every saved chat that can be resumed, the most recently updated first."""
        cached = self._read_index()
        entries: dict[str, Any] = {}
        summaries = []
        for name, stat in self._files().items():
            summary = _summary_from_index(cached.get(name), name, stat)
            if summary is not None:
                entries[name] = cached[name]
            else:
                path = self.directory / name
                try:
                    summary = summarize(path, read_chat_file(path))
                except (ConversationFileError, OSError):
                    continue  # not a chat (or removed right now): left out of the list
                entries[name] = {"size": stat.st_size, "mtime": stat.st_mtime_ns, "summary": summary._asdict()}
            summaries.append(summary)
        if entries != cached and self.writable:
            self._write_index(entries)
        return sorted(summaries, key=lambda s: s.updated, reverse=True)

    def _write_index(self, entries: dict[str, Any]) -> None:
        import json

        try:
            write_atomically(self.directory / INDEX_NAME, json.dumps({"version": INDEX_VERSION, "files": entries}))
        except OSError as error:  # a cache: listing still works without it
            logger.warning("cannot write the chat index: {}", error)

    def search(self, text: str) -> list[ChatSummary]:
        """Chats whose messages contain `text` (any case), the most recent first."""
        needle = text.casefold()
        found = []
        for summary in self.chats():
            try:
                messages = self.load(summary.id).messages
            except ConversationFileError:
                continue
            if any(needle in m["content"].casefold() for m in messages if m["role"] != "system"):
                found.append(summary)
        return found

    def latest(self) -> ChatSummary:
        chats = self.chats()
        if not chats:
            raise SessionNotFoundError(f"No saved chats to continue in {self.directory}")
        return chats[0]

    def find(self, prefix: str) -> ChatSummary:
        """The one chat whose id starts with `prefix`."""
        chats = self.chats()
        exact = [c for c in chats if c.id == prefix]
        matches = exact or [c for c in chats if c.id.startswith(prefix)]
        if not matches and Path(prefix).name == prefix and self.path_of(prefix).is_file():
            try:  # a file of that name that is not a chat: say why
                self.load(prefix)
            except ConversationFileError as error:
                raise SessionNotFoundError(str(error)) from None
        if not matches:
            raise SessionNotFoundError(f"No saved chat has an id starting with '{prefix}' (--list-chats lists them)")
        if len(matches) > 1:
            ids = ", ".join(c.id for c in matches[:5])
            raise SessionNotFoundError(f"'{prefix}' matches {len(matches)} chats ({ids}); type more of the id")
        return matches[0]
