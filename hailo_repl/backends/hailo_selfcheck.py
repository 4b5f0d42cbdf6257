"""The Hailo device checks itself, and what it has shown is remembered.

After a loaded context hailo-repl sends prompts as text, rendered by chat_template.py, on the
ground that HailoRT turns a string and a message list into tokens the same way (both reach
llm.cpp `LLMGenerator::Impl::write` and llm_server.cpp `text_to_tokens`). Nobody here can run
a Hailo-10H, so the first time a HEF meets a HailoRT version the same short chat is read both
ways, prefill only (max_generated_tokens=0: llm_server.cpp `handle_generation_completion` adds
nothing to the context), and the two context sizes are compared. LLM.tokenize() of the texts
is logged beside them but decides nothing: a reasoning HEF (DeepSeek-R1-Distill, whose
generation prompt ends in <think>) keeps what follows <think> out of the context on both
paths alike (llm_server.cpp `handle_prefill_phase`, `handle_reasoning_generation_completion`).
Until a HEF has passed, the backend sends message lists only (no kept system-prompt context,
a resumed chat is read again).

The same small private file keeps the size and time of the last device-context save and load
on each HEF, so the first real device tells what they cost; `hailo-repl doctor` prints them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hailo_repl.backends import chat_template
from hailo_repl.backends.base import Message
from hailo_repl.backends.chat_template import ChatTemplate
from hailo_repl.backends.hailo_context import CONTEXT_FILE_LIMIT, hef_identity
from hailo_repl.log import logger
from hailo_repl.private_files import (
    FileTooLarge,
    read_bytes_limited,
    read_text_limited,
    write_atomically,
    write_bytes_atomically,
)

DEVICE_FACTS_NAME = "hailo-device-facts.json"  # beside the kept device contexts
FACTS_FILE_LIMIT = 1 << 20

# A short chat with what templates treat specially: a system prompt, a reply, edge spaces
# (Llama's `| trim`), a non-ASCII letter and a line break.
SELF_CHECK_CHAT: list[Message] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": " Name a colour, in French and in English. "},
    {"role": "assistant", "content": "Bleu — blue."},
    {"role": "user", "content": "And one more?\nJust one."},
]


# Plain text of a few hundred tokens: its prefill beside the check's short ones gives the
# device's marginal prefill rate (hailo_keeping.py `prefill_rate`).
LONG_PREFILL = " ".join(f"Line {n}: the quick brown fox jumps over the lazy dog." for n in range(16))


@dataclass
class Verdict:
    passed: bool
    detail: str  # the figures compared, for the log and the doctor
    ran: bool = True  # False: a device call failed (busy, timed out), the verdict is no verdict
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)  # save, load, prefill: what the device showed


def _prefill(llm: Any, prompt: str | list[Message]) -> float:
    """Prefill only; returns the milliseconds it took (generate() waits for the empty answer:
    llm.cpp `LLMGenerator::Impl::generate`)."""
    started = time.monotonic()
    with llm.generate(prompt=prompt, max_generated_tokens=0):
        pass
    return (time.monotonic() - started) * 1000


def _context_digest(llm: Any) -> str:
    """What the device holds, exactly: a hash of its saved context (the KV cache, embeddings and
    position ids are functions of the exact tokens: llm_server.cpp `LLMServer::get_context`)."""
    data = llm.save_context()
    return hashlib.sha256(data).hexdigest()


def keeping_figures(size: int, device_seconds: float, file_seconds: float) -> dict[str, int]:
    """What a save or a load of a device context cost, as the facts file keeps it (what
    hailo_keeping.DeviceFigures reads back)."""
    return {"bytes": size, "device_ms": round(device_seconds * 1000), "file_ms": round(file_seconds * 1000)}


def _measure_keeping(llm: Any, scratch: Path | None) -> tuple[str, dict[str, dict[str, Any]]]:
    """The device's context saved (its hash: what it holds), to a file, read back and loaded:
    what keeping one costs here. One save does both jobs: each is the whole KV cache."""
    started = time.monotonic()
    data = llm.save_context()
    saved = time.monotonic()
    digest = hashlib.sha256(data).hexdigest()
    size = len(data)
    if scratch is None:
        return digest, {"save": keeping_figures(size, saved - started, 0)}
    path = scratch / f".self-check-{os.getpid()}.ctx"
    try:
        hashed = time.monotonic()  # the hash is the check's, not the save's
        write_bytes_atomically(path, data)
        written = time.monotonic()
        del data  # one context in memory at a time
        data = read_bytes_limited(path, CONTEXT_FILE_LIMIT)
        read = time.monotonic()
        llm.load_context(data)
        loaded = time.monotonic()
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
    save, load = (
        keeping_figures(size, saved - started, written - hashed),
        keeping_figures(size, loaded - read, read - written),
    )
    return digest, {"save": save, "load": load}


def _lists_digest(llm: Any) -> tuple[int, str]:
    """SELF_CHECK_CHAT read as two message lists from a cleared context: the context's size and hash."""
    llm.clear_context()
    _prefill(llm, SELF_CHECK_CHAT[:2])
    _prefill(llm, SELF_CHECK_CHAT[2:])
    return llm.get_context_usage_size(), _context_digest(llm)


