"""A small server speaking Ollama's protocol on 127.0.0.1, replaying scripted NDJSON streams.

The streams follow what the servers send: Ollama's `/api/chat` lines (ollama/ollama,
api/types.go `ChatResponse` and `Metrics`), and hailo-ollama's, whose last line carries
only `done`, `done_reason`, `total_duration` and `eval_count` and whose lines end in CRLF
(hailo-ai/hailo_model_zoo_genai, src/library/controller/llm_generation_callback.cpp).
Like both, it streams with chunked transfer encoding, so a dropped connection is seen by
the client as one. It records each request body, and each client that went away while
a reply was still streaming.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CREATED_AT = "2026-11-27T01:00:00.000000000Z"


@dataclass
class Reply:
    """One /api/chat answer: its lines (a dict is sent as JSON, a str as it is), sent
    `delay` seconds apart; `drop` closes the connection before the stream's end."""

    lines: list[Any]
    delay: float = 0.0
    drop: bool = False
    status: int = 200
    wait: float = 0.0  # seconds before the response starts, as while a server loads a model


def token_lines(pieces: list[str], model: str) -> list[Any]:
    return [
        {"model": model, "created_at": CREATED_AT, "message": {"role": "assistant", "content": p}, "done": False}
        for p in pieces
    ]


def ollama_reply(pieces: list[str], model: str = "qwen2:1.5b", prompt_eval_count: int = 26, **options: Any) -> Reply:
    """A reply as Ollama streams it, with its closing metrics line."""
    lines = token_lines(pieces, model)
    lines.append(
        {
            "model": model,
            "created_at": CREATED_AT,
            "message": {"role": "assistant", "content": ""},
            "done_reason": "stop",
            "done": True,
            "total_duration": 512_000_000,
            "load_duration": 21_000_000,
            "prompt_eval_count": prompt_eval_count,
            "prompt_eval_duration": 80_000_000,
            "eval_count": len(pieces),
            "eval_duration": 400_000_000,
        }
    )
    return Reply(lines, **options)


def hailo_ollama_reply(pieces: list[str], model: str = "qwen2:1.5b", **options: Any) -> Reply:
    """A reply as hailo-ollama streams it: the last line has no prompt count and no eval duration."""
    lines = token_lines(pieces, model)
    lines.append(
        {
            "model": model,
            "created_at": CREATED_AT,
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "total_duration": 734_000_000,
            "eval_count": len(pieces),
        }
    )
    return Reply(lines, **options)


@dataclass
class OllamaDouble:
    """`flavour` "ollama" or "hailo-ollama" decides /api/show's model_info, how an unknown
    model is refused, and the line ending."""

    replies: list[Reply] = field(default_factory=list)
    models: dict[str, int] = field(default_factory=lambda: {"qwen2:1.5b": 32768})  # name → context_length
    flavour: str = "ollama"
    requests: list[dict[str, Any]] = field(default_factory=list)  # the /api/chat bodies
    seen: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Authorization header) of each request
    disconnects: int = 0  # clients gone before their reply's end

    def __post_init__(self) -> None:
        self.disconnected = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        # A short poll: shutdown() waits for serve_forever to look (0.5 s by default, at every test's end).
        serving = {"poll_interval": 0.02}
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs=serving, name="ollama-double", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> OllamaDouble:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def show(self, model: str) -> tuple[int, dict[str, Any]]:
        if model not in self.models:
            # Ollama: 404; hailo-ollama: 200 with the error (controller.cpp, show())
            return (404 if self.flavour == "ollama" else 200), {"error": f"model '{model}' not found"}
        if self.flavour == "hailo-ollama":
            return 200, {"license": "", "modelfile": "", "parameters": "", "template": "", "model_info": ""}
        info = {"general.architecture": "qwen2", "qwen2.context_length": self.models[model]}
        return 200, {"modelfile": "", "parameters": "", "template": "", "model_info": info}

    def tags(self) -> dict[str, Any]:
        return {"models": [{"name": name, "model": name, "size": 1, "digest": "0"} for name in self.models]}

    def next_reply(self, body: dict[str, Any]) -> Reply:
        self.requests.append(body)
        if body.get("model") not in self.models:
            status = 404 if self.flavour == "ollama" else 200
            return Reply([{"error": f"model '{body.get('model')}' not found"}], status=status)
        return self.replies.pop(0) if self.replies else ollama_reply(["ok"])


def _handler_for(double: OllamaDouble) -> type[BaseHTTPRequestHandler]:
    line_end = b"\r\n" if double.flavour == "hailo-ollama" else b"\n"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet test output

        def _json(self, status: int, data: dict[str, Any]) -> None:
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            data: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
            return data

        def do_GET(self) -> None:
            double.seen.append((self.path, self.headers.get("Authorization")))
            if self.path == "/api/tags":
                self._json(200, double.tags())
            else:
                self._json(404, {"error": "not found"})

        def do_POST(self) -> None:
            double.seen.append((self.path, self.headers.get("Authorization")))
            if self.path == "/api/show":
                self._json(*double.show(self._body().get("model", "")))
            elif self.path == "/api/chat":
                self._stream(double.next_reply(self._body()))
            else:
                self._json(404, {"error": "not found"})

        def _stream(self, reply: Reply) -> None:
            try:
                if self._client_left_within(reply.wait):
                    raise ConnectionResetError("the client went away while the server loaded")
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for line in reply.lines:
                    data = (json.dumps(line) if isinstance(line, dict) else line).encode() + line_end
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                    time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    return
                self.wfile.write(b"0\r\n\r\n")
            except OSError:  # the client went away
                double.disconnects += 1
                double.disconnected.set()
                self.close_connection = True

        def _client_left_within(self, seconds: float) -> bool:
            """Wait `seconds` before answering, as Ollama does while it loads a model; True as
            soon as the client shuts the connection meanwhile (Ollama cancels the request then)."""
            ready, _, _ = select.select([self.connection], [], [], seconds)
            return bool(ready) and self.connection.recv(1, socket.MSG_PEEK) == b""

    return Handler
