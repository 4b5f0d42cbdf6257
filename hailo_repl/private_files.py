"""Files that hold what a user typed or a model said: private, written whole, read with care.

- Every folder hailo-repl makes for them is 0700 and every file 0600, whatever the umask.
- A write goes to a temporary file that is renamed over the target, so a crash leaves the
  old file or the new one, never half of one. A symlink is followed (the link stays a
  link); anything that is not a regular file (a device, a FIFO, a folder) is refused.
  Missing folders are made only on the path as given, never through a symlink: a link
  whose target's folder is gone is an error, not a new folder wherever it points.
- A read refuses what is not a regular file before opening it (a FIFO would block, a
  device would never end) and stops at a size limit.
- An append is one write() under an exclusive lock, so two processes never interleave.
- A read-modify-write of a file replaced whole (a saved chat, the config file) runs under
  `update_lock`, so two processes never both read the old file and each write their own.
"""

from __future__ import annotations

import contextlib
import errno
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


def _kind(mode: int) -> str | None:
    """What a file of `mode` is, in words, when it is not a regular file; None when it is."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def not_regular(path: Path) -> str | None:
    """Why `path` cannot hold a file's text (a device, a FIFO, a folder…), or None when it
    is a regular file or absent. Symlinks are followed."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    kind = _kind(mode)
    if kind in (None, "a folder", "not a regular file"):
        return kind and f"it is {kind}"
    return f"it is {kind}, not a file"


def not_a_file_at(path: Path) -> str | None:
    """What sits at `path` when it is neither a regular file nor a symlink to one, in words
    ("a folder", "a symlink to /dev/null, a device", "a symlink to x.json, which does not
    exist"); None when it is one, or when nothing is there."""
    try:
        own = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # (a file where a folder on the way should be)
        return None
    if not stat.S_ISLNK(own.st_mode):
        return _kind(own.st_mode)
    link = f"a symlink to {os.readlink(path)}"
    try:
        kind = _kind(os.stat(path).st_mode)
    except FileNotFoundError:
        return f"{link}, which does not exist"
    except OSError as error:  # a loop of links, a target it may not look into
        return f"{link}, which cannot be followed ({error.strerror or error})"
    return None if kind is None else f"{link}, {kind}"


class FileTooLarge(Exception):
    """A file larger than its reader allows; the message names the file and the limit."""


class NotARegularFile(OSError):
    """The path is a device, a FIFO, a folder or a socket: hailo-repl reads and writes only files."""


class LockUnavailable(OSError):
    """`update_lock` cannot have the lock: another process has held it past LOCK_WAIT_SECONDS,
    or something that is not a lock file (a folder, a symlink) sits at its path. The message
    names the lock."""


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
    target = writable_target(path)
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


def writable_target(path: Path) -> Path:
    """Where a write to `path` lands: a symlink is followed (the link stays a link). Missing
    folders of `path` as given are made (0700); never through a link (a dangling symlink on
    the way, or a link whose target's folder is gone: FileNotFoundError naming both)."""
    if not os.path.lexists(path.parent):
        private_dir(path.parent)  # (mkdir stops at a dangling symlink on the way: FileExistsError)
    target = Path(os.path.realpath(path))
    folder = target.parent
    if not folder.is_dir():
        if os.path.exists(folder):
            raise NotADirectoryError(errno.ENOTDIR, f"{folder} is not a folder")
        raise FileNotFoundError(errno.ENOENT, f"{path} leads to {target}, whose folder does not exist")
    return target


def _temporary_beside(target: Path) -> tuple[int, str]:
    if not os.path.lexists(target.parent):
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
    """The lock file of `path` (a symlink is followed, as writes follow it): `.NAME.lock` beside
    it. Its folder is made as a write's would be (writable_target), never through a link."""
    target = writable_target(path)
    return target.with_name(f".{target.name}.lock")


@contextlib.contextmanager
def update_lock(path: Path) -> Iterator[None]:
    """Hold `path`'s lock while the block reads, changes and rewrites `path`; another process
    waits for it. The lock is a file of its own (a lock on `path` would stay on the inode
    a rename replaces) that exists only while held, so nothing is left beside the chats.

    OSError when the lock file cannot be made (a read-only folder), or LockUnavailable when
    another process holds it for more than LOCK_WAIT_SECONDS or something else sits in its place.
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
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        fd = _open_lock(lock)
        try:
            while not _try_flock(fd):
                if time.monotonic() > deadline:
                    raise LockUnavailable(f"another process has held {lock} for {LOCK_WAIT_SECONDS:g} s")
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


def _open_lock(lock: Path) -> int:
    try:
        return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    except OSError as error:
        if os.path.islink(lock):  # never followed (O_NOFOLLOW), whatever it points to
            there: str | None = f"a symlink to {os.readlink(lock)}"
        else:
            there = not_a_file_at(lock)
        if there is None:
            raise  # the folder's fault (read-only, full): said as it is
        raise LockUnavailable(error.errno, f"{there} sits where its lock file goes, {lock}; remove it") from None


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
