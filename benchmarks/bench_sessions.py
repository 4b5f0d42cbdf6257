"""How long saved chats take to list, search and save, with 1,000 of them.

Plain script, not a test: `python benchmarks/bench_sessions.py [--chats 1000] [--turns 10]`.
It fills a temporary sessions folder through hailo_repl.sessions.SessionStore (the code
the REPL uses) and prints the median of 5 runs of each operation.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from hailo_repl.sessions import INDEX_NAME, ChatRecord, SessionStore, new_session_id


def median_ms(action, runs: int = 5, before=None) -> float:
    times = []
    for _ in range(runs):
        if before:
            before()
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=10, help="turns per chat (each about 60 words a reply)")
    args = parser.parse_args()
    reply = "Here is a fairly ordinary answer of a few sentences. " * 6
    with tempfile.TemporaryDirectory() as temp:
        store = SessionStore(Path(temp) / "sessions")
        for number in range(args.chats):
            messages = [{"role": "system", "content": "You are a helpful assistant."}]
            for turn in range(args.turns):
                messages += [
                    {"role": "user", "content": f"question {turn} of chat {number}"},
                    {"role": "assistant", "content": reply},
                ]
            store.save(ChatRecord(new_session_id(), "Qwen2.5-1.5B-Instruct", "hailo", {}), messages, None)
        index = store.directory / INDEX_NAME
        cold = median_ms(store.chats, before=lambda: index.unlink(missing_ok=True))
        warm = median_ms(store.chats)
        one = store.chats()[-1]
        record = ChatRecord(one.id, "Qwen2.5-1.5B-Instruct", "hailo", {})
        saved = store.load(one.id)
        version = saved.version

        def save_again() -> None:  # as autosave does: the file is checked against what was last written
            nonlocal version
            version = store.save(record, saved.messages, version).version

        after_save = median_ms(store.chats, before=save_again)
        save = median_ms(save_again)
        assert record.id == one.id  # saved in place, never as a new chat
        search = median_ms(lambda: store.search("question 3 of chat 999"), runs=3)
        size = sum(p.stat().st_size for p in store.directory.iterdir()) / 1e6
    print(f"{args.chats} chats of {args.turns} turns ({size:.1f} MB), median of 5 runs:")
    print(f"  list, no index (first listing, index rebuilt)  {cold:8.1f} ms")
    print(f"  list, index current                            {warm:8.1f} ms")
    print(f"  list after one chat was saved again            {after_save:8.1f} ms")
    print(f"  save one chat (a turn's autosave, fsync'd)      {save:8.1f} ms")
    print(f"  /history TEXT (search every chat's text)        {search:8.1f} ms (median of 3)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
