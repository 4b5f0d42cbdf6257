"""REPL benchmarks for hailo-repl in a real pseudo-terminal: Ctrl+C-to-prompt latency, launch time, output cost.

Run from the repository root (hailo-repl installed with the `llama` extra, pexpect installed):

    python benchmarks/bench_repl.py                    # labelled report on stdout
    python benchmarks/bench_repl.py --json             # report on stderr, one JSON object on stdout
    python benchmarks/bench_repl.py --interrupts 50    # Ctrl+C presses per backend (default 50)
    python benchmarks/bench_repl.py --only c --launch-runs 15 --ratio-rounds 3   # launch vs a bare prompt
    python benchmarks/bench_repl.py --only f            # the engine process on the double at real size

The parts drive the installed `hailo-repl` the way a user's terminal does: a pty
(pexpect) with TERM=xterm-256color, XDG_* dirs in a temporary directory, --no-history,
and cursor-position requests (ESC[6n) answered as a terminal answers them, so the
bottom toolbar is drawn. "hailo" is the hailo_platform double from tests/fakes (a
scripted reply, so its figures are the REPL's own cost, not a device's); "llama" is
the real llama.cpp backend with the bundled SmolLM2-135M-Instruct.

(a) Ctrl+C-to-prompt latency: in ONE session per backend, N times: send a message
    whose reply is long, wait until a few tokens have streamed, press Ctrl+C
    (pexpect sendintr: the tty's VINTR character, so SIGINT as from a keyboard) and
    time, with time.perf_counter, from the keypress until "[interrupted]" and until
    the prompt "You: " is drawn again. Checks after each press that the process is
    alive; for the double, that the device saw one abort per press; for both, the
    process's CPU use in the second after the prompt came back (a generation that
    kept running would show ~100% or more).
(b) Launch time, median of several spawns: launch to first prompt, launch to the
    toolbar leaving "loading model…" (the model loads in the background), and, in
    separate spawns that type "hi" at once, launch to the first reply text and to the
    reply's end; also /quit to process exit.
(c) Launch against a bare prompt_toolkit prompt, spawned in turn in the same run (the
    same Python, the same pty driver): `hailo-repl --backend llama --no-history` to the
    first "You:" on screen vs `PromptSession().prompt("You: ")`, and `hailo-repl
    --list-models -q` (what shell completion runs) to its exit vs `python -c pass`;
    medians and minimums per round and of all spawns, and their ratios (goal: launch
    within 1.1x). Only (c): `python benchmarks/bench_repl.py --only c`.
    Every part runs its children without PYTHONDONTWRITEBYTECODE: a user's Python
    caches compiled modules, and without that cache every launch would compile hailo_repl.
(d) The output path at 100 tok/s: one session on the double (10 ms a token), replies of
    400 one-word tokens in 100x30; per reply, from /proc: the process's CPU time and its
    write syscalls and bytes written (all threads; --no-history, no fake log), and the
    frames prompt_toolkit drew (each starts by hiding the cursor); per token and per reply,
    median of --replies. With --code, the same for another version (before/after).
(e) Decode speed through the live pane: one REPL session on llama.cpp (100x30, --verbose,
    temperature 0, the same system prompt and message as bench_engine (b)), /clear before
    each reply so the prompt is evaluated afresh; its "eval rate" against raw
    llama-cpp-python's on the same model and messages, in the same run, turns alternating
    (goal: >= 0.99x). `python benchmarks/bench_repl.py --only e --decode-runs 5`.
(f) The engine process (`--daemon always`) on the double with its real-sized device context
    (HAILO_FAKE_CONTEXT_BYTES unset: 112 MiB, conversion GIL-held) and a --load-ms HEF load
    (5 s), in a home of its own whose device facts say a chat's context is worth keeping from
    ~200 tokens (EngineHome); `--engine-steps` picks:
    launch: launch -> first prompt and -> the toolbar's gauge (model loaded), with five keys
      typed at the first prompt (their echo while the engine loads); --launch-runs spawns that
      start the engine, then as many on it warm;
    save: /save after a message of 300 words, a key every 20 ms from the save's first line until
      the context's file is written: each key's echo time (p50/p99/max); then /quit -> exit;
    p: `hailo-repl --backend hailo -p hi` three times in a row, `daemon` at its default (auto: the
      first starts the engine and loads, the others use it);
    attach: a long reply in the engine, its terminal's client SIGKILLed at word 20, then
      `hailo-repl -c` in a new pty: launch -> first frame and -> the reply's first line replayed,
      --attach-runs times (p50/p99). `python benchmarks/bench_repl.py --only f`.

Engine figures (model load, TTFT, decode tok/s, filter throughput) are measured by
benchmarks/bench_engine.py; this script does not run it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pexpect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import terminal  # noqa: E402  (the tests' pty driver)

HEF_NAME = "Qwen2.5-1.5B-Instruct"

PROMPT = "You: "
TOOLBAR_READY = r"ctx \d"  # the toolbar's context gauge, shown once the model has loaded
TOOLBAR_LOADING = r"loading model"
INTERRUPTED = r"\[interrupted\]"

HAILO_MESSAGE = "Tell me a very long story."
LLAMA_MESSAGE = "Write a very long story about a dragon."
LONG_REPLY = ["<text>"] + [f"word{i} " for i in range(1000)]  # 20 s at 20 ms a token
SHORT_REPLY = ["<text>", "Hello", "!", " How", " can", " I", " help", " you", " today", "?", "</text>"]

REPORT = sys.stdout  # where the labelled lines go; stderr under --json


def say(line: str = "") -> None:
    print(line, file=REPORT, flush=True)


class BenchError(RuntimeError):
    pass


ANYTHING_BUT_CPR = r"(?s)(?:(?!\x1b\[6n).)+"  # output up to a cursor-position request, which is answered


class Terminal(terminal.Terminal):
    """tests/terminal.py's pty driver (it answers cursor-position requests), plus report helpers."""

    def __init__(self, args: list[str], env: dict, rows: int = 40, cols: int = 120, timeout: float = 120):
        self.started = time.perf_counter()
        super().__init__(args, env, rows=rows, cols=cols, timeout=timeout)
        self.child.logfile_read = self.transcript  # no screen model: its CPU would be the benchmark's noise

    def wait_for(self, pattern: str, what: str, timeout: float | None = -1) -> None:
        index = self.expect(pattern, pexpect.EOF, pexpect.TIMEOUT, timeout=timeout)
        if index != 0:
            reason = "the process ended" if index == 1 else "timed out"
            raise BenchError(f"waiting for {what}: {reason}; last output: {self.tail()!r}")

    def settle(self, seconds: float = 0.3) -> None:
        """Read what comes for `seconds` and forget it (pexpect keeps what a TIMEOUT read, and a
        reply's last line comes twice: in the live rows, then committed), answering the
        cursor-position requests in it as a terminal does (prompt_toolkit waits a second at its
        exit for one left unanswered)."""
        deadline = time.perf_counter() + seconds
        while (left := deadline - time.perf_counter()) > 0:  # (what a TIMEOUT read stays in pexpect's search)
            patterns = [terminal.CPR_REQUEST, ANYTHING_BUT_CPR, pexpect.TIMEOUT, pexpect.EOF]
            index = self.child.expect(patterns, timeout=left)
            if index == 0:
                self.child.send(f"\x1b[{self.rows};1R")
            elif index == 3:
                raise BenchError(f"the program ended; last output: {self.tail()!r}")

    def tail(self, size: int = 400) -> str:
        text = self.child.before if isinstance(self.child.before, str) else ""
        return text[-size:]

    def send_line(self, text: str) -> None:
        self.child.send(text + "\r")

    def quit(self) -> tuple[float, int | None]:
        """/quit; returns (seconds until the process exited, exit status)."""
        started = time.perf_counter()
        self.send_line("/quit")
        index = self.expect(pexpect.EOF, pexpect.TIMEOUT, timeout=60)
        seconds = time.perf_counter() - started
        if index != 0:
            self.child.close(force=True)
            raise BenchError(f"/quit did not end the process within 60 s; last output: {self.tail()!r}")
        self.child.close()
        return seconds, self.child.exitstatus

    def kill(self) -> None:
        if self.child.isalive():
            self.child.close(force=True)

    def cpu_seconds(self, main_thread_only: bool = False) -> float:
        """utime + stime of the process (all its threads), or of its main thread (the loop's), from /proc."""
        pid = self.child.pid
        stat = Path(f"/proc/{pid}/task/{pid}/stat" if main_thread_only else f"/proc/{pid}/stat")
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def cpu_percent_over(self, seconds: float = 1.0) -> float:
        before = self.cpu_seconds()
        time.sleep(seconds)
        return (self.cpu_seconds() - before) / seconds * 100


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (with 50 samples, p99 is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summary_ms(seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "p50_ms": statistics.median(ms),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms),
        "min_ms": min(ms),
        "mean_ms": statistics.fmean(ms),
    }


