"""A reply never grows past --max-tokens, whatever the server does, and no chat is written
that hailo-repl would refuse to read back."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import run_cli
from scripted import ScriptedBackend

from hailo_repl.backends.base import GenerationParams
from hailo_repl.chat import Chat
from hailo_repl.conversation import MAX_CHAT_FILE_BYTES, ConversationFileError, save_conversation
from hailo_repl.sessions import SessionStore

MODEL = "endless"
SAFETY_CAP = 50_000  # the server ends here, so that a client that never stops still ends


class EndlessServer:
    """Ollama's and the OpenAI protocol on 127.0.0.1, streaming one word after another past
    any max_tokens (it is read and ignored) until the client goes away."""

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []  # each chat request's body
        self.sent = 0
        self.client_gone = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        # A short poll: shutdown() waits for serve_forever to look (0.5 s by default).
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self) -> EndlessServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def root(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):  # HTTP/1.0: the body ends when the connection closes
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send_json(self, data: dict[str, Any]) -> None:
                body = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send_json({"data": [{"id": MODEL}]})  # /v1/models

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/api/show":
                    self._send_json({"model_info": {}})
                    return
                server.asked.append(body)
                openai = self.path.startswith("/v1/")
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream" if openai else "application/x-ndjson")
                self.end_headers()
                try:
                    for index in range(SAFETY_CAP):
                        self.wfile.write(self._line(f"w{index} ", openai))
                        server.sent += 1
                    self.wfile.write(b"data: [DONE]\n\n" if openai else b'{"done": true}\n')
                except OSError:
                    server.client_gone.set()

            @staticmethod
            def _line(text: str, openai: bool) -> bytes:
                if openai:
                    chunk = {"choices": [{"delta": {"content": text}, "finish_reason": None}]}
                    return b"data: " + json.dumps(chunk).encode() + b"\n\n"
                return json.dumps({"message": {"role": "assistant", "content": text}, "done": False}).encode() + b"\n"

        return Handler


@pytest.mark.parametrize(("backend", "api"), [("openai", "/v1"), ("ollama", "")])
def test_a_server_that_ignores_max_tokens_is_stopped_there_and_the_reply_marked_truncated(isolated_home, backend, api):
    with EndlessServer() as server:
        result = run_cli(
            "--backend",
            backend,
            "--url",
            server.root + api,
            "--model",
            MODEL,
            "--max-tokens",
            "20",
            "-p",
            "Tell me everything",
        )
        assert server.client_gone.wait(10), "the stream was never closed"

    assert result.returncode == 0, result.stderr
    words = [f"w{index}" for index in range(20)]
    assert result.stdout.split() == words
    assert result.stderr == "[Info] The reply went on past max-tokens (20); it was stopped there.\n"
    assert server.sent < SAFETY_CAP
    asked = server.asked[0]
    assert (asked.get("max_tokens") or asked["options"]["num_predict"]) == 20  # it was asked, and ignored
    (saved,) = (isolated_home / "data" / "hailo-repl" / "sessions").glob("[!.]*.json")
    reply = json.loads(saved.read_text())["messages"][-1]
    assert reply == {"role": "assistant", "content": " ".join(words), "truncated": True}


def test_a_backend_that_keeps_to_max_tokens_is_not_cut_short():
    chat = Chat(ScriptedBackend(["one ", "two ", "three"]), "Be brief.", GenerationParams(max_tokens=3))
    said: list[str] = []
    assert "".join(chat.reply("Count", threading.Event(), notify=said.append)) == "one two three"
    assert chat.messages[-1] == {"role": "assistant", "content": "one two three", "truncated": True}
    assert said == []


def test_a_chat_larger_than_hailo_repl_reads_back_is_never_written(tmp_path):
    store = SessionStore(tmp_path / "sessions")
    huge = "x" * (MAX_CHAT_FILE_BYTES + (1 << 20))
    chat = Chat(ScriptedBackend(["Paris."], [huge]), "Be brief.", GenerationParams(), store)
    list(chat.reply("Capital of France?", threading.Event()))
    said: list[str] = []
    list(chat.reply("Say a lot", threading.Event(), notify=said.append))

    path = store.path_of(chat.session_id)
    assert said == [
        f"[Error] Cannot save the chat to {path}: it would be larger than the 32 MiB hailo-repl reads back "
        "(/undo drops the last exchange)"
    ]
    # The file holds the chat as it was last saved, and it can be resumed.
    assert [c.id for c in store.chats()] == [chat.session_id]
    resumed = Chat(ScriptedBackend(), "Be brief.", GenerationParams(), store)
    resumed.resume(chat.session_id)
    assert [m["content"] for m in resumed.messages] == ["Be brief.", "Capital of France?", "Paris."]
    # /save refuses it too, and leaves nothing behind.
    elsewhere = tmp_path / "exported.json"
    with pytest.raises(ConversationFileError, match="larger than the 32 MiB hailo-repl reads back"):
        save_conversation(elsewhere, chat.messages, "m")
    assert not elsewhere.exists()
    # /undo drops the exchange, and the next turn is saved again.
    chat.undo()
    list(chat.reply("Say less", threading.Event()))
    assert [m["content"] for m in json.loads(path.read_text())["messages"]][-2:] == ["Say less", "ok"]


def test_a_device_context_too_large_to_read_back_is_never_written(tmp_path, monkeypatch):
    from hailo_repl.backends import hailo_context
    from hailo_repl.private_files import FileTooLarge

    monkeypatch.setattr(hailo_context, "CONTEXT_FILE_LIMIT", 1 << 20)
    tags = hailo_context.ContextTags(hef="model.hef:1:2", hailort="5.2.0", messages="0" * 64)
    path = tmp_path / "chat.ctx"
    hailo_context.write_context(path, tags, b"k" * 1000)
    assert hailo_context.read_context(path) == (tags, b"k" * 1000)

    with pytest.raises(FileTooLarge, match="chat.ctx would be larger than 1 MiB, more than hailo-repl reads"):
        hailo_context.write_context(path, tags, b"k" * (1 << 20))
    assert hailo_context.read_context(path) == (tags, b"k" * 1000)  # the one before is kept
