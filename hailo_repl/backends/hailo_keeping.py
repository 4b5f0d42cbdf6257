"""Which Hailo device contexts are kept, how much of them the disk holds, and what a save or load may cost.

A kept context is the whole KV cache whatever its fill (hailo-ai/hailort v5.2.0,
hailort/hailort_server/genai/llm/llm_server.cpp `LLMServer::get_context`): about 112 MiB for
Qwen2.5-1.5B, copied through a Python list of ints with the GIL held (llm_api.cpp
`LLMWrapper::save_context`/`load_context` have no call_guard; pyhailort.py `LLM.save_context`
makes bytes of it, `LLM.load_context` a list). So:
- a context is kept only where loading it beats reading again what it holds, by the device's
  own figures (`DeviceFigures.load_wins`); until they are measured, never;
- `-p` and pipes keep none unless a setting says so (`KeepingPolicy.keep_chats`);
- the `.ctx` files together stay within a budget (`make_room`): orphans go first (a chat's
  context whose chat file is gone), then the oldest;
- a save or a load is skipped when its estimated peak memory exceeds what the system has
  available (`memory_allows`): an out-of-memory kill during an idle save would lose the chat.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hailo_repl.log import logger
from hailo_repl.settings import default_of

CONTEXT_SUFFIX = ".ctx"
# Peak memory of a save or a load, in context sizes: the binding's vector, the list of ints
# (8 bytes a byte on 64-bit CPython, small ints being shared objects), the bytes, and one copy
# for the file. llm_api.cpp `LLMWrapper::save_context` (vector -> list), pyhailort.py
# `LLM.save_context` (bytes(list)) and `LLM.load_context` (list(data) -> vector).
PEAK_MEMORY_FACTOR = 11
# Two prefills whose token counts differ by less than this say nothing of the rate: the device
# prefills fixed-size frames (pre_process.cpp `prefill_input_tokens_count`), so a few tokens
# more often cost nothing at all.
PREFILL_SPREAD_TOKENS = 64
# A load must spare at least this much to be worth it: a kept context costs disk and a save, and
# timings of a few ms are noise.
MIN_GAIN_MS = 100.0


@dataclass(frozen=True)
class KeepingPolicy:
    """What the hailo backend may keep on disk. `chat_directory`: where chats keep theirs
    (sessions/<id>.ctx beside <id>.json); `cache_directory`: the system prompts' contexts."""

    keep_chats: bool = True  # False: keep none (-p and pipes, unless a setting says so)
    budget_bytes: int = default_of("device-context-budget") << 20
    chat_directory: Path | None = None
    cache_directory: Path | None = None

    @property
    def directories(self) -> list[Path]:
        return [d for d in (self.chat_directory, self.cache_directory) if d is not None]


def keeping_policy(settings: Mapping[str, Any], interactive: bool, chats: Path, cache: Path) -> KeepingPolicy:
    """The policy the settings give: an interactive chat keeps its context (where it pays), -p and
    pipes only with device-context-for-scripts; all within device-context-budget (MiB)."""
    return KeepingPolicy(
        keep_chats=bool(settings["history"]) and (interactive or bool(settings["device-context-for-scripts"])),
        budget_bytes=int(settings["device-context-budget"]) << 20,
        chat_directory=chats,
        cache_directory=cache,
    )


def is_orphan(path: Path, policy: KeepingPolicy) -> bool:
    """A chat's context whose chat file is gone (deleted, or the chat saved under a new id)."""
    return path.parent == policy.chat_directory and not path.with_suffix(".json").exists()


def _context_files(policy: KeepingPolicy) -> list[tuple[Path, int, int]]:
    """Every kept context: (path, size, mtime_ns)."""
    found = []
    for directory in policy.directories:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith(CONTEXT_SUFFIX) and entry.is_file(follow_symlinks=False):
                with_stat = entry.stat(follow_symlinks=False)
                found.append((Path(entry.path), with_stat.st_size, with_stat.st_mtime_ns))
    return found