# --------------------------------------------------------------------------- environment


class Setup:
    """Temporary XDG dirs, a resources dir with a fake HEF, and the double's scripts."""

    def __init__(self, root: Path, delay_ms: int, code: Path | None = None, chat_args: list[str] | None = None):
        self.root = root
        self.code = code
        self.chat_args = chat_args or []  # more arguments for hailo-repl in (a), (c) and (e), e.g. --daemon always
        self.xdg = {
            name: str(root / sub)
            for name, sub in (
                ("XDG_CONFIG_HOME", "config"),
                ("XDG_DATA_HOME", "data"),
                ("XDG_STATE_HOME", "state"),
                ("XDG_CACHE_HOME", "cache"),
            )
        }
        resources = root / "resources"
        (resources / "models" / "hailo10h").mkdir(parents=True)
        (resources / "models" / "hailo10h" / f"{HEF_NAME}.hef").write_bytes(b"fake hef")
        self.resources = resources
        self.long_script = root / "long.json"
        self.long_script.write_text(json.dumps({"replies": [LONG_REPLY], "delay_ms": delay_ms}))
        self.short_script = root / "short.json"
        self.short_script.write_text(json.dumps({"replies": [SHORT_REPLY], "delay_ms": delay_ms}))
        self.fake_log = root / "fake-hailo.jsonl"

    def base_env(self) -> dict:
        env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in (
                "PYTHONPATH",
                "HAILO_RESOURCES_DIR",
                "HAILO_FAKE_SCRIPT",
                "HAILO_FAKE_LOG",
                "NO_COLOR",
                "HAILO_REPL_NOHISTORY",
                "HAILO_REPL_DAEMON",  # each part says where the chat runs (--chat-args, or (f)'s own)
                # A user's Python caches compiled modules; without it every launch compiles hailo_repl
                # (~30 ms) while prompt_toolkit's were compiled by pip, and (c) would compare unlike starts.
                "PYTHONDONTWRITEBYTECODE",
            )
        }
        env.update(self.xdg)
        env["TERM"] = "xterm-256color"
        return env

    def hailo_env(self, script: Path) -> dict:
        env = terminal.with_fakes(self.base_env())
        if self.code:  # another checkout's hailo_repl, ahead of the installed one
            env["PYTHONPATH"] = os.pathsep.join([str(self.code), env["PYTHONPATH"]])
        env.update(
            {
                "HAILO_RESOURCES_DIR": str(self.resources),
                "HAILO_FAKE_SCRIPT": str(script),
                "HAILO_FAKE_LOG": str(self.fake_log),
            }
        )
        return env

    def llama_env(self) -> dict:
        return self.base_env()  # no hailo_platform importable: backend auto picks llama.cpp

    def fake_events(self) -> list[dict]:
        if not self.fake_log.exists():
            return []
        return [json.loads(line) for line in self.fake_log.read_text().splitlines()]


HAILO_ARGS = ["--backend", "hailo", "--hef-path", HEF_NAME, "--no-history"]
LLAMA_INTERRUPT_ARGS = ["--temperature", "0", "--max-tokens", "400", "--no-history"]
LLAMA_LAUNCH_ARGS = ["--temperature", "0", "--no-history"]


# --------------------------------------------------------------------------- (a)


# Keys typed after the prompt comes back, one every TYPING_GAP: letters found nowhere else
# on the screen then (not in the toolbar), so each echo is told apart.
TYPING_KEYS = "bdfgjmpqvy"
TYPING_GAP = 0.05


def typing_slowest_echo(term: Terminal) -> float | None:
    """Type TYPING_KEYS at once, a key every TYPING_GAP; the longest key-to-echo time (None: no echo)."""
    slowest = 0.0
    started = time.perf_counter()
    for index, key in enumerate(TYPING_KEYS):
        time.sleep(max(0.0, started + index * TYPING_GAP - time.perf_counter()))
        sent = time.perf_counter()
        term.child.send(key)
        if term.expect(key, pexpect.EOF, pexpect.TIMEOUT, timeout=30) != 0:
            return None
        slowest = max(slowest, time.perf_counter() - sent)
    return slowest


