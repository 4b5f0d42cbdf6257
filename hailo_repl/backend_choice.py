"""Which backend and model the flags and settings pick, before anything is opened.

Its own module, outside hailo_repl.backends (which opens backends and resolves models): a
terminal on the engine process makes a choice and hands it on, and imports none of that
before its first frame.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from hailo_repl.servers import REMOTE_BACKENDS

if TYPE_CHECKING:
    from hailo_repl.backends.hailo_keeping import KeepingPolicy


class BackendChoice(NamedTuple):  # (a dataclass took ~0.4 ms of every start)
    """Which backend and model the flags and settings pick, before anything is opened."""

    backend: str = "auto"  # auto | hailo | llama | ollama | hailo-ollama | openai
    hef_path: str | None = None
    gguf_path: Path | None = None
    model_name: str | None = None  # a server's model (the remote backends)
    url: str | None = None  # the server (the remote backends); None: the environment's, or the default
    api_key: str | None = None
    context_size: int | None = None  # the remote model's context, when the server does not say
    environ: Mapping[str, str] = {}  # OLLAMA_HOST, OPENAI_BASE_URL, OPENAI_API_KEY
    context_cache: Path | None = None  # where the hailo backend keeps system prompts' contexts (None: nowhere)
    # Which device contexts the hailo backend keeps (hailo_keeping.py), asked once it opens.
    keeping: Callable[[], KeepingPolicy] | None = None

    @property
    def settled(self) -> bool:
        """Whether the backend and its model are named, so nothing is left to find or ask the
        user (backends.resolve_choice returns such a choice as it is)."""
        if self.backend in REMOTE_BACKENDS:
            return bool(self.model_name)
        return self.backend == "llama" or self.gguf_path is not None
