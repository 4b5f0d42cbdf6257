"""One conversation with one backend: the place where a turn runs.

Both the line-by-line mode (pipes, -p) and the REPL send messages through
`Chat.reply()`, so context fitting, filtering, interruption and statistics
behave the same everywhere.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from hailo_repl.backends.base import Backend, BackendError, GenerationParams, Message, Notice, ReplyStream
from hailo_repl.console import CONTEXT, INFO, labelled
from hailo_repl.context import ContextUsage, fit_history, split_turns
from hailo_repl.stats import ReplyStats
from hailo_repl.streaming import StreamingTextFilter, clean_response


def for_model(messages: list[Message]) -> list[Message]:
    """Messages as backends take them: role and content only (no 'interrupted' flag)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


class Chat:
    def __init__(self, backend: Backend, system_prompt: str, params: GenerationParams):
        self.backend = backend
        self.params = params
        self.system_prompt = system_prompt
        self.messages: list[Message] = [{"role": "system", "content": system_prompt}]
        self.last_stats: ReplyStats | None = None
        self.session_stats: list[ReplyStats] = []
        self._said_replaced = False  # whether the user was told of bytes that were not UTF-8

    def usage(self) -> ContextUsage:
        backend = self.backend
        return ContextUsage(backend.context_used, backend.context_capacity, backend.context_is_estimate)

    def reply_room(self) -> int | None:
        """The most tokens a reply can take: the context less the system prompt. None while
        the model cannot count yet (not loaded)."""
        try:
            return self.backend.context_capacity - self.backend.count_tokens(self.messages[:1])
        except BackendError:
            return None

    def clear(self) -> None:
        self.backend.clear()  # first: a reply still running ends (and is kept) before the wipe
        self.messages = [{"role": "system", "content": self.system_prompt}]

    def set_system_prompt(self, text: str) -> None:
        self.system_prompt = text
        self.messages[0] = {"role": "system", "content": text}

    def replace_messages(self, messages: list[Message]) -> None:
        """Continue a saved conversation; the backend notices its history differs."""
        if not messages or messages[0]["role"] != "system":
            messages = [Message(role="system", content=self.system_prompt), *messages]
        self.system_prompt = messages[0]["content"]
        self.messages = list(messages)

    def _last_question(self) -> int | None:
        """Index of the last user message, if any."""
        for index in range(len(self.messages) - 1, 0, -1):
            if self.messages[index]["role"] == "user":
                return index
        return None

    def last_question(self) -> str | None:
        index = self._last_question()
        return None if index is None else self.messages[index]["content"]

    def undo(self) -> str | None:
        """Drop the last user message and what answered it; return that message's text."""
        index = self._last_question()
        if index is None:
            return None
        text = self.messages[index]["content"]
        del self.messages[index:]
        return text

    def reply(
        self,
        text: str,
        cancel: threading.Event,
        notify: Callable[[str], None] = lambda line: None,
        replace_last: bool = False,
    ) -> ReplyStream:
        """Send `text` as the user's turn; yield the reply's displayable text as it streams.

        The reply, complete or not, is kept in the conversation; an interrupted
        one is flagged. With `replace_last` (/retry) the new exchange takes the last
        one's place. If nothing comes back, the conversation stays as it was. Raises
        ContextOverflowError when the message cannot fit at all, and BackendError
        when the backend fails.
        """
        text = self._valid_unicode(text, notify)
        before = list(self.messages)
        last = self._last_question() if replace_last else None
        base = self.messages[:last] if last is not None else self.messages
        candidate = base + [{"role": "user", "content": text}]
        fitted = fit_history(
            for_model(candidate), self.backend.count_tokens, self.backend.context_capacity, self.params.max_tokens
        )
        if fitted.dropped_turns:
            dropped = f"Dropped the {fitted.dropped_turns} oldest turn(s) to make room (the system prompt is kept)."
            notify(labelled(CONTEXT, dropped))
        system, turns = split_turns(candidate)
        self.messages = system + [m for turn in turns[fitted.dropped_turns :] for m in turn]

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
                    if not raw:
                        stats.time_to_first_token = time.perf_counter() - started
                    raw.append(piece)
                    visible = display.feed(piece)
                    if visible:
                        yield visible
            tail = display.flush()
            if tail:
                yield tail
            finished = True
        finally:
            stats.total = time.perf_counter() - started
            stats.generated_tokens = len(raw)
            stats.prompt_tokens = self.backend.last_prompt_tokens
            self.last_stats = stats
            if raw:
                self.session_stats.append(stats)
            content = clean_response("".join(raw))
            if finished and not cancel.is_set():
                self.messages.append({"role": "assistant", "content": content})
            elif content:
                self.messages.append({"role": "assistant", "content": content, "interrupted": True})
            else:
                # Nothing came back: no question without an answer, nothing /retry replaced lost.
                self.messages = before

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