def bench_interrupts(backend: str, setup: Setup, count: int) -> dict:
    if backend == "hailo":
        args, env, message = HAILO_ARGS, setup.hailo_env(setup.long_script), HAILO_MESSAGE
        streamed: str | None = r"word4"  # five tokens have streamed (a live prompt may draw the space apart)
        started = r"Assistant: "
        aborts_before = sum(e["event"] == "abort" for e in setup.fake_events())
    else:
        args, env, message = LLAMA_INTERRUPT_ARGS, setup.llama_env(), LLAMA_MESSAGE
        # The first word shows with the second frame (the word-wrap holds a word until its end; frames are
        # 0.2 s apart: reply_channel), ~20 tokens in.
        started, streamed = r"Assistant: \w", None
        aborts_before = 0
    args = [*args, *setup.chat_args]
    say(f"  {backend}: hailo-repl {' '.join(args)}; message {message!r}; {count} interrupts in one session")
    term = Terminal(args, env)
    to_prompt: list[float] = []
    to_note: list[float] = []
    to_echo: list[float] = []
    not_alive = 0
    problems: list[str] = []
    cpu: dict = {}
    exit_status = None
    quit_seconds = None
    try:
        term.wait_for(PROMPT, "the first prompt")
        term.wait_for(TOOLBAR_READY, "the model to load (toolbar gauge)", timeout=300)
        cpu["idle_prompt_percent"] = term.cpu_percent_over(1.0)
        for number in range(1, count + 1):
            if backend == "llama":  # else the model copies its earlier cut-off answers, and ends where they did
                term.send_line("/clear")
                term.wait_for(r"Conversation cleared", "/clear's answer")
            term.send_line(message)
            term.wait_for(started, f"reply {number} to start")
            if streamed:
                term.wait_for(streamed, f"reply {number} to stream a few tokens")
            pressed = time.perf_counter()
            term.child.sendintr()
            # (No prompt pattern here: a live prompt is on screen while the reply streams.)
            index = term.expect(INTERRUPTED, pexpect.EOF, pexpect.TIMEOUT, timeout=30)
            noted = time.perf_counter()
            if index != 0:
                what = ["", "the process ended", "no [interrupted] within 30 s"][index]
                problems.append(f"interrupt {number}: {what}; last output: {term.tail()!r}")
                break
            index = term.expect(PROMPT, pexpect.EOF, pexpect.TIMEOUT, timeout=30)
            prompted = time.perf_counter()
            if index != 0:
                problems.append(
                    f"interrupt {number}: no prompt after [interrupted] "
                    f"({'process ended' if index == 1 else 'timeout'}); last output: {term.tail()!r}"
                )
                break
            to_note.append(noted - pressed)
            to_prompt.append(prompted - pressed)
            # Typing on at once: an echo waits for whatever holds the GIL then (on the Hailo, the abort).
            slowest = typing_slowest_echo(term)
            if slowest is None:
                problems.append(f"interrupt {number}: a key typed at the prompt was not echoed; {term.tail()!r}")
                break
            to_echo.append(slowest)
            term.child.send("\x15")  # Ctrl+U: the line is empty again for the next message
            if not term.child.isalive():
                not_alive += 1
                problems.append(f"interrupt {number}: the process is not alive after the prompt came back")
                break
            if number == 1:
                cpu["after_first_interrupt_percent"] = term.cpu_percent_over(1.0)
            elif number == count:
                cpu["after_last_interrupt_percent"] = term.cpu_percent_over(1.0)
        if not problems:
            quit_seconds, exit_status = term.quit()
    except BenchError as error:
        problems.append(str(error))
    finally:
        term.kill()
    result = {
        "backend": backend,
        "args": args,
        "message": message,
        "interrupts_requested": count,
        "interrupts_done": len(to_prompt),
        "to_prompt": summary_ms(to_prompt),
        "to_interrupted_note": summary_ms(to_note),
        "typing_slowest_echo": summary_ms(to_echo),
        "to_prompt_ms_all": [round(s * 1000, 2) for s in to_prompt],
        "alive_after_each": not_alive == 0 and len(to_prompt) == count,
        "cpu": cpu,
        "quit_seconds": quit_seconds,
        "exit_status": exit_status,
        "problems": problems,
        "over_100ms": sum(s > 0.1 for s in to_prompt),
    }
    if backend == "hailo":
        aborts = sum(e["event"] == "abort" for e in setup.fake_events()) - aborts_before
        result["device_aborts"] = aborts
    p, n = result["to_prompt"], result["to_interrupted_note"]
    if p["n"]:
        say(
            f"    Ctrl+C -> prompt 'You: '   p50 {p['p50_ms']:7.1f} ms   p99 {p['p99_ms']:7.1f} ms   "
            f"max {p['max_ms']:7.1f} ms   (min {p['min_ms']:.1f}, mean {p['mean_ms']:.1f}; n={p['n']})"
        )
        say(
            f"    Ctrl+C -> '[interrupted]'  p50 {n['p50_ms']:7.1f} ms   p99 {n['p99_ms']:7.1f} ms   "
            f"max {n['max_ms']:7.1f} ms"
        )
        e = result["typing_slowest_echo"]
        if e["n"]:
            say(
                f"    typing on at once: slowest echo   p50 {e['p50_ms']:7.1f} ms   "
                f"p99 {e['p99_ms']:7.1f} ms   max {e['max_ms']:7.1f} ms"
            )
    alive = "yes" if result["alive_after_each"] else "NO"
    extra = f"; device aborts {result['device_aborts']}/{len(to_prompt)}" if backend == "hailo" else ""
    say(f"    alive after every interrupt: {alive}; interrupts over 100 ms: {result['over_100ms']}{extra}")
    if cpu:
        say(
            "    process CPU in the 1 s after: "
            + ", ".join(
                f"{label.replace('_percent', '').replace('_', ' ')} {value:.0f}%" for label, value in cpu.items()
            )
        )
    if exit_status is not None:
        say(f"    /quit -> exit {quit_seconds * 1000:.0f} ms, exit status {exit_status}")
    for problem in problems:
        say(f"    PROBLEM: {problem}")
    return result


# --------------------------------------------------------------------------- (b)


def launch_to_ready(args: list[str], env: dict) -> dict:
    term = Terminal(args, env)
    try:
        term.wait_for(PROMPT, "the first prompt", timeout=300)
        prompt = time.perf_counter() - term.started
        index = term.expect(TOOLBAR_LOADING, TOOLBAR_READY, pexpect.EOF, pexpect.TIMEOUT, timeout=300)
        if index == 0:
            term.wait_for(TOOLBAR_READY, "the toolbar to leave 'loading model'", timeout=300)
        elif index != 1:
            raise BenchError(f"no toolbar gauge; last output: {term.tail()!r}")
        ready = time.perf_counter() - term.started
        quit_seconds, status = term.quit()
    finally:
        term.kill()
    return {
        "prompt_s": prompt,
        "ready_s": ready,
        "showed_loading": index == 0,
        "quit_s": quit_seconds,
        "exit_status": status,
    }


def launch_to_reply(args: list[str], env: dict) -> dict:
    term = Terminal(args, env)
    try:
        term.wait_for(PROMPT, "the first prompt", timeout=300)
        prompt = time.perf_counter() - term.started
        term.send_line("hi")  # typed at once, before the model may be ready
        term.wait_for(r"Assistant: ", "the first reply", timeout=300)
        first = time.perf_counter() - term.started
        term.wait_for(PROMPT, "the prompt after the first reply", timeout=300)
        done = time.perf_counter() - term.started
        quit_seconds, status = term.quit()
    finally:
        term.kill()
    return {
        "prompt_s": prompt,
        "first_reply_text_s": first,
        "first_reply_done_s": done,
        "quit_s": quit_seconds,
        "exit_status": status,
    }


