"""The engine process's life: one per user, from its lock to its exit.

The order, and why:
1. The lock first (daemon.lock), before the socket is touched: of engines started at once
   (four terminals opened together), one goes on; the others exit with ANOTHER_ENGINE and their
   clients connect to the winner.
2. Under the lock, a socket left at the path is stale (its engine is gone): unlinked, then bound
   afresh (0600, in a 0700 folder; anything but a socket of the user's is refused: daemon.paths).
3. Serve (daemon.server) until one of:
   - SIGTERM: the reply in flight stops (kept [interrupted]), the chat is saved, the device
     context kept, the model released; exit 143;
   - chat/quit or `hailo-repl daemon stop`: the same, exit 0;
   - keep-alive: no terminal attached and no reply running for that long (0: at once), and the
     chat's last save did not fail (the latest turns would be in no file): the same, exit 0.
   SIGHUP is ignored: the engine has no terminal, and a hang-up is its clients' business.
4. The socket is unlinked (only if it is still the one bound) as the end begins (the server's
   on_stopping: a client arriving during the seconds it may take waits for the next engine),
   then, once the engine has let go, the lock.

A socket deleted under the live engine (a tmpfiles cleaner, a user) is bound again at the next
tick, so clients find the engine again; with its lock file too (the state folder deleted), the
lock is taken again first, and an engine that finds another holding it by then ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from hailo_repl.daemon import protocol
from hailo_repl.daemon.lock import ANOTHER_ENGINE, EngineLock
from hailo_repl.daemon.paths import (
    UnsafeSocketPath,
    check_socket,
    engine_lock_file,
    fallback_dir,
    identity_of,
    same_file,
    socket_dir,
    socket_path,
)
from hailo_repl.log import logger

if TYPE_CHECKING:
    from hailo_repl.daemon.server import EngineServer

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_TERMINATED = 128 + signal.SIGTERM
BACKLOG = 16
TICK_SECONDS = 1.0  # how often the keep-alive and the socket are looked at (shorter for a short keep-alive)
# Until its first client has come, an engine waits at least this long (its client connects within
# moments of starting it; one that died first leaves the engine to end by itself).
FIRST_CLIENT_SECONDS = 30.0


class Listener:
    """The listening socket at `path`, bound again when its file has gone."""

    def __init__(self, path: Path):
        self.path = path
        self.socks: list[socket.socket] = []  # the one bound last, and any its file was removed from
        self.refused = ""  # why it could not be bound again (said once)
        self._identity: tuple[int, int] | None = None
        self._folder_fd: int | None = None

    def bind(self) -> socket.socket:
        """Bind and listen at the path; UnsafeSocketPath for what must not be removed. Call with
        the engine's lock held: a socket of the user's at the path is then stale, and unlinked."""
        socket_dir(self.path)
        if self.path.parent == fallback_dir() and self._folder_fd is None:
            # systemd-tmpfiles skips a folder that is locked (tmux#4640): ours in /tmp stays.
            self._folder_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fcntl.flock(self._folder_fd, fcntl.LOCK_SH)
        if check_socket(self.path):
            logger.info("removing the stale engine socket {}", self.path)
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            os.chmod(self.path, 0o600)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.socks.append(sock)
        self._identity, self.refused = identity_of(self.path), ""
        return sock

    def gone(self) -> bool:
        """Whether the socket's file was removed (or replaced) since it was bound."""
        return not same_file(self.path, self._identity)

    def unlink(self) -> None:
        """Remove the socket's file if it is still the one this process bound."""
        if not self.gone():
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self._identity = None

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        if self._folder_fd is not None:
            os.close(self._folder_fd)
            self._folder_fd = None


