"""`hailo-repl daemon status` and `hailo-repl daemon stop`: the user's engine process, seen and
ended from any terminal.

`stop` asks the engine over its socket (daemon/stop: the reply in flight stops, kept
[interrupted]; the chat is saved, the device context kept, the model released) and waits for it
to end; an engine that cannot be asked (another version's, or one not answering) gets SIGTERM by
the pid in its lock file, which does the same.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

from hailo_repl.console import ArgumentParser, Console

STOP_SECONDS = 120.0  # keeping a Hailo's device context may take seconds; a load under way, more


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="hailo-repl daemon",
        description="The engine process that holds your chats (settings daemon, keep-alive): "
        "status shows it, stop ends it (its reply stopped and saved, the device released).",
    )
    parser.add_argument("action", choices=("status", "stop"))
    return parser


def main(arguments: list[str]) -> int:
    from hailo_repl.log import setup_logging

    args = build_parser().parse_args(arguments)
    setup_logging()  # (what the connection logs goes to the log file, never to the terminal)
    console = Console(sys.stderr)
    return status(console) if args.action == "status" else stop(console)


def ask(method: str) -> tuple[int, dict[str, Any] | None, str | None]:
    """The running engine's pid (0: none runs) and its answer to `method`, or the line saying
    why it could not be asked."""
    from hailo_repl.daemon.lock import holder
    from hailo_repl.daemon.paths import engine_lock_file, socket_path
    from hailo_repl.daemon.protocol import RemoteError
    from hailo_repl.engine.socket_client import connect

    running = holder(engine_lock_file())
    if running is None:
        return 0, None, None
    try:
        engine = connect(socket_path())
    except RemoteError as refused:
        return running.pid, None, refused.line
    except OSError as error:
        return running.pid, None, f"its socket {socket_path()} does not answer ({error.strerror or error})"
    try:
        return running.pid, engine.call(method), None
    except (RemoteError, OSError) as error:
        return running.pid, None, str(error)
    finally:
        engine.close()


def memory_of(pid: int) -> str:
    """The process's resident memory, in MiB ('?' where /proc does not say)."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return f"{int(line.split()[1]) / 1024:.0f} MiB"
    except (OSError, ValueError):
        pass
    return "?"


def status_lines(pid: int, answer: dict[str, Any]) -> list[str]:
    """What `daemon status` prints of an engine's daemon/status answer."""
    from hailo_repl.daemon.paths import socket_path

    model = answer.get("model")
    rows = [f"engine process: pid {pid}, hailo-repl {answer.get('version', '?')}, memory {memory_of(pid)} RSS"]
    rows.append(f"socket: {socket_path()}")
    if model is None:
        rows.append("model: none loaded (no chat opened yet)")
        return rows
    rows.append(f"model: {model} on {answer.get('backend')} ({answer.get('state')})")
    chat = answer.get("chat") or "(new, not saved yet)"
    attached, idle = answer.get("attached"), answer.get("idle_seconds")
    if attached:
        where = f"open in {attached}"
    elif idle is not None:
        where = f"no terminal attached, idle {_duration(float(idle))}"
    else:
        where = "no terminal attached"
    rows.append(f"chat: {chat}, {where}")
    if answer.get("turn_running"):
        rows.append("reply: running")
    if answer.get("unsaved"):
        rows.append("[Error] its last save failed: the latest turns are in no file (the engine stays until saved)")
    return rows


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def status(console: Console) -> int:
    pid, answer, why = ask("daemon/status")
    if not pid:
        console.info("No hailo-repl engine process runs.")
        return 1
    if answer is None:
        console.error(f"the hailo-repl engine process (pid {pid}) cannot be asked: {why}")
        return 1
    print("\n".join(status_lines(pid, answer)))
    return 0


def stop(console: Console) -> int:
    pid, answer, why = ask("daemon/stop")
    if not pid:
        console.info("No hailo-repl engine process runs.")
        return 0
    if answer is None:  # another version's engine, or one not answering: SIGTERM does the same
        console.info(f"The engine process (pid {pid}) cannot be asked ({why}); sending it SIGTERM.")
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    if not _ended(pid, STOP_SECONDS):
        console.error(f"the engine process (pid {pid}) has not ended in {STOP_SECONDS:g} s; `kill -9 {pid}` ends it")
        return 1
    console.info(f"Stopped the engine process (pid {pid}); its chat is saved and the model released.")
    return 0


def _ended(pid: int, timeout: float) -> bool:
    from hailo_repl.daemon.lock import POLL_SECONDS, holder
    from hailo_repl.daemon.paths import engine_lock_file

    deadline = time.monotonic() + timeout
    while (found := holder(engine_lock_file(), wait=0)) is not None and found.pid == pid:
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True
