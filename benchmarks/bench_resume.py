"""Prompt tokens a resumed chat's first turn evaluates on the Hailo, with and without the saved device context.

Plain script, not a test: `python benchmarks/bench_resume.py [--turns 5 20 40]`. On the
hailo_platform double (tests/fakes), for chats of each length: one process chats and
ends (its device context saved beside the chat as it ends); a new process resumes it
(`Chat.resume`, as `-c`, `--resume` and `/resume` do) and sends one more message, once
loading the saved context and once without it (the `.ctx` file removed: the whole history
is read again, as before). It prints `Chat.last_stats.prompt_tokens` of that turn (what
`--verbose` shows as the prompt count), and the same for a new chat's first turn with and
without the system prompt's context kept per HEF.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

from loguru import logger

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "You are a helpful assistant. Be concise and clear in your responses."
REPLY = "A short fact, told in about twenty words, so that each turn adds a reply of realistic size."


def say(chat, text: str) -> int:
    for _ in chat.reply(text, threading.Event()):
        pass
    return chat.last_stats.prompt_tokens if chat.last_stats else 0


def open_backend(hef: Path, cache: Path | None):
    from hailo_repl.backends.hailo import HailoBackend

    # The device facts (the self-check's verdict, run on first use) live beside the HEF here.
    backend = HailoBackend(hef, context_cache=cache, facts_file=hef.with_name("hailo-device-facts.json"))
    backend.load()
    return backend


def resumed_turn(hef: Path, store, session_id: str) -> int:
    from hailo_repl.backends.base import GenerationParams
    from hailo_repl.chat import Chat

    chat = Chat(open_backend(hef, None), SYSTEM, GenerationParams(), store)
    chat.resume(session_id)
    try:
        return say(chat, "And what did I ask first?")
    finally:
        chat.backend.release()


def bench_resume(hef: Path, directory: Path, turns: int) -> tuple[int, int, int]:
    """(history tokens held, prompt tokens with the saved context, without it)."""
    from hailo_repl.backends.base import GenerationParams
    from hailo_repl.chat import Chat
    from hailo_repl.sessions import SessionStore

    store = SessionStore(directory / f"sessions-{turns}")
    chat = Chat(open_backend(hef, None), SYSTEM, GenerationParams(), store)
    for index in range(turns):
        say(chat, f"Tell me one short fact about topic number {index + 1}, please.")
    held = chat.backend.context_used
    chat.keep_device_context()  # as the process does when it ends
    chat.backend.release()
    with_context = resumed_turn(hef, store, chat.session_id)
    store.context_path(chat.session_id).unlink()
    without_context = resumed_turn(hef, store, chat.session_id)
    return held, with_context, without_context


def bench_new_chat(hef: Path, directory: Path) -> tuple[int, int, int]:
    """A new chat's first prompt tokens: no cache, the first use, later (the system prompt's context
    is kept and loaded only where that beats reading it: with a short one, never)."""
    from hailo_repl.backends.base import GenerationParams
    from hailo_repl.chat import Chat

    counts = []
    for cache in (None, directory / "contexts", directory / "contexts"):
        chat = Chat(open_backend(hef, cache), SYSTEM, GenerationParams())
        counts.append(say(chat, "Hello!"))
        chat.backend.release()
    return counts[0], counts[1], counts[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, nargs="+", default=[5, 20, 40])
    args = parser.parse_args()
    logger.remove()
    sys.path.insert(0, str(ROOT / "tests" / "fakes"))
    with tempfile.TemporaryDirectory() as temp:
        directory = Path(temp)
        hef = directory / "Qwen2.5-1.5B-Instruct.hef"
        hef.write_bytes(b"fake hef")
        script = directory / "script.json"
        pieces = [word + " " for word in REPLY.split()]  # streamed as words, spaces kept
        # The device reads a prompt at 0.5 ms a token (an estimate): the self-check measures it, and
        # a kept context pays from a few hundred tokens on (hailo_keeping.py).
        script.write_text(json.dumps({"replies": [pieces], "context_capacity": 32768, "prefill_ms_per_token": 0.5}))
        os.environ["HAILO_FAKE_SCRIPT"] = str(script)
        # Token counts do not depend on the context's size: keep the double's saves small and quick.
        os.environ.setdefault("HAILO_FAKE_CONTEXT_BYTES", str(64 * 1024))
        os.environ.setdefault("HAILO_FAKE_CONVERT_MS_PER_MB", "0")
        print("== a resumed chat's first turn: prompt tokens evaluated ==")
        for turns in args.turns:
            held, with_context, without_context = bench_resume(hef, directory, turns)
            print(
                f"  {turns:>3} turns ({held:>5} tokens held): with the saved context {with_context:>4}, "
                f"without {without_context:>5} (x{without_context / with_context:.0f})"
            )
        plain, first_use, later = bench_new_chat(hef, directory)
        print("== a new chat's first turn: prompt tokens evaluated ==")
        print(f"  without a cache {plain}; first use {first_use}; later {later} (kept where a load pays)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