def bench_launch(backend: str, setup: Setup, runs: int) -> dict:
    if backend == "hailo":
        args, env = HAILO_ARGS, setup.hailo_env(setup.short_script)
    else:
        args, env = LLAMA_LAUNCH_ARGS, setup.llama_env()
    say(
        f"  {backend}: hailo-repl {' '.join(args)}; {runs} spawns for the prompt/toolbar, {runs} that type 'hi' at once"
    )
    ready_runs, reply_runs, problems = [], [], []
    for _ in range(runs):
        for kind in ("ready", "reply"):
            try:
                if kind == "ready":
                    ready_runs.append(launch_to_ready(args, env))
                else:
                    reply_runs.append(launch_to_reply(args, env))
            except BenchError as error:
                problems.append(f"{kind}: {error}")

    def med(rows, key):
        values = [row[key] for row in rows if row.get(key) is not None]
        return statistics.median(values) * 1000 if values else None

    result = {
        "backend": backend,
        "args": args,
        "runs": runs,
        "launch_to_prompt_ms_median": med(ready_runs + reply_runs, "prompt_s"),
        "launch_to_model_ready_ms_median": med(ready_runs, "ready_s"),
        "launch_to_first_reply_text_ms_median": med(reply_runs, "first_reply_text_s"),
        "launch_to_first_reply_done_ms_median": med(reply_runs, "first_reply_done_s"),
        "quit_to_exit_ms_median": med(ready_runs + reply_runs, "quit_s"),
        "toolbar_showed_loading": sum(row["showed_loading"] for row in ready_runs),
        "exit_statuses": sorted({row["exit_status"] for row in ready_runs + reply_runs}, key=str),
        "ready_runs": ready_runs,
        "reply_runs": reply_runs,
        "problems": problems,
    }

    def fmt(value):
        return f"{value:7.0f} ms" if value is not None else "    n/a"

    def each(rows, key):
        return ", ".join(f"{row[key] * 1000:.0f}" for row in rows)

    n_prompt = len(ready_runs) + len(reply_runs)
    say(
        f"    launch -> first prompt 'You: '          {fmt(result['launch_to_prompt_ms_median'])}  "
        f"(median of {n_prompt}: {each(ready_runs + reply_runs, 'prompt_s')})"
    )
    say(
        f"    launch -> toolbar ready (model loaded)  {fmt(result['launch_to_model_ready_ms_median'])}  "
        f"(median of {len(ready_runs)}: {each(ready_runs, 'ready_s')}; "
        f"'loading model' shown first in {result['toolbar_showed_loading']}/{len(ready_runs)})"
    )
    say(
        f"    launch -> first reply text to 'hi'      {fmt(result['launch_to_first_reply_text_ms_median'])}  "
        f"(median of {len(reply_runs)}: {each(reply_runs, 'first_reply_text_s')})"
    )
    say(
        f"    launch -> first reply complete          {fmt(result['launch_to_first_reply_done_ms_median'])}  "
        f"(median of {len(reply_runs)}: {each(reply_runs, 'first_reply_done_s')})"
    )
    say(
        f"    /quit -> process exit                   {fmt(result['quit_to_exit_ms_median'])}  "
        f"(exit statuses {result['exit_statuses']})"
    )
    for problem in problems:
        say(f"    PROBLEM: {problem}")
    return result


# --------------------------------------------------------------------------- (c)

BARE_PROMPT = "from prompt_toolkit import PromptSession; PromptSession().prompt('You: ')"
FIRST_FRAME = "You:"  # a bare prompt moves the cursor over the trailing space instead of writing it


def time_to_prompt(command: list[str], env: dict) -> float:
    """Seconds from spawn to "You:" on the screen; the process is then killed and reaped."""
    started = time.perf_counter()
    child = pexpect.spawn(command[0], command[1:], env=env, encoding="utf-8", dimensions=(40, 120), timeout=60)
    child.delaybeforesend = None
    try:
        while True:  # answer cursor-position requests as a terminal does (terminal.py)
            index = child.expect([terminal.CPR_REQUEST, FIRST_FRAME, pexpect.EOF, pexpect.TIMEOUT])
            if index == 0:
                child.send("\x1b[40;1R")
                continue
            if index != 1:
                raise BenchError(f"no prompt from {command[-1]!r}; last output: {child.before!r}")
            return time.perf_counter() - started
    finally:
        child.kill(9)  # at once, so no exit work overlaps the next spawn
        child.close(force=True)


