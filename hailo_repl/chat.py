"""One conversation with one backend: the place where a turn runs.

Both the line-by-line mode (pipes, -p) and the REPL send messages through
`Chat.reply()`, so context fitting, filtering, interruption and statistics
behave the same everywhere.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Callable, Iterator

from hailo_repl.backends.base import Backend, GenerationParams, Message
from hailo_repl.context import ContextUsage, fit_history
from hailo_repl.stats import ReplyStats
from hailo_repl.streaming import StreamingTextFilter, clean_response

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Be concise and clear in your responses."
INTERRUPTED_MARK = "[interrupted]"


def for_model(messages: list[Message]) -> list[Message]:
    """Messages as backends take them: role and content only (no 'interrupted' flag)."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def shown(message: Message) -> str:
    """A message's text as the user sees it: an interrupted reply carries the mark."""
    if message.get("interrupted"):
        return f"{message['content']} {INTERRUPTED_MARK}"
    return message["content"]


class Chat:
    def __init__(self, backend: Backend, system_prompt: str, params: GenerationParams):
        self.backend = backend
        self.params = params
        self.system_prompt = system_prompt
        self.messages: list[Message] = [{"role": "system", "content": system_prompt}]
        self.last_stats: ReplyStats | None = None
        self.session_stats: list[ReplyStats] = []
        self._retried: list[Message] = []  # the exchange /retry replaces, until it is replaced

    def usage(self) -> ContextUsage:
        return ContextUsage(self.backend.context_used, self.backend.context_capacity)

    def clear(self) -> None:
        self.messages = [{"role": "system", "content": self.system_prompt}]
        self.backend.clear()

    def set_system_prompt(self, text: str) -> None:
        self.system_prompt = text
        self.messages[0] = {"role": "system", "content": text}

    def replace_messages(self, messages: list[Message]) -> None:
        """Continue a saved conversation; the backend notices its history differs."""
        if not messages or messages[0]["role"] != "system":
            messages = [{"role": "system", "content": self.system_prompt}] + messages
        self.system_prompt = messages[0]["content"]
        self.messages = list(messages)

    def undo(self) -> str | None:
        """Drop the last user message and what answered it; return that message's text."""
        for index in range(len(self.messages) - 1, 0, -1):
            if self.messages[index]["role"] == "user":
                text = self.messages[index]["content"]
                del self.messages[index:]
                return text
        return None

    def retry(self) -> str | None:
        """Like undo(), but the exchange comes back if the new reply brings nothing."""
        before = list(self.messages)
        text = self.undo()
        self._retried = before[len(self.messages):] if text is not None else []
        return text

    def reply(
        self,
        text: str,
        cancel: threading.Event,
        notify: Callable[[str], None] = lambda line: None,
    ) -> Iterator[str]:
        """Send `text` as the user's turn; yield the reply's displayable text as it streams.

        The reply, complete or not, is kept in the conversation; an interrupted
        one is flagged. Raises ContextOverflowError when the message cannot fit
        at all, and BackendError when the backend fails.
        """
        candidate = self.messages + [{"role": "user", "content": text}]
        fitted = fit_history(
            for_model(candidate), self.backend.count_tokens, self.backend.context_capacity, self.params.max_tokens
        )
        if fitted.dropped_turns:
            notify(
                f"[Context] Dropped the {fitted.dropped_turns} oldest turn(s) to make room "
                f"(the system prompt is kept)."
            )
            self.messages = candidate[:1] + candidate[len(candidate) - len(fitted.messages) + 1:]
        else:
            self.messages = candidate

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
            self._keep_reply(clean_response("".join(raw)), complete=finished and not cancel.is_set())

    def _keep_reply(self, content: str, complete: bool) -> None:
        if complete:
            self.messages.append({"role": "assistant", "content": content})
        elif content:
            self.messages.append({"role": "assistant", "content": content, "interrupted": True})
        else:
            # Nothing came back: forget the question rather than leave two user turns in
            # a row, and give back an exchange that /retry took away.
            self.messages.pop()
            self.messages += self._retried
        self._retried = []

    def stats_text(self) -> str:
        if not self.session_stats:
            return "No replies yet."
        last = self.session_stats[-1]
        tokens = sum(s.generated_tokens for s in self.session_stats)
        seconds = sum(s.total for s in self.session_stats)
        mean_ttft = sum(s.time_to_first_token for s in self.session_stats) / len(self.session_stats)
        return (
            f"Last reply:  {last.generated_tokens} tokens, time to first token {last.time_to_first_token * 1000:.0f} ms, "
            f"{last.tokens_per_second:.1f} tok/s\n"
            f"Session:     {len(self.session_stats)} replies, {tokens} tokens in {seconds:.1f} s, "
            f"mean time to first token {mean_ttft * 1000:.0f} ms"
        )
