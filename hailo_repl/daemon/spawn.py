"""A client's way to the engine process: connect to the one running, or start one and connect.

- A socket that answers: connect to it.
- No socket, or one that refuses (its engine is gone: a stale socket): start
  `python -m hailo_repl.daemon` in a session of its own (start_new_session: a hang-up of this
  terminal does not reach it), stdio on /dev/null (it survives the terminal closing while
  llama.cpp writes to fd 2), cwd / (it holds no folder of the user's), the environment as it is
  (XDG_*, OLLAMA_HOST, OPENAI_*); a thread of this process waits for it, so it never stays a
  zombie while this process runs (once this one ends, init reaps it). The engine takes its lock
  before it binds and removes a stale socket under it (daemon.lifetime), so of clients starting
  at once each may start one, one engine wins, and every client connects to it.
- Anything at the path that is not the user's socket is refused with one line (daemon.paths),
  never removed.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hailo_repl.config import log_file
from hailo_repl.daemon.lock import ANOTHER_ENGINE, POLL_SECONDS, holder
from hailo_repl.daemon.paths import UnsafeSocketPath, check_socket, engine_lock_file, socket_dir, socket_path
from hailo_repl.log import logger

T = TypeVar("T")

START_SECONDS = 30.0  # an engine that has not answered by then will not (its start imports a little)
MAX_STARTS = 3  # engines started by one client before it gives up (each ended with no engine left)


class EngineUnavailable(Exception):
    """No engine could be reached or started; the message is the one line to show."""


def engine_command(keep_alive: float, history: bool) -> list[str]:
    return [sys.executable, "-m", "hailo_repl.daemon", "--keep-alive", f"{keep_alive:g}"] + (
        [] if history else ["--no-log"]
    )


def start_engine(keep_alive: float, history: bool) -> subprocess.Popen[bytes]:
    """Start an engine process, detached from this terminal, reaped by a thread of this process."""
    process = subprocess.Popen(
        engine_command(keep_alive, history),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
        start_new_session=True,
        close_fds=True,
    )
    logger.info("started the engine process {}", process.pid)
    threading.Thread(target=process.wait, name="engine-reaper", daemon=True).start()
    return process


def connect_or_spawn(
    connect: Callable[[Path], T],
    keep_alive: float,
    history: bool = True,
    path: Path | None = None,
    timeout: float = START_SECONDS,
) -> T:
    """What `connect(path)` returns for the engine running, or for one started now.
    `connect` raises FileNotFoundError or ConnectionRefusedError where no engine listens.
    EngineUnavailable with the line to show when none can be had."""
    path = path or socket_path()
    try:
        socket_dir(path)
        check_socket(path)
    except UnsafeSocketPath as error:
        raise EngineUnavailable(str(error)) from None
    except OSError as error:
        raise EngineUnavailable(f"the engine's folder {path.parent} cannot be made: {error.strerror}") from None
    try:
        return connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    started: subprocess.Popen[bytes] | None = None
    starts = 0
    deadline = time.monotonic() + timeout
    while True:
        try:
            check_socket(path)
            return connect(path)
        except UnsafeSocketPath as error:  # put there meanwhile
            raise EngineUnavailable(str(error)) from None
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        if started is None or started.poll() is not None:
            # None started yet, or it ended: one that lost the race to another engine (ANOTHER_ENGINE)
            # waits for that one's socket; with no engine left (an ending one has let go), start one.
            if holder(engine_lock_file(), wait=0) is None:
                code = started.returncode if started is not None else None
                if code not in (None, 0, ANOTHER_ENGINE) or starts == MAX_STARTS:
                    raise EngineUnavailable(
                        f"the engine process ended as it started (exit {code}); details in {log_file()}"
                    )
                started, starts = start_engine(keep_alive, history), starts + 1
        if time.monotonic() > deadline:
            running = holder(engine_lock_file(), wait=0)
            if running is not None:
                raise EngineUnavailable(
                    f"the engine process (pid {running.pid}) does not answer at {path}: "
                    "`hailo-repl daemon stop` ends it"
                )
            raise EngineUnavailable(f"no engine process answered at {path} in {timeout:g} s; details in {log_file()}")
        time.sleep(POLL_SECONDS)