def time_to_exit(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def bench_launch_ratio(setup: Setup, runs: int, rounds: int, engine_first: bool = False) -> dict:
    """Launch to the first prompt, hailo-repl --backend llama vs a bare prompt_toolkit prompt, spawned in
    turn in the same run; and `--list-models -q` (shell completion) vs a bare interpreter."""
    env = {**setup.llama_env(), "TERM": "xterm-256color"}
    if setup.code:  # another checkout's hailo_repl, ahead of the installed one
        env["PYTHONPATH"] = str(setup.code)
    sides = {
        "hailo-repl": terminal.hailo_repl_command() + ["--backend", "llama", "--no-history", *setup.chat_args],
        "bare PromptSession": [sys.executable, "-c", BARE_PROMPT],
        "hailo-repl --list-models -q": terminal.hailo_repl_command() + ["--list-models", "-q"],
        "bare python -c pass": [sys.executable, "-c", "pass"],
    }
    say(f"  {rounds} rounds of {runs} spawns per side, in turn; median (and min) per round, then of all spawns")
    for name, command in sides.items():
        say(f"    {name}: {' '.join(command)}")
    time_to_prompt(sides["hailo-repl"], env)  # a first run to warm the file cache (and write the .pyc files)
    if engine_first:  # the launch with the engine process already running (a -p through it starts it)
        subprocess.run(
            [*sides["hailo-repl"], "-p", "hi"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True
        )
    result: dict = {"runs": runs, "rounds": []}
    pooled: dict[str, list[float]] = {name: [] for name in sides}

    def ratios(times: dict[str, list[float]], pick) -> tuple[float, float]:
        launch = pick(times["hailo-repl"]) / pick(times["bare PromptSession"])
        listing = pick(times["hailo-repl --list-models -q"]) / pick(times["bare python -c pass"])
        return launch, listing

    def report(label: str, times: dict[str, list[float]], show_each: bool) -> dict:
        (launch, listing), (launch_min, listing_min) = ratios(times, statistics.median), ratios(times, min)
        say(f"  {label}:")
        for name, values in times.items():
            each = f"  ({', '.join(f'{v * 1000:.0f}' for v in values)})" if show_each else ""
            median, least = statistics.median(values) * 1000, min(values) * 1000
            say(f"    {name:<28} median {median:6.0f} ms, min {least:4.0f}{each}")
        # Each hailo-repl spawn ran just before its bare one: the median of those pairs' ratios is
        # the least moved by the machine's load drifting over the run.
        paired = statistics.median(
            hr / bare for hr, bare in zip(times["hailo-repl"], times["bare PromptSession"], strict=True)
        )
        say(
            f"    launch -> prompt, hailo-repl / bare PromptSession: {launch:.2f}x (minimums {launch_min:.2f}x, "
            f"median of pairs {paired:.2f}x)"
        )
        say(f"    --list-models -q / bare interpreter:               {listing:.2f}x (minimums {listing_min:.2f}x)")
        return {
            "median_ms": {name: statistics.median(values) * 1000 for name, values in times.items()},
            "all_ms": {name: [round(v * 1000, 1) for v in values] for name, values in times.items()},
            "launch_ratio": launch,
            "launch_ratio_of_minimums": launch_min,
            "launch_ratio_median_of_pairs": paired,
            "list_models_ratio": listing,
            "list_models_ratio_of_minimums": listing_min,
        }

    for number in range(1, rounds + 1):
        times: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(runs):
            for name in ("hailo-repl", "bare PromptSession"):
                times[name].append(time_to_prompt(sides[name], env))
            for name in ("hailo-repl --list-models -q", "bare python -c pass"):
                times[name].append(time_to_exit(sides[name], env))
        for name, values in times.items():
            pooled[name] += values
        result["rounds"].append(report(f"round {number}", times, show_each=True))
    result["all"] = report(f"all {rounds * runs} spawns per side", pooled, show_each=False)
    return result


# --------------------------------------------------------------------------- (d)

RENDER = "\x1b[?25l"  # prompt_toolkit hides the cursor at the start of every frame it draws
OUTPUT_TOKENS = 400


def process_io(pid: int) -> tuple[int, int]:
    """(write syscalls, bytes written) of the process so far, all threads, from /proc."""
    fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["syscw"]), int(fields["wchar"])


def bench_output(setup: Setup, delay_ms: int, replies: int) -> dict:
    """One session, `replies` replies of OUTPUT_TOKENS tokens (a word each, a new paragraph every
    60): what the terminal receives and the process spends per token while a reply streams."""
    tokens = ["<text>"] + [f"word{i}" + ("\n\n" if i % 60 == 59 else " ") for i in range(OUTPUT_TOKENS)]
    script = setup.root / f"output-{delay_ms}.json"
    script.write_text(json.dumps({"replies": [tokens] * replies, "delay_ms": delay_ms}))
    env = setup.hailo_env(script)
    env.pop("HAILO_FAKE_LOG")  # its writes are not the terminal's
    term = Terminal(HAILO_ARGS, env, rows=30, cols=100)
    rows = []
    try:
        term.wait_for(TOOLBAR_READY, "the model to load (toolbar gauge)", timeout=300)
        for number in range(replies):
            term.settle()
            before_cpu, (before_writes, before_bytes) = term.cpu_seconds(), process_io(term.child.pid)
            start = len(term.transcript.getvalue())
            started = time.perf_counter()
            term.send_line(HAILO_MESSAGE)
            term.wait_for(f"word{OUTPUT_TOKENS - 1}", f"reply {number + 1} to end", timeout=120)
            term.settle()
            seconds = time.perf_counter() - started - 0.3
            after_writes, after_bytes = process_io(term.child.pid)
            writes, written = after_writes - before_writes, after_bytes - before_bytes
            received = term.transcript.getvalue()[start:]
            rows.append(
                {
                    "cpu_s": term.cpu_seconds() - before_cpu,
                    "seconds": seconds,
                    "writes": writes,
                    "bytes": written,
                    "renders": received.count(RENDER),
                }
            )
        term.quit()
    finally:
        term.kill()
    n = OUTPUT_TOKENS
    result = {
        "tokens_per_reply": n,
        "delay_ms": delay_ms,
        "replies": rows,
        "renders_per_reply": statistics.median(r["renders"] for r in rows),
        "bytes_per_token": statistics.median(r["bytes"] / n for r in rows),
        "writes_per_token": statistics.median(r["writes"] / n for r in rows),
        "cpu_s_per_reply": statistics.median(r["cpu_s"] for r in rows),
        "reply_s": statistics.median(r["seconds"] for r in rows),
    }
    say(
        f"    {n} tokens at {1000 // max(delay_ms, 1)} tok/s, median of {len(rows)} replies: "
        f"{result['renders_per_reply']:.0f} renders, {result['bytes_per_token']:.1f} bytes and "
        f"{result['writes_per_token']:.2f} writes per token, CPU {result['cpu_s_per_reply']:.2f} s per reply "
        f"({result['reply_s']:.1f} s)"
    )
    return result


# --------------------------------------------------------------------------- (e)


def bench_decode_through_pane(setup: Setup, runs: int, max_tokens: int) -> dict:
    """The REPL's decode rate while the pane draws the reply (its own --verbose "eval rate", the
    same figure `-p --verbose` gives) against raw llama-cpp-python, in pairs run one after the
    other (alternating which goes first); and the CPU the REPL's loop thread (the drawing) used
    in each reply: on two cores llama.cpp's threads fill, it is taken from decoding."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_engine import E2E_PROMPT, SYSTEM_PROMPT, bundled_gguf, run_raw
    from llama_cpp import Llama

    args = ["--backend", "llama", "--verbose", "--temperature", "0", "--max-tokens", str(max_tokens)]
    args += ["--system-prompt", SYSTEM_PROMPT, "--no-history", *setup.chat_args]
    env = setup.llama_env()
    if setup.code:  # another checkout's hailo_repl, ahead of the installed one
        env["PYTHONPATH"] = str(setup.code)
    term = Terminal(args, env, rows=30, cols=100)
    llm = Llama(model_path=str(bundled_gguf()), n_ctx=4096, n_threads=os.cpu_count(), verbose=False)
    run_raw(llm, "Say hi.", 8)  # the first decode after loading allocates buffers
    repl_rates: list[float] = []
    raw_rates: list[float] = []
    counts: list[int] = []  # tokens in each REPL reply (the raw ones are the same text at temperature 0)
    loop_cpu: list[float] = []  # seconds of CPU of the REPL's loop thread per reply
    reply_seconds: list[float] = []
    try:
        term.wait_for(TOOLBAR_READY, "the model to load (toolbar gauge)", timeout=300)
        term.send_line("Say hi.")  # the REPL's warm-up, as the raw one's
        term.wait_for(r"eval rate:\s+\S+", "the warm-up reply's timing block", timeout=300)
        for index in range(runs):
            for which in ("repl", "raw") if index % 2 == 0 else ("raw", "repl"):
                if which == "raw":
                    raw_rates.append(run_raw(llm, E2E_PROMPT, max_tokens)["decode_tok_s"])
                    continue
                term.send_line("/clear")
                term.wait_for(r"Conversation cleared", "/clear's answer", timeout=60)
                term.settle()
                cpu_before, started = term.cpu_seconds(main_thread_only=True), time.perf_counter()
                term.send_line(E2E_PROMPT)
                term.wait_for(
                    r"(?<!prompt )eval count:\s+(\d+).*?(?<!prompt )eval rate:\s+([\d.]+) tokens/s",
                    "the timing block",
                    timeout=300,
                )
                loop_cpu.append(term.cpu_seconds(main_thread_only=True) - cpu_before)
                reply_seconds.append(time.perf_counter() - started)
                counts.append(int(term.child.match.group(1)))
                repl_rates.append(float(term.child.match.group(2)))
            say(
                f"    run {index + 1}: hailo-repl {repl_rates[-1]:7.2f} tok/s ({counts[-1]} tokens, loop thread "
                f"{loop_cpu[-1]:.2f} s CPU in {reply_seconds[-1]:.2f} s), raw {raw_rates[-1]:7.2f} tok/s: "
                f"{repl_rates[-1] / raw_rates[-1]:.3f}"
            )
        term.quit()
    finally:
        term.kill()
        llm.close()
    repl, raw = statistics.median(repl_rates), statistics.median(raw_rates)
    pair_ratios = [a / b for a, b in zip(repl_rates, raw_rates, strict=True) if b]
    loop_share = statistics.median(c / s for c, s in zip(loop_cpu, reply_seconds, strict=True))
    result = {
        "runs": runs,
        "max_tokens": max_tokens,
        "hailo_repl_tok_s": repl_rates,
        "raw_tok_s": raw_rates,
        "hailo_repl_median": repl,
        "raw_median": raw,
        "ratio": repl / raw if raw else float("nan"),
        "pair_ratio_median": statistics.median(pair_ratios),
        "ratio_best": max(repl_rates) / max(raw_rates) if raw_rates else float("nan"),
        "loop_thread_cpu_s": loop_cpu,
        "loop_thread_share_median": loop_share,
    }
    say(
        f"    median of {runs}: hailo-repl {repl:.2f} tok/s, raw llama-cpp-python {raw:.2f} tok/s: "
        f"ratio {result['ratio']:.3f}; median of the pairs' ratios {result['pair_ratio_median']:.3f} "
        f"(best runs {result['ratio_best']:.3f})"
    )
    say(
        f"    the REPL's loop thread: median {statistics.median(loop_cpu):.3f} s CPU per reply, "
        f"{loop_share * 100:.1f}% of the reply's time (send to timing block)"
    )
    return result


# --------------------------------------------------------------------------- (f)

ENGINE_ARGS = ["--backend", "hailo", "--hef-path", HEF_NAME, "--daemon", "always"]
# Typed one at a time into the prompt, each replacing the last (Backspace, then the key): found
# nowhere else on the screen, and a redraw of the line can show only the key just typed.
ECHO_KEYS = "ÆØÞÐŁŒЖЯΩΣ"
KEY_EVERY = 0.02  # a key every 20 ms: a fast typist
LONG_MESSAGE = " ".join(f"detail{i}" for i in range(300))  # a chat this long is worth keeping (EngineHome)


class EngineHome:
    """(f)'s home: XDG dirs of its own, the double with a HEF load of `load_ms` and its real-sized
    device context (HAILO_FAKE_CONTEXT_BYTES unset: 112 MiB, GIL-held conversion), and the
    device's figures by which keeping a context pays (as a device that showed them); the engine
    process it starts is stopped by the pid in its lock file."""

    def __init__(self, root: Path, delay_ms: int, load_ms: int, code: Path | None):
        self.setup = Setup(root, delay_ms, code)
        self.delay_ms = delay_ms
        # The device prefills at 1 ms a token, as the figures below say it does (each reply adds its
        # prefill to them).
        double = {"delay_ms": delay_ms, "load_ms": load_ms, "prefill_ms_per_token": 1.0}
        self.script = root / "engine.json"
        self.script.write_text(json.dumps({"replies": [SHORT_REPLY], **double}))
        self.long_script = root / "engine-long.json"
        self.long_script.write_text(json.dumps({"replies": [LONG_REPLY], **double}))
        self.state = Path(self.setup.xdg["XDG_STATE_HOME"]) / "hailo-repl"
        self.sessions = Path(self.setup.xdg["XDG_DATA_HOME"]) / "hailo-repl" / "sessions"
        self.remember_device()

    def remember_device(self) -> None:
        """The facts a device would have shown (its self-check passed; a context loads in 100 ms, a
        prompt prefills at 1 ms a token): a chat's context is kept from about 200 tokens on, the
        system prompt's never, and the first start runs no self-check (with the double's 112 MiB
        context, two whole saves and a load, GIL held: bench_context_save.py measures it)."""
        facts = Path(self.setup.xdg["XDG_DATA_HOME"]) / "hailo-repl" / "contexts" / "hailo-device-facts.json"
        hef = self.setup.resources / "models" / "hailo10h" / f"{HEF_NAME}.hef"
        remember = """
