"""Keystroke echo while the Hailo device context is saved, in the real REPL in a pseudo-terminal;
what `-p` costs; the time from Enter to the first token on a fresh context.

Plain script, not a test: `python benchmarks/bench_context_save.py [--turns 5] [--mb-per-save 112]
[--only echo,p,fresh,gil] [--code DIR]`.
The installed hailo-repl on the hailo_platform double, whose saved context is as large as a
Qwen2.5-1.5B KV cache (112 MiB by default) and whose save holds the GIL as HailoRT's bindings
do (30 ms a MB by default: an estimate for a Pi, see the double's docstring). It prints:
- the echo of a key typed the moment a reply has ended (what every turn paid when the context
  was saved after each turn: then the key waited for the whole save);
- the echo of a key typed just after /save (a save that is running: what a key pressed during
  an idle save waits);
- how long /quit takes (the chat's context and, on first use, the system prompt's are saved);
- `-p hi` three times in one home: each run's wall time, how long after its answer it exits,
  and the bytes left on disk;
- the time from Enter to the first token on a fresh context (a new chat in a second session,
  then after /clear): before this round a kept system-prompt context was loaded there;
- `gil`: the longest time the GIL was held between Enter and the first token on each fresh
  context (a new chat's first reply, after /clear, /retry, the reply after a Ctrl+C), against
  the issue's 50 ms; the double's wait for the first token (the device's own prefill) left out.
`--code DIR` runs another checkout's hailo_repl (e.g. a worktree of the previous main, for the
"before" figures) on the same double.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from terminal import Terminal, hailo_repl_command, with_fakes  # noqa: E402

QWEN = "Qwen2.5-1.5B-Instruct"


def echo_seconds(term: Terminal, key: str) -> float:
    started = time.perf_counter()
    term.send(key)
    term.expect(key)
    return time.perf_counter() - started


def make_home(temp: Path, args: argparse.Namespace, reply: list[str]) -> dict[str, str]:
    """A home with the Qwen HEF and the double's script; the environment to run hailo-repl in."""
    models = temp / "resources" / "models" / "hailo10h"
    models.mkdir(parents=True)
    (models / f"{QWEN}.hef").write_bytes(b"fake hef")
    script = temp / "script.json"
    script.write_text(
        json.dumps(
            {
                "replies": [reply],
                "delay_ms": 20,
                "context_bytes": int(args.mb_per_save * 1_000_000),
                "context_convert_ms_per_mb": args.ms_per_mb,
            }
        )
    )
    env = with_fakes(
        {
            "HAILO_RESOURCES_DIR": str(temp / "resources"),
            "XDG_DATA_HOME": str(temp / "data"),
            "XDG_STATE_HOME": str(temp / "state"),
            "XDG_CONFIG_HOME": str(temp / "config"),
            "HAILO_FAKE_SCRIPT": str(script),
        }
    )
    if args.code:  # another checkout's hailo_repl, after the double on the path
        env["PYTHONPATH"] += os.pathsep + str(Path(args.code).resolve())
    return env