def run_self_check(llm: Any, template: ChatTemplate, scratch: Path | None = None) -> Verdict:
    """Read SELF_CHECK_CHAT as message lists, then as the texts hailo-repl would send, each from
    a cleared context, and compare what the device holds after each: a hash of its saved
    context, so a newline more or less shows. When they differ the lists are read again: a
    device whose context differs between two identical runs gets the token counts compared
    instead (and the detail says so). On the way it measures what keeping a context costs
    (`scratch`: a folder for the file) and its prefill rate. Two whole-KV saves and a load when
    it passes, three saves when not. The context is left cleared (the template state too); a
    device call that fails, that final clear included, makes no verdict."""
    first, later = SELF_CHECK_CHAT[:2], SELF_CHECK_CHAT[2:]
    try:
        by_list, list_digest = _lists_digest(llm)
        llm.clear_context()
        texts = [template.first(first), template.later(later)]
        short_ms = _prefill(llm, texts[0])
        short_tokens = llm.get_context_usage_size()
        _prefill(llm, texts[1])
        by_text = llm.get_context_usage_size()
        tokenized = sum(len(llm.tokenize(text)) for text in texts)
        text_digest, figures = _measure_keeping(llm, scratch)
        llm.clear_context()
        long_ms = _prefill(llm, LONG_PREFILL)
        long_tokens = llm.get_context_usage_size()
        deterministic = list_digest == text_digest or _lists_digest(llm)[1] == list_digest
    except Exception as error:
        return Verdict(False, f"the check failed to run ({error or type(error).__name__})", ran=False)
    finally:
        try:
            llm.clear_context()
        except Exception as error:  # a broken device: no verdict, and no raw HailoRT error out of load()
            return Verdict(
                False, f"the check failed to run (clear_context: {error or type(error).__name__})", ran=False
            )
    figures["prefill"] = {"short": [short_tokens, round(short_ms, 1)], "long": [long_tokens, round(long_ms, 1)]}
    counts = f"context after the lists {by_list} tokens, after the texts {by_text}; texts tokenize to {tokenized}"
    if not deterministic:
        detail = f"compared token counts only (the device's context differed between two identical runs); {counts}"
        return Verdict(by_list == by_text > 0, detail, figures=figures)
    same = list_digest == text_digest
    detail = f"the device's context after the texts is {'the same as' if same else 'NOT the same as'} after the lists"
    detail += f"; {counts}"
    return Verdict(same and by_list == by_text > 0, detail, figures=figures)


def check_and_remember(llm: Any, template: ChatTemplate, facts: DeviceFacts, key: str, model: str) -> Verdict:
    """Run the self-check (its scratch file beside the facts) and keep its verdict and figures
    under `key`, unless it could not run (then it runs again at the next load); the log says it."""
    started = time.monotonic()
    verdict = run_self_check(llm, template, facts.path.parent if facts.path else None)
    if verdict.ran:
        facts.remember_all(key, {"text_path": {"passed": verdict.passed, "detail": verdict.detail}, **verdict.figures})
    logger.info(
        "self-check of {} with {} ({:.1f} s): {}; {}",
        model,
        key.split(" | ")[1],
        time.monotonic() - started,
        "passed" if verdict.passed else "FAILED",
        verdict.detail,
    )
    return verdict


@functools.cache
def renderer_fingerprint() -> str:
    """What renders the text prompts: chat_template.py's source and jinja2's version. A verdict
    holds for these only: a new hailo-repl or jinja2 (pyproject allows any 3.x) is checked again.
    jinja2's version is read from its source, not imported (it loads with the first prompt)."""
    own = Path(chat_template.__file__).read_bytes()
    spec = importlib.util.find_spec("jinja2")
    jinja2_init = Path(spec.origin).read_text(encoding="utf-8") if spec and spec.origin else ""
    version = re.search(r"__version__\s*=\s*[\"']([^\"']+)", jinja2_init)
    return f"{hashlib.sha256(own).hexdigest()[:12]} jinja2 {version.group(1) if version else 'unknown'}"


def device_key(hef_path: Path, hailort: str) -> str:
    """Whose facts: the HEF, the HailoRT version and the renderer (renderer_fingerprint)."""
    return f"{hef_identity(hef_path)} | HailoRT {hailort} | renderer {renderer_fingerprint()}"


class DeviceFacts:
    """The facts file: per device_key, the self-check's verdict, the device's figures (a
    context's save and load, prefill samples). None as the path: nothing is kept (--no-history)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._read: dict[str, dict[str, Any]] | None = None  # the file as last read or written here

    def entries(self) -> dict[str, dict[str, Any]]:
        if self._read is None:
            self._read = self._from_file()
        return self._read

    def _from_file(self) -> dict[str, dict[str, Any]]:
        if self.path is None:
            return {}
        try:
            data = json.loads(read_text_limited(self.path, FACTS_FILE_LIMIT))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, FileTooLarge) as error:
            logger.warning("ignoring {}: {}", self.path, error)
            return {}
        return data if isinstance(data, dict) else {}

    def entry(self, key: str) -> dict[str, Any]:
        found = self.entries().get(key)
        return found if isinstance(found, dict) else {}

    def get(self, key: str, name: str) -> dict[str, Any] | None:
        found = self.entry(key).get(name)
        return found if isinstance(found, dict) else None

    def remember(self, key: str, name: str, value: dict[str, Any]) -> None:
        self.remember_all(key, {name: value})

    def remember_all(self, key: str, values: dict[str, dict[str, Any]]) -> None:
        """Keep each of `values` (name: value) under `key`, in one read and one write of the file."""
        if self.path is None:
            return
        entries = self._read = self._from_file()  # another process may have written since
        entry = entries.setdefault(key, {})
        when = time.strftime("%Y-%m-%d %H:%M:%S")
        entry.update({name: {**value, "when": when} for name, value in values.items()})
        try:
            write_atomically(self.path, json.dumps(entries, indent=1, ensure_ascii=False))
        except OSError as error:
            logger.warning("could not keep {} in {}: {}", ", ".join(values), self.path, error)