import sys
from pathlib import Path
from hailo_repl.backends.hailo_device import installed_hailort_version
from hailo_repl.backends.hailo_selfcheck import DeviceFacts, device_key
facts = DeviceFacts(Path(sys.argv[2]))
facts.remember_all(
    device_key(Path(sys.argv[1]), installed_hailort_version()),
    {
        "text_path": {"passed": True, "detail": "as a device showed"},
        "load": {"bytes": 117_440_512, "device_ms": 100, "file_ms": 0},
        "prefill": {"short": [45, 45], "long": [1045, 1045]},
    },
)
"""
        subprocess.run([sys.executable, "-c", remember, str(hef), str(facts)], env=self.env(), check=True)

    def env(self, long: bool = False) -> dict:
        env = self.setup.hailo_env(self.long_script if long else self.script)
        for name in ("HAILO_FAKE_CONTEXT_BYTES", "HAILO_FAKE_CONVERT_MS_PER_MB"):  # the double's real-sized defaults
            env.pop(name, None)
        return env

    def engine_pid(self) -> int | None:
        try:
            pid = json.loads((self.state / "engine.lock").read_text())["pid"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return pid if isinstance(pid, int) and Path(f"/proc/{pid}").exists() else None

    def stop_engine(self) -> None:
        """`hailo-repl daemon stop`, then SIGKILL by the lock's pid if the engine is still there."""
        pid = self.engine_pid()
        if pid is None:
            return
        subprocess.run(
            [*terminal.hailo_repl_command(), "daemon", "stop"],
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
            check=False,
        )
        deadline = time.monotonic() + 60
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, 9)

    def device_opens(self) -> int:
        return sum(e["event"] == "vdevice_open" for e in self.setup.fake_events())

    def kept_contexts(self) -> list[Path]:
        return list(self.sessions.glob("*.ctx")) if self.sessions.exists() else []


def engine_launch(home: EngineHome) -> dict:
    """One launch: to the first prompt, keys typed at once (their echo while the engine loads), to
    the toolbar's gauge (the model loaded in the engine process)."""
    term = Terminal(ENGINE_ARGS, home.env())
    ready: float | None = None

    def until(pattern: str, what: str) -> None:
        """wait_for(pattern), noting when the toolbar's gauge first shows on the way."""
        nonlocal ready
        while True:
            index = term.expect(pattern, TOOLBAR_READY, pexpect.EOF, pexpect.TIMEOUT, timeout=120)
            if index == 1:
                ready = ready or time.perf_counter() - term.started
                continue
            if index != 0:
                raise BenchError(f"waiting for {what}: {'the process ended' if index == 2 else 'timed out'}")
            return

    try:
        until(FIRST_FRAME, "the first prompt")
        prompt = time.perf_counter() - term.started
        echoes = []
        for key in ECHO_KEYS[:5]:
            time.sleep(KEY_EVERY)
            sent = time.perf_counter()
            term.child.send("\x7f" + key)
            until(key, f"the echo of {key!r}")
            echoes.append(time.perf_counter() - sent)
        typed = time.perf_counter() - term.started
        if ready is None:
            until(TOOLBAR_READY, "the toolbar's gauge (the model loaded)")
            ready = time.perf_counter() - term.started
        term.child.send("\x15")
        term.quit()
    finally:
        term.kill()
    return {"prompt_s": prompt, "ready_s": ready, "echo_s": echoes, "typed_before_ready": typed < ready}


def bench_engine_launch(home: EngineHome, runs: int) -> dict:
    """Launch -> prompt and launch -> model ready through the engine process: `runs` launches that
    start it (each then stopped), and `runs` on the engine they left running (warm)."""
    cold, warm = [], []
    for _ in range(runs):
        home.stop_engine()
        cold.append(engine_launch(home))
    for _ in range(runs):
        warm.append(engine_launch(home))
    home.stop_engine()

    def med(rows: list[dict], key: str) -> float:
        return statistics.median(row[key] for row in rows) * 1000

    def each(rows: list[dict], key: str) -> str:
        return ", ".join(f"{row[key] * 1000:.0f}" for row in rows)

    result: dict = {}
    for label, rows in (("engine started", cold), ("engine warm", warm)):
        echoes = [e for row in rows for e in row["echo_s"]]
        result[label] = {
            "launch_to_prompt_ms_median": med(rows, "prompt_s"),
            "launch_to_ready_ms_median": med(rows, "ready_s"),
            "typed_before_ready": sum(row["typed_before_ready"] for row in rows),
            "echo_while_loading": summary_ms(echoes),
            "runs": rows,
        }
        say(f"    {label}: launch -> first prompt {med(rows, 'prompt_s'):6.0f} ms  ({each(rows, 'prompt_s')})")
        say(f"    {label}: launch -> model ready  {med(rows, 'ready_s'):6.0f} ms  ({each(rows, 'ready_s')})")
        e = result[label]["echo_while_loading"]
        say(
            f"    {label}: 5 keys typed at the first prompt: echo p50 {e['p50_ms']:.1f} ms, p99 {e['p99_ms']:.1f} ms; "
            f"all typed before the model was ready in {result[label]['typed_before_ready']}/{len(rows)}"
        )
    return result


