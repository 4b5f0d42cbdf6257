"""Remote-backend benchmarks: what hailo-repl costs on top of a server.

Run from the repository root (hailo-repl installed with the `llama` and `test` extras, so
llama-cpp-python's server and pexpect are there):

    python benchmarks/bench_remote.py                 # labelled report on stdout
    python benchmarks/bench_remote.py --json          # report on stderr, one JSON object on stdout

(a) Decode tok/s through `hailo-repl --backend openai -p PROMPT --verbose` (its "eval rate"
    line) against the same server read directly with httpx: llama-cpp-python's server on
    127.0.0.1 with the bundled SmolLM2-135M-Instruct, the same request (system prompt,
    prompt, temperature 0, max_tokens), both counting the pieces after the first over the
    time after the first. Runs alternate; medians and their ratio (1.0 = no overhead).
(b) Ctrl+C → prompt back in a real pseudo-terminal (benchmarks/bench_repl.py's driver), N
    times in one session: on `--backend openai` against that server, and on
    `--backend ollama` against tests/ollama_double.py streaming a token every 20 ms (the
    REPL's own cost, no model). p50 and p99 (nearest rank), and whether the server saw
    each disconnect.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_repl  # noqa: E402  (its pty driver and percentile helpers)
import llama_server  # noqa: E402
from ollama_double import OllamaDouble, ollama_reply  # noqa: E402

from hailo_repl.models import BUNDLED_MODEL_NAME  # noqa: E402
from hailo_repl.settings import DEFAULT_SYSTEM_PROMPT  # noqa: E402

PROMPT = "Write a long story about a dragon."
INTERRUPT_MESSAGE = "Write a very long story about a dragon."
REPORT = sys.stdout


def say(line: str = "") -> None:
    print(line, file=REPORT, flush=True)


# --------------------------------------------------------------------------- (a)


def through_hailo_repl(url: str, max_tokens: int, env: dict[str, str]) -> float:
    command = bench_repl.terminal.hailo_repl_command()
    command += ["--backend", "openai", "--url", url, "--model", BUNDLED_MODEL_NAME, "--temperature", "0"]
    command += ["--max-tokens", str(max_tokens), "--verbose", "-p", PROMPT]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)
    found = re.search(r"^eval rate:\s+([\d.]+) tokens/s", done.stderr, re.MULTILINE)  # not "prompt eval rate"
    if done.returncode != 0 or not found:
        raise SystemExit(f"hailo-repl failed ({done.returncode}): {done.stderr[-1000:]}")
    return float(found.group(1))


def direct(url: str, max_tokens: int) -> float:
    body = {
        "model": BUNDLED_MODEL_NAME,
        "messages": [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": PROMPT}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    first = last = 0.0
    pieces = 0
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            choices = json.loads(line[5:]).get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):
                last = time.perf_counter()
                first = first or last
                pieces += 1
    return (pieces - 1) / (last - first) if pieces > 1 and last > first else 0.0


def bench_decode(url: str, runs: int, max_tokens: int, env: dict[str, str]) -> dict:
    say(f"  {runs} runs per side, alternating; prompt {PROMPT!r}, temperature 0, max_tokens {max_tokens}")
    ours, theirs = [], []
    for run in range(runs):
        sides = [("hailo-repl", ours), ("httpx", theirs)]
        for name, rates in sides if run % 2 == 0 else reversed(sides):
            rates.append(through_hailo_repl(url, max_tokens, env) if name == "hailo-repl" else direct(url, max_tokens))
    ratio = statistics.median(ours) / statistics.median(theirs)
    say(f"    hailo-repl --backend openai  median {statistics.median(ours):6.1f} tok/s  runs {ours}")
    say(f"    httpx, same server directly  median {statistics.median(theirs):6.1f} tok/s  runs {theirs}")
    say(f"    ratio hailo-repl / direct    {ratio:.3f} (best runs {max(ours) / max(theirs):.3f}; goal >= 0.99)")
    return {"hailo_repl": ours, "direct": theirs, "ratio_of_medians": ratio, "ratio_of_best": max(ours) / max(theirs)}


# --------------------------------------------------------------------------- (b)


def bench_interrupts(args: list[str], env: dict[str, str], count: int, disconnects) -> dict:
    term = bench_repl.Terminal(args, env)
    to_prompt: list[float] = []
    seen: list[bool] = []
    try:
        term.wait_for("You: ", "the first prompt")
        term.wait_for(r"ctx ~?\d", "the model (toolbar gauge; ~ marks an estimate)", timeout=120)
        for number in range(count):
            before = disconnects()
            term.send_line(INTERRUPT_MESSAGE)
            term.wait_for(r"Assistant: \w+\W+\w+\W+\w+", f"reply {number} to stream")
            pressed = time.perf_counter()
            term.child.sendintr()
            term.wait_for(bench_repl.INTERRUPTED, "[interrupted]", timeout=30)
            term.wait_for("You: ", "the prompt after Ctrl+C", timeout=30)
            to_prompt.append(time.perf_counter() - pressed)
            # A fresh chat each time: at temperature 0 the same question over a long chat gets a
            # short answer at last, which ends before the Ctrl+C (as bench_repl's (a) does).
            term.send_line("/clear")
            term.wait_for(r"Conversation cleared", "/clear's answer")
            deadline = time.monotonic() + 30
            while disconnects() == before and time.monotonic() < deadline:
                time.sleep(0.01)
            seen.append(disconnects() > before)
        term.quit()
    finally:
        term.kill()
    summary = bench_repl.summary_ms(to_prompt)
    say(
        f"    Ctrl+C -> prompt  p50 {summary['p50_ms']:6.1f} ms  p99 {summary['p99_ms']:6.1f} ms  "
        f"max {summary['max_ms']:6.1f} ms  (n={summary['n']}); server saw the disconnect {sum(seen)}/{len(seen)}"
    )
    return {**summary, "disconnects_seen": sum(seen)}


def main() -> int:
    global REPORT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="results as one JSON object on stdout")
    parser.add_argument("--runs", type=int, default=5, help="decode runs per side (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=256, help="decode length (default: %(default)s)")
    parser.add_argument("--interrupts", type=int, default=50, help="Ctrl+C presses per backend (default: %(default)s)")
    parser.add_argument("--only", default="ab", help="which parts to run, 'a' or 'b' (default: ab)")
    args = parser.parse_args()
    if args.json:
        REPORT = sys.stderr
    results: dict = {"cpu_count": os.cpu_count(), "load_average": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-remote-") as tmp:
        setup = bench_repl.Setup(Path(tmp), delay_ms=20)
        env = setup.base_env()
        log = Path(tmp) / "server.log"
        server, url = llama_server.start(log)
        try:
            if "a" in args.only:
                say(f"== (a) decode through --backend openai vs httpx directly ({url}) ==")
                results["decode"] = bench_decode(url, args.runs, args.max_tokens, env)
            if "b" in args.only:
                say("== (b) Ctrl+C -> prompt on the remote backends ==")
                say(f"  openai: llama-cpp-python's server; {args.interrupts} interrupts in one session")
                openai_args = ["--backend", "openai", "--url", url, "--temperature", "0", "--max-tokens", "2000"]
                results["interrupts_openai"] = bench_interrupts(
                    [*openai_args, "--no-history"],
                    env,
                    args.interrupts,
                    lambda: log.read_text().count(llama_server.DISCONNECTED),
                )
        finally:
            llama_server.stop(server)
        if "b" in args.only:
            slow = [ollama_reply([f"word{i} " for i in range(3000)], delay=0.02) for _ in range(args.interrupts)]
            with OllamaDouble(slow) as double:
                say(f"  ollama: tests/ollama_double.py, a token every 20 ms; {args.interrupts} interrupts")
                ollama_args = ["--backend", "ollama", "--url", double.url, "--model", "qwen2:1.5b", "--no-history"]
                results["interrupts_ollama"] = bench_interrupts(
                    ollama_args, env, args.interrupts, lambda: double.disconnects
                )
        # The chats ran in an engine process (daemon: auto, the default): it ends with the runs.
        stop = [*bench_repl.terminal.hailo_repl_command(), "daemon", "stop"]
        subprocess.run(stop, env=env, stdout=subprocess.DEVNULL, check=False)
    say(f"  load average at the end: {os.getloadavg()} (2 shared cores: other developers' tests run too)")
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
