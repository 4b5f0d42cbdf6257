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

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hailo_repl.backends.base import Message
from hailo_repl.backends.chat_template import ChatTemplate
from hailo_repl.log import logger
from hailo_repl.private_files import FileTooLarge, read_text_limited, write_atomically

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


@dataclass
class Verdict:
    passed: bool
    detail: str  # the figures compared, for the log and the doctor
    ran: bool = True  # False: a device call failed (busy, timed out), the verdict is no verdict


def _prefill(llm: Any, prompt: str | list[Message]) -> None:
    with llm.generate(prompt=prompt, max_generated_tokens=0):
        pass


def run_self_check(llm: Any, template: ChatTemplate) -> Verdict:
    """Read SELF_CHECK_CHAT as two message lists, then as the two texts hailo-repl would send,
    each time from an empty context; the context is left cleared (the template state too)."""
    first, later = SELF_CHECK_CHAT[:2], SELF_CHECK_CHAT[2:]
    try:
        llm.clear_context()
        _prefill(llm, first)
        _prefill(llm, later)
        by_list = llm.get_context_usage_size()
        llm.clear_context()
        texts = [template.first(first), template.later(later)]
        for text in texts:
            _prefill(llm, text)
        by_text = llm.get_context_usage_size()
        tokenized = sum(len(llm.tokenize(text)) for text in texts)
    except Exception as error:
        return Verdict(False, f"the check failed to run ({error or type(error).__name__})", ran=False)
    finally:
        llm.clear_context()
    detail = f"context after the lists {by_list} tokens, after the texts {by_text}; texts tokenize to {tokenized}"
    return Verdict(by_list == by_text > 0, detail)


class DeviceFacts:
    """The facts file: per HEF and HailoRT version, the self-check's verdict and the last
    context save and load (bytes, seconds). None as the path: nothing is kept (--no-history)."""

    def __init__(self, path: Path | None):
        self.path = path

    def entries(self) -> dict[str, dict[str, Any]]:
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

    @staticmethod
    def key(hef: str, hailort: str) -> str:
        return f"{hef} | HailoRT {hailort}"

    def get(self, hef: str, hailort: str, name: str) -> dict[str, Any] | None:
        found = self.entries().get(self.key(hef, hailort), {}).get(name)
        return found if isinstance(found, dict) else None

    def remember(self, hef: str, hailort: str, name: str, value: dict[str, Any]) -> None:
        if self.path is None:
            return
        entries = self.entries()
        entry = entries.setdefault(self.key(hef, hailort), {})
        entry[name] = {**value, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            write_atomically(self.path, json.dumps(entries, indent=1, ensure_ascii=False))
        except OSError as error:
            logger.warning("could not keep {} in {}: {}", name, self.path, error)