def type_until(term: Terminal, done, keys: str = ECHO_KEYS) -> tuple[list[float], int]:
    """Type a key every KEY_EVERY (each replacing the last) until `done()`; each key's echo time,
    and how many were typed before `done()` held."""
    echoes: list[float] = []
    started = time.perf_counter()
    index = 0
    while not done():
        time.sleep(max(0.0, started + index * KEY_EVERY - time.perf_counter()))
        key = keys[index % len(keys)]
        sent = time.perf_counter()
        term.child.send("\x7f" + key)
        term.wait_for(key, f"the echo of {key!r}", timeout=60)
        echoes.append(time.perf_counter() - sent)
        index += 1
    return echoes, len(echoes)


def bench_engine_save(home: EngineHome, rounds: int) -> dict:
    """/save through the engine process: the device context (112 MiB, its conversion holding the
    engine's GIL) is kept after the chat's file; a key every 20 ms from the save's first line to
    the context's file, each key's echo time. Each round first sends a message of 300 words, so
    that the chat has changed and holds enough to be worth keeping."""
    term = Terminal(ENGINE_ARGS, home.env())
    echoes: list[float] = []
    per_save: list[dict] = []
    quit_seconds: float | None = None
    try:
        term.wait_for(TOOLBAR_READY, "the model to load (toolbar gauge)", timeout=120)
        for number in range(rounds):
            term.send_line(f"{HAILO_MESSAGE} ({number}) {LONG_MESSAGE}")
            term.wait_for("today", f"reply {number + 1}", timeout=60)
            term.settle(0.5)
            kept_before = {p: p.stat().st_mtime_ns for p in home.kept_contexts()}
            term.send_line("/save")
            term.wait_for("Keeping the device context", "the save's first line", timeout=60)
            started = time.perf_counter()

            def saved(before: dict[Path, int] = kept_before) -> bool:
                return any(before.get(p) != p.stat().st_mtime_ns for p in home.kept_contexts())

            these, typed = type_until(term, saved)
            seconds = time.perf_counter() - started
            term.child.send("\x15")
            term.settle(0.5)
            echoes += these
            per_save.append({"save_s": seconds, "keys": typed, "echo": summary_ms(these)})
            s = summary_ms(these)
            say(
                f"    save {number + 1}: {seconds:.2f} s, {typed} keys typed during it: echo p50 {s['p50_ms']:.1f} ms, "
                f"p99 {s['p99_ms']:.1f} ms, max {s['max_ms']:.1f} ms"
            )
        # /quit with the chat changed since its last save: the terminal leaves at once, the engine
        # keeps the context later (at keep-alive's end), in its own process.
        term.send_line(f"{HAILO_MESSAGE} (last) {LONG_MESSAGE}")
        term.wait_for("today", "the last reply", timeout=60)
        term.settle(0.5)
        quit_seconds, _ = term.quit()
        say(f"    /quit with the chat changed since its save: the terminal exits in {quit_seconds * 1000:.0f} ms")
    finally:
        term.kill()
    saves_before_stop = sum(e["event"] == "save_context" for e in home.setup.fake_events())
    home.stop_engine()
    saves = sum(e["event"] == "save_context" for e in home.setup.fake_events())
    result = {
        "saves": per_save,
        "echo": summary_ms(echoes),
        "device_saves": saves,
        "quit_s": quit_seconds,
        "saved_at_engine_stop": saves - saves_before_stop,
    }
    e = result["echo"]
    say(
        f"    all {e['n']} keys: echo p50 {e['p50_ms']:.1f} ms, p99 {e['p99_ms']:.1f} ms, max {e['max_ms']:.1f} ms "
        f"(goal: p99 within 50 ms); save_context calls in the double's log: {saves}, "
        f"{result['saved_at_engine_stop']} of them as the engine stopped"
    )
    return result


