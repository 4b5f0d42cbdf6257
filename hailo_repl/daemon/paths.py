"""Where the engine process listens and keeps its lock, and the checks that keep its socket the
user's own.

The socket is `state_dir()/engine.sock`: XDG_STATE_HOME is honoured, so each home (each test's
too) has its own engine; not $XDG_RUNTIME_DIR, which goes at the last logout (gmux#359). Where
that path is longer than a Unix socket's address holds (107 bytes), it is
/tmp/hailo-repl-UID/<hash of the state folder>.sock instead, in a 0700 folder of the user's.

A socket path that is a symlink, not a socket, or someone else's is refused with one line and never
unlinked: only a socket of the user's, with no engine listening (checked under the engine's
lock), is removed as stale.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from hailo_repl.config import state_dir
from hailo_repl.private_files import PRIVATE_DIR_MODE, private_dir

SOCKET_NAME = "engine.sock"
LOCK_NAME = "engine.lock"
SUN_PATH_LIMIT = 107  # bytes of a Unix socket's path (sun_path is 108 with its closing NUL)
FALLBACK_ROOT = Path("/tmp")  # (not $TMPDIR: the same engine whatever a shell has set)


class UnsafeSocketPath(Exception):
    """Something at the socket's path, or its folder, that is not the user's own socket or folder;
    the message is the one line to show. Nothing there is ever removed."""


def engine_lock_file() -> Path:
    """One engine per user (per state folder): it holds this file's lock while it runs."""
    return state_dir() / LOCK_NAME


def socket_path() -> Path:
    """Where the engine listens: in the state folder, or the /tmp fallback for a long path."""
    wanted = state_dir() / SOCKET_NAME
    if len(os.fsencode(wanted)) <= SUN_PATH_LIMIT:
        return wanted
    digest = hashlib.sha256(os.fsencode(state_dir())).hexdigest()[:16]
    return fallback_dir() / f"{digest}.sock"


def fallback_dir() -> Path:
    return FALLBACK_ROOT / f"hailo-repl-{os.getuid()}"


def socket_dir(path: Path) -> Path:
    """Make the socket's folder if missing (0700) and check that it is the user's own folder with
    no access for others; UnsafeSocketPath if not. The /tmp fallback must not be a symlink (anyone
    may put one there first); the state folder may be one the user made (followed, as the logs
    and chats in it are), and what it points to is checked."""
    folder = path.parent
    fallback = folder == fallback_dir()
    if fallback:
        try:
            os.mkdir(folder, PRIVATE_DIR_MODE)
        except FileExistsError:
            pass
    else:
        private_dir(folder)
    info = os.lstat(folder) if fallback else os.stat(folder)
    if not stat.S_ISDIR(info.st_mode):
        kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "a file"
        raise UnsafeSocketPath(f"{folder} is {kind}, not a folder: the engine's socket cannot go there")
    if info.st_uid != os.getuid():
        raise UnsafeSocketPath(f"{folder} belongs to uid {info.st_uid}, not yours: the engine's socket cannot go there")
    if stat.S_IMODE(info.st_mode) != PRIVATE_DIR_MODE:
        os.chmod(folder, PRIVATE_DIR_MODE)  # the user's own folder, made under another umask
    return folder


def check_socket(path: Path) -> bool:
    """Whether a socket of the user's sits at `path` (False: nothing does). UnsafeSocketPath for
    anything else: a symlink, a file that is not a socket, a socket of another user's."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeSocketPath(
            f"{path} is a symlink (to {os.readlink(path)}), not the engine's socket: refused, and left as it is"
        )
    if not stat.S_ISSOCK(info.st_mode):
        raise UnsafeSocketPath(f"{path} is not a socket: refused, and left as it is; move it away to use the engine")
    if info.st_uid != os.getuid():
        raise UnsafeSocketPath(f"{path} belongs to uid {info.st_uid}, not to you: refused, and left as it is")
    return True


def same_file(path: Path, identity: tuple[int, int] | None) -> bool:
    """Whether `path` is still the file whose (device, inode) is `identity`."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return identity is not None and (info.st_dev, info.st_ino) == identity


def identity_of(path: Path) -> tuple[int, int] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino
