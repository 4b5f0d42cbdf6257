"""A remote server that answers with a redirect: one line that says it was redirected, to
where, and that it was not followed, so the API key never reaches the other server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from hailo_repl.backends.base import BackendError, GenerationParams
from hailo_repl.backends.ollama import OllamaBackend
from hailo_repl.backends.openai import OpenAIBackend
from hailo_repl.chat import Chat
from hailo_repl.servers import Endpoint

KEY = "sk-secret"


class Recorder:
    """A server on 127.0.0.1 that answers every request with `status` and a Location
    (absolute, or a path on itself), and notes each request it gets."""

    def __init__(self, status: int = 200, location: str | None = None):
        self.status, self.location = status, location
        self.seen: list[tuple[str, str | None]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def answer(self) -> None:
                recorder.seen.append((self.path, self.headers.get("Authorization")))
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(recorder.status)
                if recorder.location:
                    self.send_header("Location", recorder.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def moved() -> Iterator[tuple[Recorder, Recorder]]:
    """(the server --url names, which redirects, the server it redirects to)."""
    with Recorder() as elsewhere:
        with Recorder(location=f"{elsewhere.url}/v1/chat/completions") as first:
            yield first, elsewhere


def backend(kind: str, url: str):
    if kind == "openai":
        return OpenAIBackend(Endpoint(f"{url}/v1", api_key=KEY), "some-model", context_size=2048)
    return OllamaBackend(Endpoint(url, api_key=KEY), "some-model", context_size=2048)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_a_redirected_reply_says_where_and_that_it_was_not_followed(kind, status, moved):
    first, elsewhere = moved
    first.status = status
    chat = Chat(backend(kind, first.url), "Be brief.", GenerationParams(max_tokens=8))

    with pytest.raises(BackendError) as failed:
        "".join(chat.reply("hi", threading.Event()))

    message = str(failed.value)
    assert message.startswith(f"HTTP {status} from {first.url}/")
    assert f"redirects to {elsewhere.url}/v1/chat/completions" in message
    assert "does not follow redirects" in message and "ended before the server said it was done" not in message
    assert elsewhere.seen == []  # the key stayed with the server --url names
    assert [auth for _, auth in first.seen] == [f"Bearer {KEY}"]


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_a_redirected_model_list_says_so_too(kind, moved):
    first, elsewhere = moved
    first.status = 308
    first.location = "/elsewhere/models"  # a relative Location is resolved against the request

    with pytest.raises(BackendError) as failed:
        backend(kind, first.url).list_models()

    assert f"the server redirects to {first.url}/elsewhere/models" in str(failed.value)
    assert "does not follow redirects" in str(failed.value)
    assert len(first.seen) == 1 and elsewhere.seen == []


def test_a_3xx_without_a_location_is_one_line_with_its_status(moved):
    first, _ = moved
    first.status, first.location = 304, None
    with pytest.raises(BackendError, match=r"^HTTP 304 from .*/v1/models"):
        backend("openai", first.url).list_models()
