"""Saved chats: one JSON file per conversation, rewritten after every turn, and their list.

Each chat is `<id>.json` in the sessions folder, written with `write_atomically` (0600,
never half-written), so `/load` and `/save` read and write the same format and a file
`/save` made is listed and resumed like the others (its id is its file name). Listing
reads `.index.json`, a cache of each file's summary keyed by file name and checked
against the file's size and modification time: a file changed by another hailo-repl
is read again, a missing or broken index is rebuilt. Nothing depends on the index
being current, so two chats running at once never lose each other's turns.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hailo_repl.backends.base import Message
from hailo_repl.conversation import ConversationFileError, load_conversation
from hailo_repl.log import logger
from hailo_repl.private_files import write_atomically

INDEX_NAME = ".index.json"
INDEX_VERSION = 1
FIRST_WORDS = 60  # characters of the first question shown in a listing
ID_BYTES = 4  # 8 hex digits: unique enough among one user's chats, short to type


def new_session_id() -> str:
    return os.urandom(ID_BYTES).hex()  # as secrets.token_hex, without importing it at start-up


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclass
class ChatRecord:
    """What is saved with a chat besides its messages."""

    id: str
    model: str
    backend: str
    settings: dict[str, Any]
    created: str = field(default_factory=now_iso)
    updated: str = field(default_factory=now_iso)


@dataclass(frozen=True)
class ChatSummary:
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
        return f"{self.id:<10} {self.when()}  {self.model[:24]:<24} {self.turns:>3} turns  {self.first_words}"


class SessionNotFoundError(Exception):
    """No saved chat, or several, match what the user typed; the message says which."""


def summarize(path: Path, data: dict[str, Any]) -> ChatSummary:
    messages = [m for m in data.get("messages", []) if isinstance(m, dict)]
    questions = [m.get("content", "") for m in messages if m.get("role") == "user"]
    first = " ".join(str(questions[0]).split()) if questions else ""
    if len(first) > FIRST_WORDS:
        first = first[: FIRST_WORDS - 1] + "…"
    updated = data.get("updated") or datetime.datetime.fromtimestamp(
        path.stat().st_mtime, datetime.timezone.utc
    ).isoformat(timespec="seconds")
    return ChatSummary(path.stem, str(updated), str(data.get("model", "?")), len(questions), first)


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

    def save(self, record: ChatRecord, messages: list[Message]) -> None:
        """Rewrite the chat's file whole; ConversationFileError (one line) if it cannot be written."""
        if not self.writable:
            return
        record.updated = now_iso()
        document = {**asdict(record), "messages": messages}
        path = self.path_of(record.id)
        try:
            write_atomically(path, json.dumps(document, indent=1, ensure_ascii=False))
        except OSError as error:
            raise ConversationFileError(f"Cannot save the chat to {path}: {error.strerror or error}") from None

    def load(self, session_id: str) -> tuple[dict[str, Any], list[Message]]:
        """A chat's saved fields (empty for an old /save file) and its messages."""
        path = self.path_of(session_id)
        messages = load_conversation(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        return data, messages

    def _files(self) -> dict[str, os.stat_result]:
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return {}
        return {
            entry.name: entry.stat()
            for entry in entries
            if entry.name.endswith(".json") and not entry.name.startswith(".") and entry.is_file()
        }

    def _read_index(self) -> dict[str, Any]:
        try:
            index = json.loads((self.directory / INDEX_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(index, dict) or index.get("version") != INDEX_VERSION:
            return {}
        entries = index.get("files")
        return entries if isinstance(entries, dict) else {}

    def chats(self) -> list[ChatSummary]:
        """Every saved chat, the most recently updated first."""
        files = self._files()
        cached = self._read_index()
        entries: dict[str, Any] = {}
        changed = set(cached) != set(files)
        for name, stat in files.items():
            entry = cached.get(name)
            if isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime") == stat.st_mtime_ns:
                entries[name] = entry
                continue
            changed = True
            path = self.directory / name
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
                    continue
                summary = summarize(path, data)
            except (OSError, ValueError, UnicodeDecodeError):
                continue  # not a chat (or being replaced right now): left out of the list
            entries[name] = {"size": stat.st_size, "mtime": stat.st_mtime_ns, "summary": asdict(summary)}
        if changed and self.writable:
            self._write_index(entries)
        summaries = []
        for entry in entries.values():
            try:
                summaries.append(ChatSummary(**entry["summary"]))
            except (KeyError, TypeError):
                continue
        return sorted(summaries, key=lambda s: s.updated, reverse=True)

    def _write_index(self, entries: dict[str, Any]) -> None:
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
                _, messages = self.load(summary.id)
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
        if not matches:
            raise SessionNotFoundError(f"No saved chat has an id starting with '{prefix}' (--list-chats lists them)")
        if len(matches) > 1:
            ids = ", ".join(c.id for c in matches[:5])
            raise SessionNotFoundError(f"'{prefix}' matches {len(matches)} chats ({ids}); type more of the id")
        return matches[0]
