"""Keystroke echo while the Hailo device context is saved, in the real REPL in a pseudo-terminal.

Plain script, not a test: `python benchmarks/bench_context_save.py [--turns 5] [--mb-per-save 112]`.
The installed hailo-repl on the hailo_platform double, whose saved context is as large as a
Qwen2.5-1.5B KV cache (112 MiB by default) and whose save holds the GIL as HailoRT's bindings
do (30 ms a MB by default: an estimate for a Pi, see the double's docstring). It prints:
- the echo of a key typed the moment a reply has ended (what every turn paid when the context
  was saved after each turn: then the key waited for the whole save);
- the echo of a key typed just after /save (a save that is running: what a key pressed during
  an idle save waits);
- how long /quit takes (the chat's context and, on first use, the system prompt's are saved).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from terminal import Terminal, with_fakes  # noqa: E402

QWEN = "Qwen2.5-1.5B-Instruct"


def echo_seconds(term: Terminal, key: str) -> float:
    started = time.perf_counter()
    term.send(key)
    term.expect(key)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--mb-per-save", type=float, default=117.44, help="the saved context's size, MB")
    parser.add_argument("--ms-per-mb", type=float, default=30.0, help="GIL held per MB saved or loaded")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        home = Path(temp)
        models = home / "resources" / "models" / "hailo10h"
        models.mkdir(parents=True)
        (models / f"{QWEN}.hef").write_bytes(b"fake hef")
        script = home / "script.json"
        script.write_text(
            json.dumps(
                {
                    "replies": [["A", " short", " reply."]],
                    "delay_ms": 20,
                    "context_bytes": int(args.mb_per_save * 1_000_000),
                    "context_convert_ms_per_mb": args.ms_per_mb,
                }
            )
        )
        env = with_fakes(
            {
                "HAILO_RESOURCES_DIR": str(home / "resources"),
                "XDG_DATA_HOME": str(home / "data"),
                "XDG_STATE_HOME": str(home / "state"),
                "XDG_CONFIG_HOME": str(home / "config"),
                "HAILO_FAKE_SCRIPT": str(script),
            }
        )
        term = Terminal(["--hef-path", QWEN], env)
        term.expect("You: ")
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
    print(f"  /quit to exit (the chat's and the system prompt's contexts saved): {quitting:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