def bytes_under(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def print_runs(args: argparse.Namespace) -> None:
    """`-p hi` three times in one home, as a script would run it."""
    with tempfile.TemporaryDirectory() as temp:
        env = make_home(Path(temp), args, ["Zebra", " reply."])
        walls, after_answer = [], []
        for _ in range(3):
            started = time.perf_counter()
            process = subprocess.Popen(
                [*hailo_repl_command(), "--hef-path", QWEN, "-p", "hi"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            assert process.stdout is not None
            answer = process.stdout.read(5)  # "Zebra": the answer is there
            answered = time.perf_counter()
            process.communicate()
            ended = time.perf_counter()
            assert answer == b"Zebra", answer
            walls.append(ended - started)
            after_answer.append(ended - answered)
        written = bytes_under(Path(temp) / "data")
    print(f"== -p hi, three runs in one home, context {args.mb_per_save:.0f} MB at {args.ms_per_mb:.0f} ms/MB ==")
    print(f"  wall time: {', '.join(f'{w:.2f} s' for w in walls)}")
    print(f"  from the answer to the exit: {', '.join(f'{a:.2f} s' for a in after_answer)}")
    print(f"  bytes left under the data folder: {written:,}")


def first_token_seconds(term: Terminal, text: str) -> float:
    started = time.perf_counter()
    term.send(text + "\r")
    term.expect("Zebra")
    seconds = time.perf_counter() - started
    term.expect("You: ")
    return seconds


def fresh_context(args: argparse.Namespace) -> None:
    """Enter to the first token on a fresh context: a new chat in a second session, and after /clear."""
    with tempfile.TemporaryDirectory() as temp:
        env = make_home(Path(temp), args, ["Zebra", " reply."])
        started = time.perf_counter()
        first = Terminal(["--hef-path", QWEN], env, timeout=600)
        first.expect("You: ", timeout=600)  # (a first load runs the self-check: seconds at this size)
        first_load = time.perf_counter() - started
        first_chat = first_token_seconds(first, "hello")
        first.send("/quit\r")
        first.wait_for_exit()
        started = time.perf_counter()
        second = Terminal(["--hef-path", QWEN], env, timeout=600)
        second.expect("You: ", timeout=600)
        second_load = time.perf_counter() - started
        new_chat = first_token_seconds(second, "hello again")
        second.send("/clear\r")
        second.expect("You: ")
        after_clear = first_token_seconds(second, "and again")
        second.send("/quit\r")
        second.wait_for_exit()
    print("== Enter to the first token on a fresh context ==")
    print(f"  start to prompt: first run {first_load:.1f} s (the self-check, once), next {second_load:.1f} s")
    print(f"  first chat ever: {first_chat * 1000:,.0f} ms")
    print(f"  a new chat in the next session: {new_chat * 1000:,.0f} ms; after /clear: {after_clear * 1000:,.0f} ms")


GIL_WATCH = Path(__file__).resolve().parent / "gil_watch"  # its sitecustomize.py: the ticker
GIL_GOAL_MS = 50.0


def read_watch(path: Path) -> dict[str, list[tuple[float, float]]]:
    """The ticker's file: "gap" (the GIL held by someone), "device" (the double's read(): the
    device's own prefill and tokens) and "abort" (a stopped reply's abort), each as (start, end)."""
    spans: dict[str, list[tuple[float, float]]] = {"gap": [], "device": [], "abort": []}
    for line in path.read_text().splitlines():
        kind, start, end = line.split()
        spans[kind].append((float(start), float(end)))
    return spans


def overlap(start: float, end: float, spans: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(end, s_end) - max(start, s_start)) for s_start, s_end in spans)


def gil_holds_ms(path: Path, enter: float, first_token: float) -> dict[str, float]:
    """The GIL holds that overlap [Enter, first token seen], in ms: the longest one and their sum,
    both without the double's read() (the device's prefill); the longest with it; and how much of
    the longest one a stopped reply's abort was."""
    spans = read_watch(path)
    holds = []
    for start, end in spans["gap"]:
        if end >= enter and start <= first_token:
            holds.append((end - start - overlap(start, end, spans["device"]), end - start, start, end))
    longest = max(holds, default=(0.0, 0.0, 0.0, 0.0))
    return {
        "longest": longest[0] * 1000,
        "longest_with_device": max((h[1] for h in holds), default=0.0) * 1000,
        "in_all": sum(h[0] for h in holds) * 1000,
        "of_it_abort": overlap(longest[2], longest[3], spans["abort"]) * 1000,
    }


def gil_on_fresh_contexts(args: argparse.Namespace) -> None:
    """The longest GIL hold from Enter to the first token on each fresh context, in the REPL of a
    second session (the first ran the self-check and kept what the code keeps)."""
    reply = ["Zebra"] + [" word"] * 40  # 0.8 s at 20 ms a token: time to press Ctrl+C in it
    with tempfile.TemporaryDirectory() as temp:
        env = make_home(Path(temp), args, reply)
        watch = Path(temp) / "gil.txt"
        env["PYTHONPATH"] = os.pathsep.join([str(GIL_WATCH), env["PYTHONPATH"]])
        env["GIL_WATCH_FILE"] = str(watch)
        first = Terminal(["--hef-path", QWEN], env, timeout=600)
        first.expect("You: ", timeout=600)
        first_token_seconds(first, "hello")
        first.send("/quit\r")
        first.wait_for_exit()
        term = Terminal(["--hef-path", QWEN], env, timeout=600)
        term.expect("You: ", timeout=600)
        holds = []

        def measure(what: str, text: str, interrupt: bool = False) -> None:
            enter = time.monotonic()
            term.send(text + "\r")
            term.expect("Zebra")
            first_token = time.monotonic()
            if interrupt:
                term.interrupt()
            term.expect("You: ")
            time.sleep(0.3)  # the ticker's last lines are written
            holds.append((what, gil_holds_ms(watch, enter, first_token), (first_token - enter) * 1000))

        measure("a new chat's first reply", "hello again")
        term.send("/clear\r")
        term.expect("You: ")
        measure("after /clear", "and again")
        measure("/retry", "/retry")
        term.send("tell me more\r")
        term.expect("Zebra")
        term.interrupt()
        term.expect("You: ")
        measure("the reply after a Ctrl+C", "go on")
        term.send("/quit\r")
        term.wait_for_exit()
        seen = max((end - start for start, end in read_watch(watch)["gap"]), default=0.0) * 1000
    print(f"== the GIL held between Enter and the first token, context {args.mb_per_save:.0f} MB ==")
    print(f"  (goal: at most {GIL_GOAL_MS:.0f} ms, the device's own prefill left out)")
    for what, hold, first_token_ms in holds:
        abort = f", of it the stopped reply's abort {hold['of_it_abort']:,.0f} ms" if hold["of_it_abort"] else ""
        print(
            f"  {what}: longest {hold['longest']:,.0f} ms ({hold['longest'] / GIL_GOAL_MS:.2f}x the goal{abort}); "
            f"in all {hold['in_all']:,.0f} ms; with the device's prefill {hold['longest_with_device']:,.0f} ms; "
            f"first token at {first_token_ms:,.0f} ms"
        )
    worst = max(hold["longest"] for _, hold, _ in holds)
    print(f"  worst: {worst:,.0f} ms, {worst / GIL_GOAL_MS:.2f}x the goal")
    print(f"  (the longest hold anywhere in the two sessions, the ticker's check: {seen:,.0f} ms)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--mb-per-save", type=float, default=117.44, help="the saved context's size, MB")
    parser.add_argument("--ms-per-mb", type=float, default=30.0, help="GIL held per MB saved or loaded")
    parser.add_argument("--only", default="echo,p,fresh,gil", help="which parts: echo, p, fresh, gil (comma-separated)")
    parser.add_argument("--code", help="run this checkout's hailo_repl instead of the installed one")
    args = parser.parse_args()
    parts = args.only.split(",")
    if "p" in parts:
        print_runs(args)
    if "fresh" in parts:
        fresh_context(args)
    if "gil" in parts:
        gil_on_fresh_contexts(args)
    if "echo" in parts:
        echo_while_saving(args)
    return 0


def echo_while_saving(args: argparse.Namespace) -> None:
    """Keystroke echo after each reply and during /save, then /quit."""
    with tempfile.TemporaryDirectory() as temp:
        env = make_home(Path(temp), args, ["A", " short", " reply."])
        term = Terminal(["--hef-path", QWEN], env, timeout=600)
        term.expect("You: ", timeout=600)
        between_turns = []
        for turn in range(args.turns):
            term.send(f"message {turn}\r")
            term.expect("reply.")
            term.expect("You: ")
            between_turns.append(echo_seconds(term, "x"))
            term.send("\x15")  # Ctrl+U: an empty line again
        term.send("/save\r")
        time.sleep(0.2)  # the save has begun
        during_save = echo_seconds(term, "y")
        term.send("\x15/quit\r")
        started = time.perf_counter()
        term.wait_for_exit()
        quitting = time.perf_counter() - started
    print(f"== keystroke echo, saved context {args.mb_per_save:.0f} MB at {args.ms_per_mb:.0f} ms/MB ==")
    print(
        f"  just after a reply ({args.turns} turns): median {statistics.median(between_turns) * 1000:.0f} ms, "
        f"max {max(between_turns) * 1000:.0f} ms"
    )
    print(f"  during a save (/save): {during_save * 1000:.0f} ms")
    print(f"  /quit to exit (what is worth keeping kept): {quitting:.1f} s")


if __name__ == "__main__":
    raise SystemExit(main())
