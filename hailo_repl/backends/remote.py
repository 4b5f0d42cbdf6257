"""What the Ollama and OpenAI backends share: the HTTP client, a reply read so that Ctrl+C
closes it at once, estimates where a server gives no counts, and each failure as one line
that says what to check.

- A reply is one HTTP request on a connection of its own (no keep-alive), read on a thread
  of its own. The connection's socket is caught as it opens (httpcore's `trace` request
  extension), so a cancel shuts it down at once, even while the server has sent nothing
  yet (a model loading); Ollama, llama.cpp's servers and vLLM stop generating when the
  client goes away.
- The whole conversation goes out every turn; the servers reuse their KV cache for the
  prefix they already hold. hailo-ollama does so only when the new prompt extends its last
  one character for character (hailo-ai/hailo_model_zoo_genai,
  src/library/generation_context/generation_context.cpp, `generate_one`), so a reply goes
  back exactly as the server sent it, not as it was cleaned for the screen.
"""

from __future__ import annotations

import functools
import json
import queue
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from hailo_repl.backends.base import (
    BackendError,
    GenerationParams,
    Message,
    Notice,
    ReplyStream,
    one_generation_at_a_time,
)
from hailo_repl.servers import DEFAULT_CONTEXT_SIZE, Endpoint
from hailo_repl.streaming import clean_response

CONNECT_SECONDS = 10.0
REQUEST_SECONDS = 30.0  # a model list or a model's details
STALL_SECONDS = 300.0  # no byte from the server for this long during a reply: it is reported as stuck
WAIT_NOTICE_SECONDS = 5.0  # no first token yet: say that we wait (a server loading a model is slow)
POLL_SECONDS = 0.02  # how often a reply that waits for the server looks at its cancel event
CHARS_PER_TOKEN = 3.0  # estimate, on the safe side, until the server reports a count
MESSAGE_OVERHEAD_TOKENS = 4  # the chat template's markers around each message


# What the reader thread hands over: a line, the error that ended the reply, or None at its end.
LineQueue = queue.Queue[str | BaseException | None]


@dataclass
class Chunk:
    """What one line of a reply's stream says."""

    text: str = ""
    done: bool = False  # the server says the reply is complete
    prompt_tokens: int | None = None
    reply_tokens: int | None = None


def server_error_text(data: Any) -> str:
    """The server's own words from an error body: Ollama's {"error": "…"}, OpenAI's
    {"error": {"message": "…"}}, FastAPI's {"detail": …}, or the text itself."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return data.strip()[:300] or "no details"
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return str(error)[:300]
    return str(data)[:300]


def token_count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The certificates httpx would load for each client (certifi's, or SSL_CERT_FILE/DIR), loaded
    once a process: reading the bundle takes tens of milliseconds, and each backend has a client."""
    return httpx.create_ssl_context()


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class _Connection:
    """A reply's socket, caught as httpcore opens it, so that another thread can shut it."""

    OPENED = ("connection.connect_tcp.complete", "connection.start_tls.complete")

    def __init__(self) -> None:
        self._stream: Any = None
        self._shut = False
        self._lock = threading.Lock()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event in self.OPENED:
            with self._lock:
                self._stream = info.get("return_value")
            if self._shut:  # the cancel came while the connection was opening
                self.shut()

    def shut(self) -> None:
        """Shut the socket down: a read blocked on it returns, and the server sees the client go."""
        with self._lock:
            self._shut = True
            stream = self._stream
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            try:
                # socket.socket's own method: for TLS, SSLSocket.shutdown would also drop its
                # SSL object under the reading thread.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass  # already closed