def bench_engine_print(home: EngineHome, runs: int) -> dict:
    """`hailo-repl -p hi` `runs` times in a row, through the engine process (the first starts it):
    each one's time to its answer's first byte on stdout, and to its exit."""
    home.stop_engine()
    opens_before = home.device_opens()
    # As a script runs it: `daemon` at its default (auto: -p on the Hailo goes through the engine).
    command = [*terminal.hailo_repl_command(), "--backend", "hailo", "--hef-path", HEF_NAME, "-p", "hi"]
    first_byte, wall = [], []
    for _ in range(runs):
        started = time.perf_counter()
        process = subprocess.Popen(command, env=home.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdout is not None
        head = process.stdout.read(1)
        first_byte.append(time.perf_counter() - started)
        out, err = process.communicate(timeout=300)
        wall.append(time.perf_counter() - started)
        if process.returncode != 0 or "today" not in (head + out).decode():
            raise BenchError(f"-p failed ({process.returncode}): {err.decode().strip()!r}")
    opens = home.device_opens() - opens_before
    home.stop_engine()
    tokens = len(SHORT_REPLY) - 2
    say(f"    {' '.join(command[1:])}, {runs} in a row ({tokens} tokens at {home.delay_ms} ms after a prefill):")
    say("      to the answer's first byte: " + ", ".join(f"{t:.2f} s" for t in first_byte))
    say("      to the exit:                " + ", ".join(f"{t:.2f} s" for t in wall))
    say(f"    device opens in the double's log: {opens}")
    return {"first_byte_s": first_byte, "wall_s": wall, "device_opens": opens}


FIRST_WORD = "word0 "  # the reply's first line starts with it (LONG_REPLY)


def bench_engine_attach(home: EngineHome, runs: int) -> dict:
    """A long reply in the engine process, its terminal's client SIGKILLed mid-reply, then
    `hailo-repl -c` in a new pty: launch -> its first frame, and -> the reply's first line replayed."""
    to_prompt, to_line = [], []
    for number in range(runs):
        first = Terminal(ENGINE_ARGS, home.env(long=True))
        second = None
        try:
            first.wait_for(TOOLBAR_READY, "the model to load (toolbar gauge)", timeout=120)
            first.send_line(f"{HAILO_MESSAGE} ({number})")
            first.wait_for("word20 ", "the reply to stream", timeout=60)
            os.kill(first.child.pid, 9)
            first.kill()
            second = Terminal([*ENGINE_ARGS, "-c"], home.env(long=True))
            second.wait_for(FIRST_FRAME, "the first frame", timeout=60)
            to_prompt.append(time.perf_counter() - second.started)
            second.wait_for(FIRST_WORD, "the reply's first line", timeout=60)
            to_line.append(time.perf_counter() - second.started)
            second.child.sendintr()  # stop the reply, so the next run starts on a quiet engine
            second.wait_for(INTERRUPTED, "[interrupted]", timeout=60)
            second.settle(0.3)
            second.quit()
        finally:
            first.kill()
            if second is not None:
                second.kill()
        say(
            f"    run {number + 1}: -c launch -> first frame {to_prompt[-1] * 1000:.0f} ms, "
            f"-> the reply's first line {to_line[-1] * 1000:.0f} ms"
        )
    home.stop_engine()
    result = {"to_first_frame": summary_ms(to_prompt), "to_first_reply_line": summary_ms(to_line)}
    f, line = result["to_first_frame"], result["to_first_reply_line"]
    say(
        f"    -c launch -> the reply's first line: p50 {line['p50_ms']:.0f} ms, p99 {line['p99_ms']:.0f} ms, "
        f"max {line['max_ms']:.0f} ms (goal: within 300 ms); -> first frame p50 {f['p50_ms']:.0f} ms"
    )
    return result


def bench_engine_process(root: Path, args: argparse.Namespace) -> dict:
    home = EngineHome(root, args.delay_ms, args.load_ms, args.code)
    steps = [step.strip() for step in args.engine_steps.split(",") if step.strip()]
    result: dict = {}
    try:
        for step in steps:
            if step == "launch":
                say(f"  launch, {args.launch_runs} that start the engine, then {args.launch_runs} on it warm:")
                result["launch"] = bench_engine_launch(home, args.launch_runs)
            elif step == "save":
                say(f"  /save, {args.save_rounds} rounds, a key every {KEY_EVERY * 1000:.0f} ms during each save:")
                result["save"] = bench_engine_save(home, args.save_rounds)
            elif step == "p":
                say("  -p three times (the first starts the engine and loads):")
                result["print"] = bench_engine_print(home, 3)
            elif step == "attach":
                say(f"  re-attach, {args.attach_runs} runs (a long reply, its client SIGKILLed, then -c):")
                result["attach"] = bench_engine_attach(home, args.attach_runs)
            else:
                raise BenchError(f"unknown --engine-steps step {step!r}")
    finally:
        home.stop_engine()
    return result


# --------------------------------------------------------------------------- main


def main() -> int:
    global REPORT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--json",
        action="store_true",
        help="print all results as one JSON object on stdout at the end (the labelled report goes to stderr)",
    )
    parser.add_argument(
        "--interrupts", type=int, default=50, help="Ctrl+C presses per backend in (a) (default: %(default)s)"
    )
    parser.add_argument(
        "--llama-interrupts", type=int, help="Ctrl+C presses for the llama backend (default: --interrupts)"
    )
    parser.add_argument(
        "--launch-runs", type=int, default=5, help="spawns per measurement in (b), median taken (default: %(default)s)"
    )
    parser.add_argument(
        "--delay-ms", type=int, default=20, help="the hailo double's delay per token (default: %(default)s)"
    )
    parser.add_argument(
        "--backends", default="hailo,llama", help="comma-separated: hailo, llama (default: %(default)s)"
    )
    parser.add_argument("--only", default="abcdef", help="which parts to run: a, b, c, d, e, f (default: abcdef)")
    parser.add_argument(
        "--ratio-rounds", type=int, default=2, help="rounds of --launch-runs spawns per side in (c) (default: 2)"
    )
    parser.add_argument("--replies", type=int, default=5, help="replies measured in (d) (default: %(default)s)")
    parser.add_argument("--decode-runs", type=int, default=5, help="replies per side in (e) (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=256, help="reply length in (e) (default: %(default)s)")
    parser.add_argument(
        "--code",
        type=Path,
        help="for hailo, (c) and (e): run the hailo_repl package found in this folder (e.g. `git archive main "
        "hailo_repl` unpacked) against the same double, to compare with another version",
    )
    parser.add_argument(
        "--chat-args",
        default="",
        help="more arguments for hailo-repl in (a), (c) and (e), e.g. '--daemon always' (through the engine process)",
    )
    parser.add_argument(
        "--engine-first",
        action="store_true",
        help="(c) with the engine process already running (started by a `-p hi` through it before the spawns)",
    )
    parser.add_argument(
        "--engine-steps",
        default="launch,save,p,attach",
        help="(f)'s measurements, comma-separated: launch, save, p, attach (default: %(default)s)",
    )
    parser.add_argument(
        "--load-ms", type=int, default=5000, help="(f): the double's HEF load, GIL held (default: %(default)s)"
    )
    parser.add_argument("--save-rounds", type=int, default=3, help="(f) save: /save rounds (default: %(default)s)")
    parser.add_argument(
        "--attach-runs", type=int, default=10, help="(f) attach: client killed, then -c (default: %(default)s)"
    )
    args = parser.parse_args()
    if args.json:
        REPORT = sys.stderr
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"hailo", "llama"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")

    results: dict = {
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "pexpect": pexpect.__version__,
        },
        "hailo_repl": terminal.hailo_repl_command()[0],
        "delay_ms": args.delay_ms,
        "code": str(args.code) if args.code else None,
    }
    say(
        f"hailo-repl REPL benchmarks  (python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{terminal.hailo_repl_command()[0]})"
    )
    say("  engine figures (model load, TTFT, decode tok/s): see benchmarks/bench_engine.py (not run here)")
    say(
        f"  hailo = the hailo_platform double from tests/fakes, {args.delay_ms} ms per token; "
        f"llama = llama.cpp with the bundled SmolLM2-135M-Instruct"
    )
    say()
    with tempfile.TemporaryDirectory(prefix="bench-repl-") as tmp:
        setup = Setup(Path(tmp), args.delay_ms, args.code, shlex.split(args.chat_args))
        if "a" in args.only:
            say("== (a) Ctrl+C-to-prompt latency (one session per backend) ==")
            results["interrupts"] = {}
            for backend in backends:
                count = args.interrupts if backend == "hailo" else (args.llama_interrupts or args.interrupts)
                results["interrupts"][backend] = bench_interrupts(backend, setup, count)
            say()
        if "b" in args.only:
            say(f"== (b) launch time, median of {args.launch_runs} ==")
            results["launch"] = {backend: bench_launch(backend, setup, args.launch_runs) for backend in backends}
            say()
        if "c" in args.only:
            say(f"== (c) launch -> prompt vs a bare prompt_toolkit prompt, {args.ratio_rounds} rounds ==")
            results["launch_ratio"] = bench_launch_ratio(setup, args.launch_runs, args.ratio_rounds, args.engine_first)
            say()
        if "d" in args.only:
            say("== (d) the output path while a reply streams (hailo double, 100 x 30) ==")
            results["output"] = bench_output(setup, 10, args.replies)
            say()
        if "e" in args.only:
            say("== (e) decode through the live pane (llama, 100 x 30) vs raw llama-cpp-python ==")
            results["decode"] = bench_decode_through_pane(setup, args.decode_runs, args.max_tokens)
            say()
        if "f" in args.only:
            say(
                f"== (f) the engine process on the double: a {args.load_ms} ms HEF load, its real-sized device "
                f"context (112 MiB), {args.delay_ms} ms a token =="
            )
            results["engine_process"] = bench_engine_process(Path(tmp) / "engine", args)
            say()
        if setup.chat_args:  # an engine process these runs started ends with them
            env = setup.llama_env()
            if setup.code:
                env["PYTHONPATH"] = str(setup.code)
            subprocess.run(
                [*terminal.hailo_repl_command(), "daemon", "stop"], env=env, stdout=subprocess.DEVNULL, check=False
            )
    if args.json:
        print(json.dumps(results, indent=2), flush=True)
    failed = any(r.get("problems") for part in ("interrupts", "launch") for r in results.get(part, {}).values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