def make_room(policy: KeepingPolicy, incoming: int = 0, replacing: Path | None = None) -> bool:
    """Delete kept contexts, orphans first, then the oldest, until the rest plus `incoming` bytes
    fit the budget; `replacing`, a file the incoming one will replace, counts as gone (and is
    not deleted). False when `incoming` alone exceeds the budget (then nothing is deleted)."""
    if incoming > policy.budget_bytes:
        return False
    files = [f for f in _context_files(policy) if f[0] != replacing]
    files.sort(key=lambda f: (not is_orphan(f[0], policy), f[2]))
    total = sum(size for _, size, _ in files) + incoming
    for path, size, _ in files:
        if total <= policy.budget_bytes:
            break
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as error:
            logger.warning("could not delete the kept device context {}: {}", path, error)
            continue
        total -= size
        logger.info("deleted the kept device context {} ({} bytes): the device-context budget is full", path, size)
    return True


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes; None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_allows(context_bytes: int, what: str) -> bool:
    """Whether a save or load of `context_bytes` fits in the memory available now (PEAK_MEMORY_FACTOR
    times the context); the log says why not."""
    available = available_memory()
    peak = context_bytes * PEAK_MEMORY_FACTOR
    if available is None or peak <= available:
        return True
    logger.warning(
        "not {} the device context: it would take about {} MiB of memory, {} MiB is available",
        what,
        peak >> 20,
        available >> 20,
    )
    return False


@dataclass(frozen=True)
class DeviceFigures:
    """What the device has shown of its own speed (hailo_selfcheck.DeviceFacts keeps them)."""

    context_bytes: int | None = None  # a saved context's size (the whole KV cache)
    save_ms: float | None = None  # save_context and the file write
    load_ms: float | None = None  # the file read and load_context, of a whole context
    prefill_ms_per_token: float | None = None  # marginal: between a short and a long prefill

    @classmethod
    def from_facts(cls, facts: Mapping[str, Any]) -> DeviceFigures:
        def milliseconds(name: str) -> float | None:
            figures = facts.get(name)
            if not isinstance(figures, dict):
                return None
            return float(figures.get("device_ms", 0)) + float(figures.get("file_ms", 0))

        seen = (facts.get("save"), facts.get("load"))
        sizes = [figures.get("bytes") for figures in seen if isinstance(figures, dict)]
        size = next((size for size in sizes if isinstance(size, int)), None)
        return cls(
            context_bytes=int(size) if isinstance(size, int) else None,
            save_ms=milliseconds("save"),
            load_ms=milliseconds("load"),
            prefill_ms_per_token=prefill_rate(facts.get("prefill")),
        )

    @property
    def measured(self) -> bool:
        return self.load_ms is not None and self.prefill_ms_per_token is not None

    def prefill_ms(self, tokens: int) -> float | None:
        return None if self.prefill_ms_per_token is None else tokens * self.prefill_ms_per_token

    def load_wins(self, tokens: int) -> bool:
        """Whether loading a kept context beats prefilling the `tokens` it holds. Unmeasured: no."""
        prefill = self.prefill_ms(tokens)
        return self.load_ms is not None and prefill is not None and self.load_ms + MIN_GAIN_MS < prefill

    def summary(self) -> str:
        """The figures in words (the log and the doctor)."""
        if not self.measured:
            return "not measured yet: device contexts are not kept or loaded"
        assert self.load_ms is not None and self.prefill_ms_per_token is not None
        rate = self.prefill_ms_per_token
        rule = (
            f"a context is kept and loaded when it holds more than {(self.load_ms + MIN_GAIN_MS) / rate:,.0f} tokens"
            if rate > 0
            else "no context is kept or loaded (reading again is as quick)"
        )
        return (
            f"a whole context {self.context_bytes or 0:,} bytes, load {self.load_ms:,.0f} ms, "
            f"save {self.save_ms or 0:,.0f} ms; prefill {rate:.3f} ms a token: {rule}"
        )


def prefill_rate(samples: object) -> float | None:
    """The marginal ms a token between the shortest and the longest prefill seen, if they are
    far enough apart to tell (PREFILL_SPREAD_TOKENS)."""
    if not isinstance(samples, dict):
        return None
    short, long = samples.get("short"), samples.get("long")
    if not (isinstance(short, list) and isinstance(long, list) and len(short) == len(long) == 2):
        return None
    (short_tokens, short_ms), (long_tokens, long_ms) = short, long
    if long_tokens - short_tokens < PREFILL_SPREAD_TOKENS:
        return None
    return max(0.0, float(long_ms - short_ms) / float(long_tokens - short_tokens))


def with_prefill_sample(samples: object, tokens: int, milliseconds: float) -> dict[str, list[float]] | None:
    """The prefill samples with (tokens, ms) added, if it is shorter or longer than those kept;
    None when it adds nothing."""
    kept = samples if isinstance(samples, dict) else {}
    short, long = kept.get("short"), kept.get("long")
    updated = dict(kept)
    if not isinstance(short, list) or tokens < short[0] or (tokens == short[0] and milliseconds < short[1]):
        updated["short"] = [tokens, round(milliseconds, 1)]
    if not isinstance(long, list) or tokens > long[0] or (tokens == long[0] and milliseconds < long[1]):
        updated["long"] = [tokens, round(milliseconds, 1)]
    return updated if updated != kept else None
