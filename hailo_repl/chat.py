"""One conversation with one backend: the place where a turn runs.

Both the line-by-line mode (pipes, -p) and the REPL send messages through
`Chat.reply()`, so context fitting, filtering, interruption and statistics
behave the same everywhere.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterator

from hailo_repl.backends.base import Backend, GenerationParams, Message
from hailo_repl.context import ContextUsage, fit_history
from hailo_repl.stats import ReplyStats
from hailo_repl.streaming import StreamingTextFilter, clean_response

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Be concise and clear in your responses."
INTERRUPTED_MARK = "[interrupted]"


class Chat:
    def __init__(self, backend: Backend, system_prompt: str, params: GenerationParams):
        self.backend = backend
        self.params = params
        self.system_prompt = system_prompt
        self.messages: list[Message] = [{"role": "system", "content": system_prompt}]
        self.last_stats: ReplyStats | None = None

    def usage(self) -> ContextUsage:
        return ContextUsage(self.backend.context_used, self.backend.context_capacity)

    def clear(self) -> None:
        self.messages = [{"role": "system", "content": self.system_prompt}]
        self.backend.clear()

    def reply(
        self,
        text: str,
        cancel: threading.Event,
        notify: Callable[[str], None] = lambda line: None,
    ) -> Iterator[str]:
        """Send `text` as the user's turn; yield the reply's displayable text as it streams.

        The reply, complete or not, is kept in the conversation; an interrupted
        one is marked. Raises ContextOverflowError when the message cannot fit
        at all, and BackendError when the backend fails.
        """
        candidate = self.messages + [{"role": "user", "content": text}]
        fitted = fit_history(
            candidate, self.backend.count_tokens, self.backend.context_capacity, self.params.max_tokens
        )
        if fitted.dropped_turns:
            notify(
                f"[Context] Dropped the {fitted.dropped_turns} oldest turn(s) to make room "
                f"(the system prompt is kept)."
            )
        self.messages = fitted.messages

        stats = ReplyStats()
        raw: list[str] = []
        display = StreamingTextFilter()
        started = time.perf_counter()
        finished = False
        try:
            for piece in self.backend.stream(self.messages, self.params, cancel):
                if not raw:
                    stats.time_to_first_token = time.perf_counter() - started
                raw.append(piece)
                shown = display.feed(piece)
                if shown:
                    yield shown
            tail = display.flush()
            if tail:
                yield tail
            finished = True
        finally:
            stats.total = time.perf_counter() - started
            stats.generated_tokens = len(raw)
            stats.prompt_tokens = self.backend.last_prompt_tokens
            self.last_stats = stats
            self._keep_reply(clean_response("".join(raw)), complete=finished and not cancel.is_set())

    def _keep_reply(self, content: str, complete: bool) -> None:
        if complete:
            self.messages.append({"role": "assistant", "content": content})
        elif content:
            self.messages.append({"role": "assistant", "content": f"{content} {INTERRUPTED_MARK}"})
        else:
            # Nothing came back: forget the question rather than leave two user turns in a row.
            self.messages.pop()
