"""Files that hold what a user typed or a model said: private, written whole, read with care.

- Every folder hailo-repl makes for them is 0700 and every file 0600, whatever the umask.
- A write goes to a temporary file that is renamed over the target, so a crash leaves the
  old file or the new one, never half of one. A symlink is followed (the link stays a
  link); anything that is not a regular file (a device, a FIFO, a folder) is refused.
- A read refuses what is not a regular file before opening it (a FIFO would block, a
  device would never end) and stops at a size limit.
- An append is one write() under an exclusive lock, so two processes never interleave.
- A read-modify-write of a file replaced whole (a saved chat, the config file) runs under
  `update_lock`, so two processes never both read the old file and each write their own.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
# A lock is held for one read-modify-write (milliseconds): waiting this long means the holder
# is stuck (stopped mid-save, or on a hung network mount), and the caller says so.
LOCK_WAIT_SECONDS = 10.0
LOCK_POLL_SECONDS = 0.01


def private_dir(path: Path) -> Path:
    """Make `path` (and its missing parents) a folder only its owner can read; returns it."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != PRIVATE_DIR_MODE:
        os.chmod(path, PRIVATE_DIR_MODE)  # made by an older version, or under another umask
    return path


def not_regular(path: Path) -> str | None:
    """Why `path` cannot hold a file's text (a device, a FIFO, a folder…), or None when it
    is a regular file or absent. Symlinks are followed."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "it is a folder"
    if stat.S_ISFIFO(mode):
        return "it is a FIFO, not a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "it is a device, not a file"
    return "it is not a regular file"


class FileTooLarge(Exception):
    """A file larger than its reader allows; the message names the file and the limit."""


class NotARegularFile(OSError):
    """The path is a device, a FIFO, a folder or a socket: hailo-repl reads and writes only files."""


def _check_regular(path: Path) -> None:
    reason = not_regular(path)
    if reason is not None:
        raise NotARegularFile(f"{path}: {reason}")


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` (0600) via a temporary file renamed over it.

    OSError on failure (NotARegularFile for a device, FIFO or folder); nothing is left behind.
    """
    write_bytes_atomically(path, text.encode("utf-8"))


def write_bytes_atomically(path: Path, data: bytes | memoryview, *more: bytes | memoryview) -> None:
    """`write_atomically` for bytes: `data`, then each of `more` (a header and a large body need
    not be joined in memory first)."""
    target = Path(os.path.realpath(path))  # a symlink is followed: the link stays a link
    _check_regular(target)
    handle, temp = _temporary_beside(target)
    try:
        _write_all(handle, temp, (data, *more))
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def create_exclusively(path: Path, data: bytes) -> None:
    """Write `data` to a new file at `path` (0600) in one step; FileExistsError if it exists,
    so two processes choosing the same name never overwrite each other."""
    handle, temp = _temporary_beside(path)
    try:
        _write_all(handle, temp, (data,))
        os.link(temp, path)  # fails if `path` exists; either the whole file appears or nothing
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)


def _temporary_beside(target: Path) -> tuple[int, str]:
    if not target.parent.exists():
        private_dir(target.parent)
    return tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)  # 0600


def _write_all(handle: int, temp: str, chunks: tuple[bytes | memoryview, ...]) -> None:
    with os.fdopen(handle, "wb") as file:
        for chunk in chunks:
            file.write(chunk)
        file.flush()
        os.fsync(file.fileno())


def read_text_limited(path: Path, limit: int) -> str:
    """The text of a regular file of at most `limit` bytes.

    NotARegularFile before opening anything else; FileTooLarge when it is larger;
    OSError when it cannot be read; UnicodeDecodeError when it is not UTF-8.
    """
    return read_bytes_limited(path, limit).decode("utf-8")


def read_bytes_limited(path: Path, limit: int) -> bytes:
    """`read_text_limited` for bytes."""
    _check_regular(path)
    with open(path, "rb") as file:
        _check_regular(path)  # swapped between the check and the open
        # A file already too large is refused unread (a listing of the chats meets it each time).
        data = None if os.fstat(file.fileno()).st_size > limit else file.read(limit + 1)
    if data is None or len(data) > limit:
        raise FileTooLarge(f"{path} is larger than {limit >> 20} MiB, more than hailo-repl reads")
    return data


@contextlib.contextmanager
def _locked(fd: int) -> Iterator[None]:
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def append_whole(path: Path, data: bytes) -> None:
    """Append `data` to `path` (created 0600) as one write under an exclusive lock."""
    _check_regular(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # a file an older version left readable to all
        with _locked(fd):
            written = os.write(fd, data)
            while written < len(data):  # a short write (a full disk raises instead)
                written += os.write(fd, data[written:])
    finally:
        os.close(fd)


def lock_path(path: Path) -> Path:
    """The lock file of `path` (a symlink is followed, as writes follow it): `.NAME.lock` beside it."""
    target = Path(os.path.realpath(path))
    return target.with_name(f".{target.name}.lock")


@contextlib.contextmanager
def update_lock(path: Path) -> Iterator[None]:
    """Hold `path`'s lock while the block reads, changes and rewrites `path`; another process
    waits for it. The lock is a file of its own (a lock on `path` would stay on the inode
    a rename replaces) that exists only while held, so nothing is left beside the chats.

    OSError when the lock file cannot be made (a read-only folder), or TimeoutError when
    another process holds it for more than LOCK_WAIT_SECONDS.
    """
    lock = lock_path(path)
    fd = _acquire(lock)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # before the unlock: a waiter then finds it gone and makes a new one
        os.close(fd)


def _acquire(lock: Path) -> int:
    if not lock.parent.exists():
        private_dir(lock.parent)
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
        try:
            while not _try_flock(fd):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another process has held {lock} for {LOCK_WAIT_SECONDS:g} s")
                time.sleep(LOCK_POLL_SECONDS)
            opened = os.fstat(fd)
            try:
                current = os.stat(lock)
            except FileNotFoundError:
                current = None
        except BaseException:
            os.close(fd)
            raise
        if current is not None and (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
            return fd
        os.close(fd)  # the holder removed this one as it let go: take the lock file in its place


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
