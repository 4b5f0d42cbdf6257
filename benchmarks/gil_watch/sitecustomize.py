"""Loaded by Python at start (this folder on PYTHONPATH) in the hailo-repl that bench_context_save.py
`--only gil` runs: when $GIL_WATCH_FILE is set, a thread that wakes every 2 ms writes each longer
gap, i.e. each time something held the GIL, to that file as "gap START END" (time.monotonic(), one
clock for every process on Linux). The hailo_platform double's LLMGeneratorCompletion.read() is the
device's own work (its first token: the prefill, `delay_ms` plus `prefill_ms_per_token`; the
double waits for it with the GIL held, as HailoRT's binding does): each call is written as
"device START END", so the benchmark can leave it out of the gaps; the abort of a stopped reply
(the double waits, GIL held, for the token in flight and one more) as "abort START END".
"""

from __future__ import annotations

import os
import threading
import time

TICK = 0.002  # seconds between wake-ups
WORTH_WRITING = 0.005  # a gap longer than this is written (Python's switch interval is 5 ms)


def _start(path: str) -> None:
    out = open(path, "a", buffering=1, encoding="utf-8")  # open for the process's life
    lock = threading.Lock()

    def write(kind: str, start: float, end: float) -> None:
        with lock:
            out.write(f"{kind} {start:.6f} {end:.6f}\n")

    def tick() -> None:
        last = time.monotonic()
        while True:
            time.sleep(TICK)
            now = time.monotonic()
            if now - last - TICK > WORTH_WRITING:
                write("gap", last + TICK, now)
            last = now

    threading.Thread(target=tick, name="gil-watch", daemon=True).start()
    try:
        from hailo_platform.genai import LLMGeneratorCompletion
    except ImportError:
        return
    read, abort = LLMGeneratorCompletion.read, LLMGeneratorCompletion._abort

    def timed_read(self, *args, **kwargs):
        started = time.monotonic()
        try:
            return read(self, *args, **kwargs)
        finally:
            write("device", started, time.monotonic())

    def timed_abort(self):
        started = time.monotonic()
        try:
            return abort(self)
        finally:
            write("abort", started, time.monotonic())

    LLMGeneratorCompletion.read = timed_read
    LLMGeneratorCompletion._abort = timed_abort


if os.environ.get("GIL_WATCH_FILE"):
    _start(os.environ["GIL_WATCH_FILE"])
