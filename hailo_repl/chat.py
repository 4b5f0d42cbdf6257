"""One conversation with one backend: the place where a turn runs.

Both the line-by-line mode (pipes, -p) and the REPL send messages through
`Chat.reply()`, so context fitting, filtering, interruption and statistics
behave the same everywhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from hailo_repl.backends.base import (
    Backend,
    BackendError,
    GenerationParams,
    KeepsContext,
    Message,
    Notice,
    ReplyStream,
)
from hailo_repl.console import CONTEXT, ERROR, INFO, labelled
from hailo_repl.context import ContextOverflowError, ContextUsage, fit_history, split_turns
from hailo_repl.conversation import ConversationFileError, newer_format
from hailo_repl.sessions import ChatRecord, SessionStore, new_session_id, unknown_fields
from hailo_repl.streaming import StreamingTextFilter, clean_response

if TYPE_CHECKING:
    from hailo_repl.stats import ReplyStats

# Said before a save of the model's context that the user may wait for (seconds on the Hailo).
KEEPING_DEVICE_CONTEXT = "Keeping the device context for a quick resume…"
NOT_KEPT = "The device context was not kept this time (the log says why); it is tried again later."
CONTINUE_PROMPT = "Continue exactly where your last reply stopped, without repeating any of it."


def file_message(name: str, text: str) -> str:
    """How a file's text goes into a message: marked, so the model sees where it ends."""
    return f"[File {name}]\n{text.rstrip()}\n[End of file {name}]"


class ShownUpTo:
    """Where an interrupted reply is cut: at what the terminal had shown of it.

    Chat.reply sets `produced` (the raw pieces behind the text yielded so far) before each
    yield; the engine records it with each text event, and at an interrupt sets `keep` to the
    figure of the last event the terminal showed. Tokens decoded after that are not kept."""

    def __init__(self) -> None:
        self.produced = 0
        self.keep: int | None = None  # None: all that came


