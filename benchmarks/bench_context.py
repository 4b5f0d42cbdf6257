"""Prompt tokens evaluated per turn once a chat fills its context: drop just enough vs hysteresis.

Plain script, not a test: `python benchmarks/bench_context.py [--turns 50] [--only hailo|llama]`.
Each backend runs the same chat twice through hailo_repl.chat.Chat: once with
`hailo_repl.context.DROP_TO_PERCENT = 100` (the policy before: drop just enough to fit,
so from the first drop on every turn drops again), once with the shipped value (drop
down to half the room the reply leaves). It prints, per policy, the prompt tokens the
backend had to evaluate (Chat.last_stats.prompt_tokens: the device's new tokens after a
kept context, the whole history after a reset; llama.cpp's tokens not in its KV cache),
how many turns dropped history, and for the double how many times the device context
was cleared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path

from loguru import logger

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "You are a helpful assistant. Be concise and clear in your responses."


def questions(turns: int) -> list[str]:
    topics = ["rivers", "mountains", "bread", "bridges", "clocks", "bees", "glass", "maps", "salt", "kites"]
    return [f"Tell me one short fact about {topics[i % len(topics)]} (question {i + 1})." for i in range(turns)]


def run_chat(backend, turns: int, max_tokens: int, drop_to: int, events=None) -> dict:
    from hailo_repl import context
    from hailo_repl.backends.base import GenerationParams
    from hailo_repl.chat import Chat

    context.DROP_TO_PERCENT = drop_to
    chat = Chat(backend, SYSTEM, GenerationParams(temperature=0.0, max_tokens=max_tokens))
    evaluated, drops = [], 0
    clears_before = events().count("clear_context") if events else 0
    for text in questions(turns):
        notices: list[str] = []
        for _ in chat.reply(text, threading.Event(), notices.append):
            pass
        evaluated.append(chat.last_stats.prompt_tokens if chat.last_stats else 0)
        drops += bool(notices)
    chat.clear()
    result = {
        "prompt_tokens_per_turn": evaluated,
        "total_prompt_tokens": sum(evaluated),
        "mean_last_half": statistics.mean(evaluated[len(evaluated) // 2 :]),
        "turns_that_dropped": drops,
    }
    if events:
        result["clear_context_calls"] = events().count("clear_context") - clears_before - 1  # minus chat.clear()
    return result


def report(name: str, before: dict, after: dict) -> None:
    print(f"== {name} ==")
    for label, row in (("before (drop just enough)", before), ("after (drop to half)", after)):
        clears = f", {row['clear_context_calls']} clear_context" if "clear_context_calls" in row else ""
        print(
            f"  {label:<26} {row['total_prompt_tokens']:>7} prompt tokens evaluated over "
            f"{len(row['prompt_tokens_per_turn'])} turns; mean {row['mean_last_half']:.0f}/turn in the second half; "
            f"{row['turns_that_dropped']} turns dropped history{clears}"
        )
    ratio = after["total_prompt_tokens"] / before["total_prompt_tokens"]
    print(f"  ratio after/before, total prompt tokens: {ratio:.2f}")
    for label, row in (("before", before), ("after", after)):
        print(f"  per turn {label:<6}: {' '.join(str(n) for n in row['prompt_tokens_per_turn'])}")


def bench_double(turns: int, capacity: int, max_tokens: int) -> tuple[dict, dict]:
    sys.path.insert(0, str(ROOT / "tests" / "fakes"))
    from hailo_repl.backends.hailo import HailoBackend

    with tempfile.TemporaryDirectory() as temp:
        reply = [f" word{i}" for i in range(40)]  # 40 tokens a reply, as the double counts them
        script = Path(temp) / "script.json"
        script.write_text(json.dumps({"replies": [reply], "context_capacity": capacity}))
        log = Path(temp) / "log.jsonl"
        os.environ.update(HAILO_FAKE_SCRIPT=str(script), HAILO_FAKE_LOG=str(log))
        hef = Path(temp) / "Qwen2.5-1.5B-Instruct.hef"
        hef.write_bytes(b"fake")

        def events() -> list[str]:
            return [json.loads(line)["event"] for line in log.read_text().splitlines()] if log.exists() else []

        backend = HailoBackend(hef)
        backend.load()
        try:
            before = run_chat(backend, turns, max_tokens, 100, events)
            after = run_chat(backend, turns, max_tokens, 50, events)
        finally:
            backend.release()
    return before, after


def bench_llama(turns: int, capacity: int, max_tokens: int) -> tuple[dict, dict]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_engine import bundled_gguf

    from hailo_repl.backends.llama import LlamaBackend

    backend = LlamaBackend(bundled_gguf(), context_size=capacity)
    backend.load()
    try:
        before = run_chat(backend, turns, max_tokens, 100)
        after = run_chat(backend, turns, max_tokens, 50)
    finally:
        backend.release()
    return before, after


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--only", choices=["hailo", "llama"])
    parser.add_argument("--capacity", type=int, default=1024, help="context size of both backends")
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    logger.remove()
    results = {}
    if args.only in (None, "hailo"):
        results["double"] = bench_double(args.turns, args.capacity, args.max_tokens)
        name = f"hailo backend on the double, context {args.capacity}, max-tokens {args.max_tokens}"
        report(name, *results["double"])
    if args.only in (None, "llama"):
        results["llama"] = bench_llama(args.turns, args.capacity, args.max_tokens)
        report(f"llama.cpp, SmolLM2-135M, n_ctx {args.capacity}, max-tokens {args.max_tokens}", *results["llama"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
