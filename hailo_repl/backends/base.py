"""The protocol every backend implements; the rest of hailo-repl sees only this."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, TypedDict, runtime_checkable

from hailo_repl.settings import default_of

if TYPE_CHECKING:
    from hailo_repl.backends.hailo_keeping import KeepingPolicy

Role = Literal["system", "user", "assistant"]


class _MessageFields(TypedDict):
    role: Role
    content: str


class Message(_MessageFields, total=False):
    """One message of a conversation; `interrupted` marks a reply cut short by Ctrl+C,
    `truncated` one that reached max-tokens (/continue goes on with either)."""

    interrupted: bool
    truncated: bool


def cut_off(message: Message) -> bool:
    """Whether `message` is a reply that stopped before its end (max-tokens or Ctrl+C)."""
    return message["role"] == "assistant" and bool(message.get("truncated") or message.get("interrupted"))


@dataclass
class GenerationParams:
    """What a reply is generated with; ranges and defaults live in hailo_repl.settings."""

    temperature: float = default_of("temperature")
    max_tokens: int = default_of("max-tokens")
    top_p: float | None = default_of("top-p")


class BackendError(Exception):
    """A failure to show the user as one line (the message says what to check)."""


class BackendBusyError(BackendError):
    """A second generation was asked for while one runs."""


@contextlib.contextmanager
def one_generation_at_a_time(lock: threading.Lock) -> Iterator[None]:
    """Hold a backend's generation lock, refusing (not waiting) when a generation runs."""
    if not lock.acquire(blocking=False):
        raise BackendBusyError("a reply is already being generated")
    try:
        yield
    finally:
        lock.release()


class Notice(str):
    """A line for the user about a reply, not part of it ("waiting for the server…", a stalled
    device); a stream may yield one."""


# A reply as it streams (text pieces, and Notices): the caller close()s it to stop the
# generation early.
ReplyStream = Generator[str, None, None]


@runtime_checkable
class Backend(Protocol):
    name: str  # "hailo", "llama", "ollama", "hailo-ollama" or "openai"
    model_name: str  # what the user knows the model as
    last_prompt_tokens: int  # tokens the last stream() had to evaluate as prompt
    loads_in_background: bool  # False: load() blocks the whole process, so load before the prompt

    def load(self) -> None: ...

    def stream(self, messages: Sequence[Message], params: GenerationParams, cancel: threading.Event) -> ReplyStream:
        """Yield the reply's raw text pieces; stop within one token once `cancel` is set."""
        ...

    def count_tokens(self, messages: Sequence[Message]) -> int: ...

    @property
    def context_used(self) -> int: ...

    @property
    def context_capacity(self) -> int: ...

    @property
    def context_is_estimate(self) -> bool:
        """True when context_used or context_capacity is a guess, not the model's own count."""
        ...

    def clear(self) -> None: ...

    def release(self) -> None: ...


@runtime_checkable
class KeepsContext(Protocol):
    """A backend whose model context can be kept in a file and loaded again (the Hailo
    device's), so a resumed chat is not read again; the other backends lack these methods."""

    def context_to_keep(self, messages: Sequence[Message]) -> bool:
        """Whether save_context(…, messages) would write something now (a quick question: no device call)."""
        ...

    def save_context(self, path: Path, messages: Sequence[Message]) -> bool:
        """Keep the model's context in `path` if it holds exactly `messages` and keeping it pays;
        never raises. False when it was not kept but should be tried again (a reply ran, the save
        failed, memory was short); True when kept, or when there is nothing worth keeping."""
        ...

    def offer_context(self, path: Path, messages: Sequence[Message]) -> None:
        """`path` may hold a context of `messages`: the next reply may load it instead of reading them."""
        ...

    def keep_as(self, keeping: KeepingPolicy) -> None:
        """Another chat on the loaded model keeps contexts by `keeping` (in the engine process a
        terminal's chat, then a script's); may call the device (the self-check, once a model)."""
        ...