class RemoteBackend:
    """The shared part of a backend on a server; subclasses say what to send and how to read it."""

    name = "remote"
    loads_in_background = True  # HTTP leaves the GIL free
    chat_path = ""
    url_hint = ""  # what --url should look like for this protocol
    key_hint = "--api-key"  # where the API key comes from

    def __init__(self, endpoint: Endpoint, model_name: str, context_size: int | None = None, name: str | None = None):
        self.endpoint = endpoint
        self.model_name = model_name
        self.name = name or self.name
        self.last_prompt_tokens = 0
        self._context_size = context_size  # --context-size: the user's word beats the server's
        self._capacity = context_size or DEFAULT_CONTEXT_SIZE
        self._capacity_known = context_size is not None
        self._used = 0
        self._used_known = True
        self._chars_per_token = CHARS_PER_TOKEN
        self._raw_replies: dict[str, str] = {}  # a reply as the conversation keeps it → as the server sent it
        self._busy = threading.Lock()
        self._client: httpx.Client | None = None

    # ---- what a protocol says ----------------------------------------------------

    def request_body(self, messages: Sequence[Message], params: GenerationParams) -> dict[str, Any]:
        raise NotImplementedError

    def parse_line(self, line: str) -> Chunk | None:
        """One line of the reply's stream; None for a line that carries nothing."""
        raise NotImplementedError

    def list_models(self) -> list[str]:
        raise NotImplementedError

    def server_context_size(self) -> int | None:
        """The model's context size as the server gives it, if it does; fails if the model is unknown."""
        raise NotImplementedError

    def with_model(self, name: str) -> RemoteBackend:
        """The same server with another model (not loaded yet)."""
        return type(self)(self.endpoint, name, self._context_size, self.name)

    # ---- the backend protocol ----------------------------------------------------

    def load(self) -> None:
        size = self.server_context_size()
        if self._context_size is None and size:
            self._capacity, self._capacity_known = size, True

    @property
    def context_used(self) -> int:
        return self._used

    @property
    def context_capacity(self) -> int:
        return self._capacity

    @property
    def context_is_estimate(self) -> bool:
        return not (self._capacity_known and self._used_known)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """An estimate: these servers count tokens only for what they are sent."""
        return sum(self._estimate_text(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)

    def _estimate_text(self, text: str) -> int:
        return int(len(text) / self._chars_per_token) + 1

    def clear(self) -> None:
        self._used, self._used_known = 0, True
        self._raw_replies = {}

    def release(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def stream(self, messages: Sequence[Message], params: GenerationParams, cancel: threading.Event) -> ReplyStream:
        with one_generation_at_a_time(self._busy):
            yield from self._generate(self._as_sent(messages), params, cancel)

    def _as_sent(self, messages: Sequence[Message]) -> list[Message]:
        """The conversation with each earlier reply as the server sent it (see the module docstring)."""
        return [
            {"role": m["role"], "content": self._raw_replies.get(m["content"], m["content"])}
            if m["role"] == "assistant"
            else m
            for m in messages
        ]

    def _generate(self, messages: list[Message], params: GenerationParams, cancel: threading.Event) -> ReplyStream:
        reply: list[str] = []
        counts = Chunk()
        try:
            for line in self._lines(self.request_body(messages, params), cancel):
                if isinstance(line, Notice):
                    yield line
                    continue
                chunk = self.parse_line(line)
                if chunk is None:
                    continue
                counts.done = counts.done or chunk.done
                counts.prompt_tokens = chunk.prompt_tokens if chunk.prompt_tokens is not None else counts.prompt_tokens
                counts.reply_tokens = chunk.reply_tokens if chunk.reply_tokens is not None else counts.reply_tokens
                if chunk.text:
                    reply.append(chunk.text)
                    yield chunk.text
            if not counts.done and not cancel.is_set():
                raise BackendError(
                    f"the reply from {self.endpoint.url} ended before the server said it was done: "
                    f"check the server's log"
                )
        finally:
            self._account(messages, "".join(reply), counts)

    def _account(self, messages: list[Message], raw: str, counts: Chunk) -> None:
        """Context use after a reply: the server's counts where it sent them, else estimates."""
        if counts.prompt_tokens:
            text = sum(len(m["content"]) for m in messages)
            tokens = counts.prompt_tokens - MESSAGE_OVERHEAD_TOKENS * len(messages)
            if tokens > 0 and text > 0:
                self._chars_per_token = text / tokens
        prompt = counts.prompt_tokens if counts.prompt_tokens is not None else self.count_tokens(messages)
        generated = counts.reply_tokens if counts.reply_tokens is not None else self._estimate_text(raw)
        self.last_prompt_tokens = prompt
        self._used = prompt + generated
        self._used_known = counts.prompt_tokens is not None and counts.reply_tokens is not None
        if raw:
            self._raw_replies[clean_response(raw)] = raw

    # ---- HTTP --------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            key = self.endpoint.api_key
            self._client = httpx.Client(
                base_url=self.endpoint.url,
                headers={"Authorization": f"Bearer {key}"} if key else {},
                timeout=httpx.Timeout(STALL_SECONDS, connect=CONNECT_SECONDS),
                limits=httpx.Limits(max_keepalive_connections=0),  # one connection per request: see _Connection
                verify=_tls_context(),
            )
        return self._client

    def _lines(self, body: dict[str, Any], cancel: threading.Event) -> Iterator[str]:
        """The reply's lines (and a Notice while the server keeps us waiting); ends at once
        when `cancel` is set, shutting the connection."""
        lines: LineQueue = queue.Queue()
        connection = _Connection()
        reader = threading.Thread(
            target=self._read, args=(body, lines, connection), name="hailo-repl-http", daemon=True
        )
        reader.start()
        started = time.monotonic()
        heard = noticed = False
        try:
            while not cancel.is_set():
                try:
                    item = lines.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    if not heard and not noticed and time.monotonic() - started > WAIT_NOTICE_SECONDS:
                        noticed = True
                        yield Notice(f"waiting for the server… (it may be loading {self.model_name}; Ctrl+C stops)")
                    continue
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item if isinstance(item, BackendError) else self.failure(item)
                heard = True
                yield item
        finally:
            connection.shut()  # a reader still reading ends now

    def _read(self, body: dict[str, Any], lines: LineQueue, connection: _Connection) -> None:
        """The reader thread: the response's lines into `lines`, then None, or the error."""
        try:
            trace = {"trace": connection.trace}
            with self.client.stream("POST", self.chat_path, json=body, extensions=trace) as response:
                if not response.is_success:
                    response.read()
                    lines.put(self._status_error(response))
                    return
                for line in response.iter_lines():
                    lines.put(line)
            lines.put(None)
        except Exception as error:  # handed to the reading side, which says what it means
            lines.put(error)

    def get_json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A small request's JSON object; BackendError (one line) on any failure."""
        try:
            response = self.client.request(
                method, path, json=body, timeout=httpx.Timeout(REQUEST_SECONDS, connect=CONNECT_SECONDS)
            )
        except httpx.HTTPError as error:
            raise self.failure(error) from None
        if not response.is_success:
            raise self._status_error(response)
        data = self.json_object(response.text)
        if "error" in data:  # hailo-ollama answers a failure with HTTP 200 and {"error": …} (controller.cpp)
            raise BackendError(f"{response.request.url}: {server_error_text(data)}; {self.model_hint}")
        return data

    def json_object(self, text: str) -> dict[str, Any]:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise BackendError(
                f"{self.endpoint.url} sent something other than JSON ({text[:60]!r}): "
                f"is that the server you mean? {self.url_hint}"
            )
        return data

    @property
    def model_hint(self) -> str:
        return f"`hailo-repl --backend {self.name} --url {self.endpoint.url} --list-models` lists its models"

    def _status_error(self, response: httpx.Response) -> BackendError:
        """Any answer but 2xx, in one line with what to check."""
        status = response.status_code
        if response.has_redirect_location:
            # Not followed (httpx's default): the API key goes to --url's server and nowhere else.
            location = response.headers["location"][:300]
            try:
                target = str(response.request.url.join(location))
            except httpx.InvalidURL:
                target = location
            return BackendError(
                f"HTTP {status} from {response.request.url}: the server redirects to {target}; "
                f"hailo-repl does not follow redirects (an API key goes only to the server --url names) — "
                f"if the server has moved, give its new address with --url"
            )
        if status in (401, 403):
            hint = f"check the API key ({self.key_hint})"
        elif status == 404:
            hint = f"check the URL ({self.url_hint}) and the model name; {self.model_hint}"
        else:
            hint = "check the server's log"
        return BackendError(f"HTTP {status} from {response.request.url}: {server_error_text(response.text)} — {hint}")

    def failure(self, error: BaseException) -> BackendError:
        """What a transport error means, in one line with what to check."""
        where = self.endpoint.url
        if isinstance(error, httpx.ConnectTimeout):
            message = f"{where} did not answer within {CONNECT_SECONDS:.0f} s: check the host and the firewall"
        elif isinstance(error, httpx.ConnectError) and _caused_by(error, socket.gaierror):
            message = f"cannot resolve the host name in {where}: check its spelling ({self.url_hint})"
        elif isinstance(error, httpx.ConnectError) and _caused_by(error, ConnectionRefusedError):
            message = f"nothing answers at {where}: is the server running, on that port? ({self.url_hint})"
        elif isinstance(error, httpx.ConnectError):
            message = f"cannot connect to {where}: {error} ({self.url_hint})"
        elif isinstance(error, httpx.ReadTimeout):
            message = f"{where} sent nothing for {STALL_SECONDS:g} s: check the server (its log, its load)"
        elif isinstance(error, (httpx.RemoteProtocolError, httpx.ReadError)):
            message = f"{where} closed the connection in the middle of the reply: check the server's log"
        else:
            message = f"talking to {where} failed: {error or type(error).__name__}"
        return BackendError(message)
