"""The engine process's lock: one engine per user (per state folder).

The engine holds an exclusive flock on `state_dir()/engine.lock` for as long as it runs, taken
before its socket is bound, and writes its pid and start time into it (instance_lock's rule: the
start time from /proc, so a pid the system has since given to another program is not taken for
the engine). The kernel drops the flock when the process ends however it ends, so a SIGKILLed
engine leaves no lock held, only stale text that `holder()` ignores. The file is never removed
(a lock file unlinked while another process waits on it would let two engines run).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from hailo_repl.daemon.paths import same_file
from hailo_repl.instance_lock import Holder, process_start_time
from hailo_repl.private_files import PRIVATE_FILE_MODE, private_dir

# The engine's exit code when another engine holds the lock: it was not needed (its client connects there).
ANOTHER_ENGINE = 3

POLL_SECONDS = 0.02  # how often a lock (and an engine's start or end behind it) is looked at again


class EngineLock:
    """The lock as its engine holds it."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def take(self, wait: float = 2.0) -> bool:
        """Hold the lock and write this process into it; False if another engine holds it. A
        client's brief look (holder()) may hold it shared for a moment: that is waited out."""
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
        deadline = time.monotonic() + wait
        while not _try_flock(fd, fcntl.LOCK_EX):
            if time.monotonic() > deadline or holder(self.path) is not None:
                os.close(fd)
                return False
            time.sleep(POLL_SECONDS)
        pid = os.getpid()
        text = json.dumps({"pid": pid, "started": process_start_time(pid)}) + "\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
        self._fd = fd
        return True

    def take_again(self) -> bool:
        """The lock file was removed under this engine (its state folder deleted): hold a new one
        at its path. False if another engine holds the file there now: this engine is not the
        user's any more (two that each thought so would unlink each other's socket forever)."""
        old = self._fd
        assert old is not None, "take() first"
        mine = os.fstat(old)
        if same_file(self.path, (mine.st_dev, mine.st_ino)):
            return True
        self._fd = None
        if not self.take(wait=0):
            self._fd = old
            return False
        os.close(old)
        return True

    def release(self) -> None:
        """Let go (the process's end does as much): the text goes first, so no reader finds a pid
        that is about to end."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None


def _try_flock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def holder(path: Path, wait: float = 1.0) -> Holder | None:
    """The live engine holding the lock at `path`, or None when no engine holds it. An engine
    that has just taken it and not yet written its pid is waited for, up to `wait` seconds."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # no file (no engine ever ran here), or not a file: no engine holds it
        return None
    try:
        deadline = time.monotonic() + wait
        while True:
            if _try_flock(fd, fcntl.LOCK_SH):
                fcntl.flock(fd, fcntl.LOCK_UN)
                return None
            found = written_holder(path)
            if found is not None or time.monotonic() > deadline:
                return found
            time.sleep(POLL_SECONDS)
    finally:
        os.close(fd)


def written_holder(path: Path) -> Holder | None:
    """The engine the file names, if that process is alive (whether it still holds the lock or
    not: a test kills it by this pid)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or type(data.get("pid")) is not int:
        return None
    started = data.get("started")
    found = Holder(data["pid"], started if type(started) is int else None, None)
    return found if found.alive() else None