def run_engine(keep_alive: float) -> int:
    """The engine process, from its lock to its exit code. `keep_alive`: seconds to stay after
    the last client left (0: none; negative: until stopped)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    lock = EngineLock(engine_lock_file())
    try:
        if not lock.take():
            logger.info("another engine process holds {}: this one is not needed", lock.path)
            return ANOTHER_ENGINE
    except OSError as error:
        logger.error("the engine's lock {} cannot be taken: {}", lock.path, error)
        return EXIT_FAILURE
    listener = Listener(socket_path())
    try:
        try:
            listener.bind()
        except (UnsafeSocketPath, OSError) as error:
            logger.error("the engine cannot listen at {}: {}", listener.path, error)
            return EXIT_FAILURE
        logger.info("engine process {} listening at {}", os.getpid(), listener.path)
        code = asyncio.run(_serve(listener, lock, keep_alive))
        logger.info("engine process {} ends ({})", os.getpid(), code)
        return code
    finally:
        listener.unlink()
        listener.close()
        lock.release()


async def _serve(listener: Listener, lock: EngineLock, keep_alive: float) -> int:
    from hailo_repl.daemon.opening import open_local_engine
    from hailo_repl.daemon.server import EngineServer

    loop = asyncio.get_running_loop()
    server = EngineServer(open_engine=open_local_engine, expected_uid=os.getuid(), on_stopping=listener.unlink)
    terminated = False

    def on_sigterm() -> None:
        nonlocal terminated
        terminated = True
        server.stop_requested.set()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    serving = [asyncio.create_task(server.serve(listener.socks[-1]))]
    reason = await _until_stopped(server, listener, lock, keep_alive, serving)
    if terminated:
        reason = protocol.STOPPING
    logger.info("engine: {}", reason)
    try:  # (the socket goes first, in on_stopping: a client arriving meanwhile starts the next engine)
        await server.shutdown(reason)
    finally:
        from hailo_repl.daemon.opening import release_device_claim

        release_device_claim()
        for task in serving:
            task.cancel()
        await asyncio.gather(*serving, return_exceptions=True)
    return EXIT_TERMINATED if terminated else EXIT_OK


async def _until_stopped(
    server: EngineServer, listener: Listener, lock: EngineLock, keep_alive: float, serving: list[asyncio.Task[None]]
) -> str:
    """Tick until the engine should end; the reason, as the server's shutdown takes it."""
    tick = TICK_SECONDS if keep_alive < 0 else min(TICK_SECONDS, max(keep_alive / 4, 0.05))
    client_came = False
    while True:
        with contextlib.suppress(asyncio.TimeoutError):  # (not TimeoutError before Python 3.11)
            await asyncio.wait_for(server.stop_requested.wait(), tick)
        if server.stop_requested.is_set():
            return protocol.QUIT
        if listener.gone() and not server.stopping:
            if not lock.take_again():
                logger.warning("another engine process holds {} now: this one ends", lock.path)
                return protocol.STOPPING
            _bind_again(server, listener, serving)
        client_came = client_came or bool(server.clients) or server.engine is not None
        idle = server.idle_seconds() if not server.clients else None  # (one connected, not yet open: not idle)
        wait = keep_alive if client_came else max(keep_alive, FIRST_CLIENT_SECONDS)
        if keep_alive >= 0 and idle is not None and idle >= wait:
            if not server.last_save_failed:
                return protocol.IDLE


def _bind_again(server: EngineServer, listener: Listener, serving: list[asyncio.Task[None]]) -> None:
    """The socket's file was removed under the engine: bind a new one (clients already connected
    keep their connections; the old listening socket, reachable no more, stays open until the end)."""
    try:
        sock = listener.bind()
    except (UnsafeSocketPath, OSError) as error:  # something else put there: left alone, said once
        if str(error) != listener.refused:
            logger.warning("the engine's socket {} is gone and cannot be bound again: {}", listener.path, error)
            listener.refused = str(error)
        return
    logger.info("the engine's socket {} was removed: bound again", listener.path)
    serving.append(asyncio.create_task(server.serve(sock)))