def for_model(messages: list[Message]) -> list[Message]:
    """Messages as backends take them: role and content only (no 'interrupted' or 'truncated' flag)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


class Chat:
    def __init__(
        self, backend: Backend, system_prompt: str, params: GenerationParams, store: SessionStore | None = None
    ):
        self.backend = backend
        self.params = params
        self.system_prompt = system_prompt
        self.messages: list[Message] = [{"role": "system", "content": system_prompt}]
        self.last_stats: ReplyStats | None = None
        self.session_stats: list[ReplyStats] = []
        self._said_replaced = False  # whether the user was told of bytes that were not UTF-8
        self.attachments: list[str] = []  # files' text for the next message (/file)
        self.store = store  # where the chat is saved after each turn (None: nowhere)
        self.session_id = new_session_id()
        self._created: str | None = None  # when the saved chat began, once saved or resumed
        self._version: str | None = None  # the chat's file as this process last read or wrote it
        self._saved_as = SavedAs()  # what the resumed chat's file holds that this version does not write itself
        self.unsaved = False  # the last save failed: the conversation's latest turns are in no file
        self.saving = False  # a save is under way (it may wait up to LOCK_WAIT_SECONDS for another process)
        # After a resume or /load the backend has not read the history yet; until the next
        # reply sends it, the gauge shows what it will take (counted once, when first drawn).
        self._history_unsent = False
        self._unsent_tokens: int | None = None
        # Completed changes of the conversation, and how many of them the kept device context has seen.
        self._changes = 0
        self._context_kept_at = 0

    def usage(self) -> ContextUsage:
        backend = self.backend
        used = backend.context_used
        if self._history_unsent:
            if self._unsent_tokens is None:
                self._unsent_tokens = self._history_tokens_to_send()
            used = self._unsent_tokens
        return ContextUsage(used, backend.context_capacity, backend.context_is_estimate)

    def _history_tokens_to_send(self) -> int:
        """What the next reply will send of the history, fitted as it will be: a long /load
        is never counted whole, which would freeze the toolbar that asks."""
        count, capacity = self.backend.count_tokens, self.backend.context_capacity
        try:
            return count(fit_history(for_model(self.messages), count, capacity, self.params.max_tokens).messages)
        except ContextOverflowError:
            return capacity

    def reply_room(self) -> int | None:
        """The most tokens a reply can take: the context less the system prompt. None while
        the model cannot count yet (not loaded)."""
        try:
            return self.backend.context_capacity - self.backend.count_tokens(self.messages[:1])
        except BackendError:
            return None

    def clear(self) -> None:
        """Start a new conversation; the one before stays saved under its own id."""
        self.backend.clear()  # first: a reply still running ends (and is kept) before the wipe
        self.messages = [{"role": "system", "content": self.system_prompt}]
        self.session_id, self._created, self._history_unsent = new_session_id(), None, False
        self._version, self._saved_as = None, SavedAs()

    def resume(self, session_id: str, notify: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Continue the saved chat `session_id`; later turns are saved to it. Returns its saved fields.
        `notify` says when the device context of the chat left is kept first.

        Raises ConversationFileError when it cannot be read.
        """
        if self.store is None:
            raise ConversationFileError("no saved chats here")
        saved = self.store.load(session_id)
        self.keep_device_context(notify)  # the chat it switches away from
        self.replace_messages(saved.messages)
        self.session_id, self._version = session_id, saved.version
        self._saved_as = SavedAs.of(saved.fields, dataclasses.asdict(self.params))
        if isinstance(self.backend, KeepsContext):  # the model may load what it held instead of reading it
            self.backend.offer_context(self.store.context_path(session_id), for_model(self.messages))
        created = saved.fields.get("created")
        self._created = created if isinstance(created, str) else None
        return saved.fields

    def autosave(self, notify: Callable[[str], None] = lambda line: None) -> None:
        """Write the chat to its file, if history is on and something was said. If another
        process saved to the same chat since this one read it, this one goes on as a new
        chat, and `notify` says so.

        Raises ConversationFileError (one line) when the file cannot be written.
        """
        if self.store is None or not self.store.writable or not _has_turns(self.messages):
            return
        kept = self._saved_as
        record = ChatRecord(
            id=self.session_id,
            model=self.backend.model_name,
            backend=self.backend.name,
            settings=kept.settings | dataclasses.asdict(self.params),
            kept=kept.fields,
        )
        if self._created:
            record.created = self._created
        self.unsaved = self.saving = True  # until the file is written
        try:
            saved = self.store.save(record, self.messages, self._version, kept.newer_format)
        finally:
            self.saving = False
        self._version, self.unsaved = saved.version, False
        if saved.moved is not None:
            notify(labelled(INFO, saved.moved))
            if kept.newer_format is not None:  # the new chat is this version's own
                self._saved_as = SavedAs()
        self.session_id, self._created = record.id, record.created
        self._changes += 1

    def device_context_unsaved(self) -> bool:
        """Whether keep_device_context() has something to do: the model's context changed since, and
        the backend would keep it (a save the user may wait for: say so before)."""
        backend = self.backend
        if not isinstance(backend, KeepsContext) or self.store is None or not self.store.writable:
            return False
        if self._changes == self._context_kept_at or not _has_turns(self.messages):
            return False
        return backend.context_to_keep(for_model(self.messages))

    def keep_device_context(self, notify: Callable[[str], None] | None = None) -> None:
        """Save the model's context beside the saved chat, so a resume loads it instead of
        reading the chat again (the Hailo device's: KeepsContext). On the device that holds the
        GIL for seconds (hailo.py `save_context`), so the REPL calls this only when waiting costs
        the user nothing: at quit, /save, before /model or /resume switches away, and when the
        chat has been idle; never between a message and the next prompt. A crash loses only this
        context: the resume then reads the chat again. A save skipped or failed is not counted
        as kept, so the next occasion (quit at the latest) tries again. `notify` gets
        KEEPING_DEVICE_CONTEXT first, when there is a save to wait for, and NOT_KEPT after one that
        did not happen (memory short, the disk full). Never raises."""
        if not self.device_context_unsaved():
            return
        if notify is not None:
            notify(KEEPING_DEVICE_CONTEXT)
        assert self.store is not None and isinstance(self.backend, KeepsContext)
        if self.backend.save_context(self.store.context_path(self.session_id), for_model(self.messages)):
            self._context_kept_at = self._changes
        elif notify is not None:
            notify(NOT_KEPT)

    def set_system_prompt(self, text: str) -> None:
        self.system_prompt = text
        self.messages[0] = {"role": "system", "content": text}

    def replace_messages(self, messages: list[Message]) -> None:
        """Continue a saved conversation (/load); the backend notices its history differs.

        It is saved as a new chat: the one before keeps its own file."""
        if not messages or messages[0]["role"] != "system":
            messages = [Message(role="system", content=self.system_prompt), *messages]
        self.system_prompt = messages[0]["content"]
        self.messages = list(messages)
        self._history_unsent, self._unsent_tokens = _has_turns(self.messages), None
        self.session_id, self._created, self._version = new_session_id(), None, None
        self._saved_as = SavedAs()

    def attach(self, name: str, text: str) -> None:
        """Put a file's text into the next message (/file)."""
        self.attachments.append(file_message(name, text))

    def _last_question(self) -> int | None:
        """Index of the last user message, if any."""
        for index in range(len(self.messages) - 1, 0, -1):
            if self.messages[index]["role"] == "user":
                return index
        return None

    def last_question(self) -> str | None:
        index = self._last_question()
        return None if index is None else self.messages[index]["content"]

    def undo(self, notify: Callable[[str], None] = lambda line: None) -> str | None:
        """Drop the last user message and what answered it; return that message's text."""
        index = self._last_question()
        if index is None:
            return None
        text = self.messages[index]["content"]
        del self.messages[index:]
        self._save_or_log(notify)
        return text

    def _save_or_log(self, notify: Callable[[str], None]) -> None:
        try:
            self.autosave(notify)
        except ConversationFileError as error:
            notify(labelled(ERROR, str(error)))

    def reply(
        self,
        text: str,
        cancel: threading.Event,
        notify: Callable[[str], None] = lambda line: None,
        replace_last: bool = False,
        shown: ShownUpTo | None = None,
        ended: Callable[[], None] = lambda: None,
    ) -> ReplyStream:
        """Send `text` as the user's turn; yield the reply's displayable text as it streams.
        `ended` is called once the reply has ended (not by an error) and is kept, before it is
        saved: a save can wait seconds for a lock, and showing the reply's end need not.

        The reply, complete or not, is kept in the conversation; an interrupted
        one is flagged. With `replace_last` (/retry) the new exchange takes the last
        one's place. If nothing comes back, the conversation stays as it was. Raises
        ContextOverflowError when the message cannot fit at all, and BackendError
        when the backend fails. With `shown`, an interrupted reply keeps only what was shown.
        """
        text = self._valid_unicode(text, notify)
        before = list(self.messages)
        if self.attachments:  # they go with this message, whatever becomes of it
            text, self.attachments = "\n\n".join([*self.attachments, text]), []
        last = self._last_question() if replace_last else None
        base = self.messages[:last] if last is not None else self.messages
        candidate = base + [{"role": "user", "content": text}]
        fitted = fit_history(
            for_model(candidate), self.backend.count_tokens, self.backend.context_capacity, self.params.max_tokens
        )
        if fitted.dropped_turns:
            dropped = (
                f"Dropped the {fitted.dropped_turns} oldest turn(s), down to about half the context, "
                "so the next turns need not re-read the history (the system prompt is kept)."
            )
            notify(labelled(CONTEXT, dropped))
        system, turns = split_turns(candidate)
        self.messages = system + [m for turn in turns[fitted.dropped_turns :] for m in turn]
        self._history_unsent = False  # from here the backend's own count is the right one

        from hailo_repl.stats import ReplyStats  # here: the first prompt does not need it

        stats = ReplyStats()
        raw: list[str] = []
        display = StreamingTextFilter()
        started = time.perf_counter()
        finished = False
        try:
            # closing(): a reader that stops early stops the backend's generation now,
            # not whenever the generator is garbage-collected.
            with contextlib.closing(self.backend.stream(fitted.messages, self.params, cancel)) as pieces:
                for piece in pieces:
                    if isinstance(piece, Notice):  # about the reply, not part of it
                        notify(labelled(INFO, piece))
                        continue
                    if cancel.is_set():
                        continue  # not shown, so not kept; the backend stops by itself within a token
                    if len(raw) == self.params.max_tokens:  # a server that ignores max_tokens: stop it here
                        notify(labelled(INFO, f"The reply went on past max-tokens ({len(raw)}); it was stopped there."))
                        break
                    if not raw:
                        stats.time_to_first_token = time.perf_counter() - started
                    raw.append(piece)
                    visible = display.feed(piece)
                    if visible:
                        if shown is not None:
                            shown.produced = len(raw)
                        yield visible
            tail = display.flush()
            if tail:
                if shown is not None:
                    shown.produced = len(raw)
                yield tail
            finished = True
        finally:
            stats.total = time.perf_counter() - started
            stats.generated_tokens = len(raw)
            stats.prompt_tokens = self.backend.last_prompt_tokens
            self.last_stats = stats
            if raw:
                self.session_stats.append(stats)
            interrupted = not finished or cancel.is_set()
            kept = raw[: shown.keep] if interrupted and shown is not None and shown.keep is not None else raw
            content = clean_response("".join(kept))
            if not interrupted:
                answer = Message(role="assistant", content=content)
                if len(raw) >= self.params.max_tokens:
                    answer["truncated"] = True  # stopped by max-tokens: /continue may go on
                self.messages.append(answer)
            elif content:
                self.messages.append({"role": "assistant", "content": content, "interrupted": True})
            else:
                # Nothing came back: no question without an answer, nothing /retry replaced lost.
                self.messages = before
            if finished or cancel.is_set():
                ended()
            if self.messages is not before:
                self._save_or_log(notify)

    def _valid_unicode(self, text: str, notify: Callable[[str], None]) -> str:
        """Bytes that were not UTF-8 reach Python as lone surrogates (surrogateescape), which
        no model or file can take: each becomes U+FFFD, and the first time, a line says so."""
        if not any("\ud800" <= ch <= "\udfff" for ch in text):
            return text
        if not self._said_replaced:
            self._said_replaced = True
            notify(labelled(INFO, "The message had bytes that are not UTF-8; each became �."))
        return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)

    def stats_text(self) -> str:
        if not self.session_stats:
            return "No replies yet."
        last = self.session_stats[-1]
        tokens = sum(s.generated_tokens for s in self.session_stats)
        seconds = sum(s.total for s in self.session_stats)
        mean_ttft = sum(s.time_to_first_token for s in self.session_stats) / len(self.session_stats)
        return (
            f"Last reply:  {last.generated_tokens} tokens, "
            f"time to first token {last.time_to_first_token * 1000:.0f} ms, "
            f"{last.tokens_per_second:.1f} tok/s\n"
            f"Session:     {len(self.session_stats)} replies, {tokens} tokens in {seconds:.1f} s, "
            f"mean time to first token {mean_ttft * 1000:.0f} ms"
        )


class SavedAs(NamedTuple):  # (a frozen dataclass took ~0.6 ms of every start)
    """What a resumed chat's file holds besides what this version writes: fields and settings
    a later hailo-repl added (written back as they were), or the format of a later one whose
    file is never rewritten (`newer_format`; the chat then goes on as a new one, without them)."""

    fields: dict[str, Any] = {}  # (read, never changed: one empty dict serves every chat)
    settings: dict[str, Any] = {}
    newer_format: str | None = None

    @classmethod
    def of(cls, saved: dict[str, Any], own_settings: dict[str, Any]) -> SavedAs:
        newer = newer_format(saved)
        if newer is not None:
            return cls(newer_format=newer)
        settings = saved.get("settings")
        unknown = {k: v for k, v in settings.items() if k not in own_settings} if isinstance(settings, dict) else {}
        return cls(unknown_fields(saved), unknown)


def _has_turns(messages: list[Message]) -> bool:
    return any(m["role"] == "user" for m in messages)
