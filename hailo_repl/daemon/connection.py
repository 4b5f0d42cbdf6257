"""One client of the engine process: its connection, the requests it sends (the urgent ones
answered at once, the rest in order) and the lines it is sent, through a bounded backlog: a
client that stops reading is let go, never waited for (ENGINE.md §0.5, tmux's
regress/control-reply-buffer-bound.sh)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Protocol

from hailo_repl.daemon import protocol
from hailo_repl.log import logger

# A client's lines waiting to be written, in bytes, past which it is dropped `too_far_behind`:
# text comes a few times a second, so this is minutes of a reply; a client that stopped reading
# (SIGSTOP, a stalled SSH link) never slows it.
BACKLOG_LIMIT = 4 * 1024 * 1024
# A dropped client's last line (why) may wait this long for it to read, then the socket goes.
DROP_GRACE_SECONDS = 10.0


class Host(Protocol):
    """What a client needs of the server it is a client of (daemon.server.EngineServer)."""

    backlog_limit: int
    at_once: set[str]  # the methods answered in the reader, never queued behind a request under way

    async def dispatch(self, client: Client, number: Any, method: str, params: dict[str, Any]) -> None: ...

    def client_gone(self, client: Client) -> None: ...


class Client:
    """One connection: its reader, its bounded queue of lines to write, and who it is."""

    def __init__(self, server: Host, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pid: int):
        self.server = server
        self.reader = reader
        self.writer = writer
        self.pid = pid
        self.tty = "?"
        self.initialized = False
        self.active_at = time.monotonic()  # its last request
        self.closed = False
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._queued = 0  # bytes in the queue
        self._writing = asyncio.ensure_future(self._write())
        self._requests: asyncio.Queue[tuple[Any, str, dict[str, Any]]] = asyncio.Queue()
        self._answering = asyncio.ensure_future(self._answer())

    def name(self) -> str:
        return f"pid {self.pid} on {self.tty}"

    def send(self, line: bytes) -> None:
        """Queue a line; never waits. A client too far behind is let go instead."""
        if self.closed:
            return
        if self._queued and self._queued + len(line) > self.server.backlog_limit:
            logger.warning("engine: dropping client {}: too far behind ({} bytes waiting)", self.name(), self._queued)
            self.drop(protocol.TOO_FAR_BEHIND)
            return
        self._queued += len(line)
        self._queue.put_nowait(line)

    async def _write(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                line = await self._queue.get()
                self._queued -= len(line)
                self.writer.write(line)
                await self.writer.drain()

    async def drained(self) -> None:
        """Until what was queued so far is handed to the socket (or the client is gone)."""
        while self._queued and not self.closed and not self._writing.done():
            await asyncio.sleep(0.005)
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            await self.writer.drain()

    def drop(self, reason: str, **why: Any) -> None:
        """Let the client go, never waiting for it: the line saying why goes after what it has
        not read yet (if it ever reads: a stalled one gets DROP_GRACE_SECONDS), then the socket
        closes."""
        if self.closed:
            return
        self.closed = True
        self._answering.cancel()
        self._writing.cancel()
        transport = self.writer.transport
        with contextlib.suppress(Exception):
            while not self._queue.empty():  # (bounded by the backlog: handed over, not waited for)
                transport.write(self._queue.get_nowait())
            transport.write(protocol.notification(protocol.CLIENT_DETACHED, {"reason": reason, **why}))
            transport.close()
        asyncio.get_running_loop().call_later(DROP_GRACE_SECONDS, transport.abort)
        self.server.client_gone(self)

    async def close(self, reason: str | None = None, **why: Any) -> None:
        """Say why (if `reason`), write what is queued, and close."""
        if self.closed:
            return
        if reason is not None:
            self.send(protocol.notification(protocol.CLIENT_DETACHED, {"reason": reason, **why}))
        await asyncio.wait([asyncio.ensure_future(self.drained())], timeout=DROP_GRACE_SECONDS)
        self.closed = True
        self._answering.cancel()
        self._writing.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()
        self.server.client_gone(self)

    async def read(self) -> None:
        """Read requests until EOF: the urgent ones answered at once, the rest in order."""
        while not self.closed:
            try:
                line = await self.reader.readline()
            except (ValueError, asyncio.LimitOverrunError):  # over MAX_LINE
                self.send(protocol.error(None, protocol.BAD_REQUEST, "a request over the line limit"))
                break
            except (ConnectionError, OSError):
                break
            if not line:
                break
            try:
                message = protocol.decode(line)
                number, method = message.get("id"), message["method"]
                params = message.get("params") or {}
                if not isinstance(method, str) or not isinstance(params, dict):
                    raise protocol.ProtocolError("method or params of the wrong type")
            except (protocol.ProtocolError, KeyError) as wrong:
                self.send(protocol.error(None, protocol.BAD_REQUEST, f"not a request: {wrong}"))
                continue
            self.active_at = time.monotonic()
            if method in self.server.at_once:
                await self.server.dispatch(self, number, method, params)
            else:
                self._requests.put_nowait((number, method, params))
        await self.close()

    async def _answer(self) -> None:
        while True:
            number, method, params = await self._requests.get()
            await self.server.dispatch(self, number, method, params)
