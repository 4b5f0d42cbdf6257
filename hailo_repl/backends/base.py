"""The protocol every backend implements; the rest of hailo-repl sees only this."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Iterator, Protocol, Sequence, runtime_checkable

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass
class GenerationParams:
    temperature: float = 0.7
    max_tokens: int = 512
    top_p: float | None = None


class BackendError(Exception):
    """A failure to show the user as one line (the message says what to check)."""


class BackendBusyError(BackendError):
    """A second generation was asked for while one runs."""


@contextlib.contextmanager
def one_generation_at_a_time(lock: threading.Lock):
    """Hold a backend's generation lock, refusing (not waiting) when a generation runs."""
    if not lock.acquire(blocking=False):
        raise BackendBusyError("a reply is already being generated")
    try:
        yield
    finally:
        lock.release()


@runtime_checkable
class Backend(Protocol):
    name: str  # "hailo" or "llama"
    model_name: str  # what the user knows the model as
    last_prompt_tokens: int  # tokens the last stream() had to evaluate as prompt
    loads_in_background: bool  # False: load() blocks the whole process, so load before the prompt

    def load(self) -> None: ...

    def stream(
        self, messages: Sequence[Message], params: GenerationParams, cancel: threading.Event
    ) -> Iterator[str]:
        """Yield the reply's raw text pieces; stop within one token once `cancel` is set."""

    def count_tokens(self, messages: Sequence[Message]) -> int: ...

    @property
    def context_used(self) -> int: ...

    @property
    def context_capacity(self) -> int: ...

    def clear(self) -> None: ...

    def release(self) -> None: ...
