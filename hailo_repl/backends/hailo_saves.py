"""The Hailo device's context saved to a file and loaded again, for one HEF: a chat's (for a
quick resume) and a system prompt's (for a new chat), where the device's own figures say a load
pays (hailo_keeping.py), within the budget on disk and the memory available.

HailoRT hands over the whole KV cache whatever its fill (hailo-ai/hailort v5.2.0, llm_server.cpp
`LLMServer::get_context`), as a list of ints that pyhailort.py `LLM.save_context` makes bytes, and
`LLM.load_context` makes a list again (llm_api.cpp, no call_guard): seconds with the GIL held on a
Pi. A load leaves the template's first-prompt state as it was (minja_wrapper.cpp `m_is_first`), so
after one the backend sends its prompts as text (hailo.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hailo_repl.backends.base import Message
from hailo_repl.backends.chat_template import ChatTemplate
from hailo_repl.backends.hailo_context import (
    ContextFileError,
    ContextTags,
    hef_identity,
    messages_digest,
    read_context,
    tags_differ,
    write_context,
)
from hailo_repl.backends.hailo_device import installed_hailort_version
from hailo_repl.backends.hailo_keeping import (
    DeviceFigures,
    KeepingPolicy,
    make_room,
    memory_allows,
    with_prefill_sample,
)
from hailo_repl.backends.hailo_selfcheck import DeviceFacts, keeping_figures
from hailo_repl.log import logger

# A kept context to start from: its file, the messages it holds, and their rendered text where
# the messages alone do not settle it (a system prompt dated by its template).
Start = tuple[Path, list[Message], str | None]


class KeptContexts:
    def __init__(self, hef_path: Path, keeping: KeepingPolicy, cache: Path | None, facts: DeviceFacts):
        self.hef_path = hef_path
        self.keeping = keeping
        self.cache = cache  # where system prompts' contexts are kept (None: nowhere)
        self.facts = facts
        self.key = ""  # hailo_selfcheck.device_key: whose facts, set as the model loads
        self.saved: tuple[Path, str] | None = None  # the last context saved or loaded: (file, digest of its messages)
        self.offered: tuple[Path, list[Message]] | None = None  # a resumed chat's saved context
        self.system_to_keep: list[Message] | None = None  # a system prompt whose context is worth keeping

    # ---- the device's figures -------------------------------------------------------------------

    def figures(self) -> DeviceFigures:
        return DeviceFigures.from_facts(self.facts.entry(self.key))

    def pays(self, tokens: int) -> bool:
        """Whether a context of `tokens` is worth keeping and loading: the device's figures say a
        load beats reading them again (DeviceFigures.load_wins; unmeasured: no)."""
        return self.figures().load_wins(tokens)

    def note_prefill(self, tokens: int, milliseconds: float) -> None:
        """A prompt's time to first token, kept where it widens the range of prefills seen: the
        marginal rate between the shortest and the longest decides whether a load pays."""
        samples = with_prefill_sample(self.facts.get(self.key, "prefill"), tokens, milliseconds)
        if samples is not None and self.facts.path is not None:
            self.facts.remember(self.key, "prefill", samples)

    def _remember(self, what: str, size: int, device_seconds: float, file_seconds: float) -> None:
        self.facts.remember(self.key, what, keeping_figures(size, device_seconds, file_seconds))

    def tags(self, messages: Sequence[Message], rendered: str | None = None) -> ContextTags:
        """`rendered`: the text the context holds, where the messages alone do not settle it."""
        digest = messages_digest(messages)
        if rendered is not None:
            digest = hashlib.sha256(f"{digest}\n{rendered}".encode()).hexdigest()
        return ContextTags(hef_identity(self.hef_path), installed_hailort_version(), digest)

    # ---- saving ----------------------------------------------------------------------------------

    def save(self, llm: Any, path: Path, held: list[Message]) -> bool:
        """Keep the context holding `held` in `path` (unless it is there already); False when it
        was not kept and should be tried again. The caller holds the generation lock."""
        if self.saved == (path, messages_digest(held)):
            return True
        return self._write(llm, path, self.tags(held))

    def _write(self, llm: Any, path: Path, tags: ContextTags) -> bool:
        """Save the device's context to `path` within the budget and the memory available; False
        when it was not kept but may be later (the log says why)."""
        expected = self.figures().context_bytes or 0
        policy = self.keeping
        if policy.chat_directory is None and path.parent != policy.cache_directory:
            policy = dataclasses.replace(policy, chat_directory=path.parent)
        if not make_room(policy, expected, replacing=path):
            logger.info("not keeping the device context: {} bytes exceed the device-context budget", expected)
            return True  # it never will fit: not worth a retry
        if not memory_allows(expected, "saving"):
            return False
        try:
            started = time.monotonic()
            data = llm.save_context()
            read = time.monotonic()
            write_context(path, tags, data)
        except Exception:  # the chat itself is saved; only a quicker resume is lost
            logger.exception("saving the device context to {} failed", path)
            return False
        written = time.monotonic()
        self.saved = (path, tags.messages)
        make_room(policy, 0)  # another process may have kept some meanwhile
        self._remember("save", len(data), read - started, written - read)
        logger.info(
            "saved the device context to {}: {} bytes, {:.0f} ms from the device, {:.0f} ms to write",
            path,
            len(data),
            (read - started) * 1000,
            (written - read) * 1000,
        )
        return True

    # ---- loading ---------------------------------------------------------------------------------

    def start_for(self, llm: Any, messages: list[Message], template: ChatTemplate | None) -> Start | None:
        """The kept context to start an empty one from: the resumed chat's, else the system
        prompt's (kept for this HEF), where the figures say loading it beats reading what it
        holds (this runs between Enter and the first token). `template`: None where prompts may
        not go as text (the self-check not passed). None: read them all."""
        offered, self.offered = self.offered, None
        if template is None:
            if offered is not None:
                logger.info("not loading {}: {} has not passed the self-check", offered[0], self.hef_path.stem)
            return None
        if not self.figures().measured:
            if offered is not None:
                logger.info("not loading {}: the device's load and prefill times are not measured yet", offered[0])
            return None
        if offered is not None and self._load_pays(llm, template, offered[1], None):
            return offered[0], offered[1], None
        if self.cache is None or len(messages) < 2 or messages[0]["role"] != "system":
            return None
        system = messages[:1]
        # The text, not only the message: Llama 3.x puts today's date in it (strftime_now), so a
        # context kept on another day is made again, as HailoRT would render it today.
        rendered = template.render(system, add_generation_prompt=False)
        if not self._load_pays(llm, template, system, rendered):
            return None
        path = self._system_context_path(system)
        if not path.exists():  # kept as the model is released (keep_system_prompt)
            self.system_to_keep = system
            return None
        return path, system, rendered

    def _load_pays(self, llm: Any, template: ChatTemplate, held: list[Message], rendered: str | None) -> bool:
        """Whether loading a context of `held` (as `rendered`) beats prefilling it; the log says why not."""
        tokens = len(llm.tokenize(rendered if rendered is not None else template.first(held)))
        if self.pays(tokens):
            return True
        logger.info("reading {} tokens again instead of loading their context: {}", tokens, self.figures().summary())
        return False

    def load(self, llm: Any, start: Start, messages: list[Message]) -> bool:
        """Load the context `start` names if it holds the beginning of `messages`; the log says
        why not. On a failure the device's context is cleared (whatever a failed load left)."""
        path, held, rendered = start
        why: str | None = "the chat changed since it was saved"
        data: bytes | memoryview = b""
        started = read = loaded = time.monotonic()
        if len(messages) > len(held) and messages[: len(held)] == held:
            try:
                if not memory_allows(path.stat().st_size if path.exists() else 0, "loading"):
                    raise ContextFileError("too little memory available")
                tags, data = read_context(path)
                why = tags_differ(tags, self.tags(held, rendered))
            except ContextFileError as error:
                why = str(error)
        if why is None:
            try:
                read = time.monotonic()
                llm.load_context(data)  # pyhailort.py `LLM.load_context`: list(data), GIL held
                loaded = time.monotonic()
            except Exception as error:
                why = f"HailoRT refused it ({error or type(error).__name__})"
                llm.clear_context()
        if why is not None:
            logger.info("not loading {} (the model reads the messages instead): {}", path, why)
            if rendered is not None:
                self.system_to_keep = held  # the system prompt's: kept again as the model is released
            return False
        self.saved = (path, messages_digest(held))
        self._remember("load", len(data), loaded - read, read - started)
        logger.info(
            "loaded the device context of {} messages from {}: {} bytes, {:.0f} ms to read, {:.0f} ms to the device",
            len(held),
            path,
            len(data),
            (read - started) * 1000,
            (loaded - read) * 1000,
        )
        return True

    # ---- the system prompt's ---------------------------------------------------------------------

    def _system_context_path(self, system: list[Message]) -> Path:
        assert self.cache is not None
        key = hashlib.sha256(f"{hef_identity(self.hef_path)}\n{messages_digest(system)}".encode()).hexdigest()
        return self.cache / f"{self.hef_path.stem}-{key[:16]}.ctx"

    def keep_system_prompt(self, llm: Any, template: ChatTemplate | None) -> None:
        """As the model is released (its context is lost then anyway): read the system prompt
        whose load paid but was not kept yet alone, a prefill (max_generated_tokens=0:
        llm_server.cpp `handle_generation_completion` adds no token and no recovery sequence),
        and keep its context for the next new chat."""
        system, self.system_to_keep = self.system_to_keep, None
        if system is None or self.cache is None or template is None or not self.keeping.keep_chats:
            return
        prefix = template.render(system, add_generation_prompt=False)
        probe: list[Message] = [{"role": "user", "content": "x"}]
        if prefix + template.later(probe) != template.first([*system, *probe]):
            logger.info("the chat template does not split after the system prompt: its context is not kept")
            return
        path = self._system_context_path(system)
        try:
            llm.clear_context()
            with llm.generate(prompt=prefix, max_generated_tokens=0):
                pass
        except Exception:
            logger.exception("reading the system prompt alone, to keep its context in {}, failed", path)
            return
        self._write(llm, path, self.tags(system, prefix))
