"""Files that hold what a user typed or a model said: private, written whole, read with care.

- Every folder hailo-repl makes for them is 0700 and every file 0600, whatever the umask.
- A write goes to a temporary file that is renamed over the target, so a crash leaves the
  old file or the new one, never half of one. A symlink is followed (the link stays a
  link); anything that is not a regular file (a device, a FIFO, a folder) is refused.
- A read refuses what is not a regular file before opening it (a FIFO would block, a
  device would never end) and stops at a size limit.
- An append is one write() under an exclusive lock, so two processes never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


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


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """`write_atomically` for bytes."""
    target = Path(os.path.realpath(path))  # a symlink is followed: the link stays a link
    _check_regular(target)
    handle, temp = _temporary_beside(target)
    try:
        _write_all(handle, temp, data)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def create_exclusively(path: Path, text: str) -> None:
    """Write `text` to a new file at `path` (0600) in one step; FileExistsError if it exists,
    so two processes choosing the same name never overwrite each other."""
    handle, temp = _temporary_beside(path)
    try:
        _write_all(handle, temp, text.encode("utf-8"))
        os.link(temp, path)  # fails if `path` exists; either the whole file appears or nothing
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)


def _temporary_beside(target: Path) -> tuple[int, str]:
    if not target.parent.exists():
        private_dir(target.parent)
    return tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)  # 0600


def _write_all(handle: int, temp: str, data: bytes) -> None:
    with os.fdopen(handle, "wb") as file:
        file.write(data)
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
        data = file.read(limit + 1)
    if len(data) > limit:
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
