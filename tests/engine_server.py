"""An EngineServer in this process for tests: on a socket under the test's tmp_path, its loop
in a thread of its own, engines made by a factory over the scripted backend (or any given);
and a raw client that speaks the protocol line by line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from pathlib import Path

from scripted import ScriptedBackend

from hailo_repl.backends.base import GenerationParams
from hailo_repl.chat import Chat
from hailo_repl.daemon import protocol
from hailo_repl.daemon.protocol import OpenRequest
from hailo_repl.daemon.server import EngineServer
from hailo_repl.engine.local import LocalEngine
from hailo_repl.engine.socket_client import SocketEngine, connect
from hailo_repl.sessions import SessionStore


class Engines:
    """The factory the server opens chats with: a LocalEngine over a ScriptedBackend with
    `replies`, saving to `sessions`; each request and engine kept for the test to look at."""

    def __init__(self, sessions: Path, *replies, delay=0.0, backend=None, store=None):
        self.sessions = sessions
        self.store = store
        self.replies = replies
        self.delay = delay
        self.backend = backend
        self.requests: list[OpenRequest] = []
        self.engines: list[LocalEngine] = []

    def __call__(self, request: OpenRequest, say) -> LocalEngine:
        self.requests.append(request)
        backend = self.backend or ScriptedBackend(*self.replies, delay=self.delay)
        store = self.store or SessionStore(self.sessions, writable=request.history)
        engine = LocalEngine(Chat(backend, request.system_prompt or "be kind", GenerationParams(), store))
        self.engines.append(engine)
        return engine


class ServerThread:
    """An EngineServer serving `path` on a loop in a thread; stop() shuts it down."""

    def __init__(self, path: Path, open_engine, expected_uid=None):
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen()
        self.server: EngineServer | None = None
        ready = threading.Event()

        async def main():
            # (as daemon.lifetime: the socket's file goes as the engine starts to stop)
            unlink = lambda: path.unlink(missing_ok=True)  # noqa: E731
            self.server = EngineServer(open_engine=open_engine, expected_uid=expected_uid, on_stopping=unlink)
            serving = asyncio.ensure_future(self.server.serve(self.sock))
            ready.set()
            await self.server.stop_requested.wait()
            await self.server.shutdown()
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving

        self.thread = threading.Thread(target=lambda: self.loop.run_until_complete(main()), daemon=True)
        self.thread.start()
        ready.wait(10)

    def on_loop(self, function):
        """`function()` run on the server's loop; its result."""
        done = asyncio.run_coroutine_threadsafe(_call(function), self.loop)
        return done.result(10)

    def stop(self):
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.server.stop_requested.set)
            self.thread.join(20)
        self.loop.close()
        self.sock.close()


async def _call(function):
    return function()


@contextlib.contextmanager
def engine_server(tmp_path, *replies, delay=0.0, expected_uid=None, backend=None, store=None):
    engines = Engines(tmp_path / "sessions", *replies, delay=delay, backend=backend, store=store)
    server = ServerThread(tmp_path / "engine.sock", engines, expected_uid)
    server.engines = engines
    try:
        yield server
    finally:
        server.stop()


def socket_engine(server: ServerThread, **request) -> SocketEngine:
    return connect(server.path, OpenRequest(**request))


class RawClient:
    """The protocol by hand: send requests, read every line that comes."""

    def __init__(self, path: Path, initialize=True, tty="pts/test"):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.settimeout(10)
        self.stream = self.sock.makefile("rb")
        self.number = 0
        self.seen: list[dict] = []  # notifications read while waiting for replies
        if initialize:
            self.call(protocol.INITIALIZE, {"v": protocol.PROTOCOL_VERSION, "client": {"pid": 1, "tty": tty}})

    def send(self, method, params=None):
        self.number += 1
        self.sock.sendall(protocol.request(self.number, method, params or {}))
        return self.number

    def read(self):
        """The next message (None at EOF)."""
        try:
            line = self.stream.readline()
        except ConnectionResetError:  # (closed with lines unread: as good as EOF here)
            return None
        return json.loads(line) if line else None

    def call(self, method, params=None):
        """A request's reply message (notifications meanwhile go to `seen`)."""
        number = self.send(method, params)
        while True:
            message = self.read()
            if message is None:
                raise EOFError(f"EOF waiting for {method}")
            if message.get("id") == number:
                return message
            self.seen.append(message)

    def until(self, predicate):
        """Read until a message matches (it is returned; the ones before go to `seen`)."""
        for message in self.seen:
            if predicate(message):
                self.seen.remove(message)
                return message
        while True:
            message = self.read()
            if message is None:
                raise EOFError("EOF before the message waited for")
            if predicate(message):
                return message
            self.seen.append(message)

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # (the reading file holds the descriptor open)
        self.stream.close()
        self.sock.close()


def open_params(**fields):
    return protocol.record_to_wire(OpenRequest(**fields))


def is_event(method, **fields):
    def match(message):
        params = message.get("params", {})
        return message.get("method") == method and all(params.get(k) == v for k, v in fields.items())

    return match
