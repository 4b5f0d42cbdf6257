"""Where a remote backend connects: its URL and API key, as each ecosystem defines them.

- Ollama: the server root (`http://host:11434`); `OLLAMA_HOST` is read as the Ollama CLI
  reads it (ollama/ollama, envconfig/config.go, `Host()`): quotes and spaces trimmed,
  `http` when no scheme is given, port 11434 when none is given (80/443 for an explicit
  http/https scheme), a bare IP or host name allowed.
- hailo-ollama (hailo-ai/hailo_model_zoo_genai): Ollama's protocol, on port 8000 by default
  (config/hailo-ollama.json); `OLLAMA_HOST` names an Ollama, not it.
- OpenAI-compatible servers: the API base (`http://host:8000/v1`), `OPENAI_BASE_URL`, and
  `OPENAI_API_KEY`, which is sent only to the URL it is paired with (`OPENAI_BASE_URL`, or
  OpenAI's own API when that is unset): a key must never leak to a server the user named
  for something else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from hailo_repl.typed_numbers import whole_number

OLLAMA = "ollama"
HAILO_OLLAMA = "hailo-ollama"
OPENAI = "openai"
REMOTE_BACKENDS = (OLLAMA, HAILO_OLLAMA, OPENAI)

OLLAMA_DEFAULT_PORT = "11434"
HAILO_OLLAMA_DEFAULT_PORT = "8000"  # config/hailo-ollama.json
HAILO_OLLAMA_DEFAULT_URL = f"http://127.0.0.1:{HAILO_OLLAMA_DEFAULT_PORT}"
OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
DEFAULT_CONTEXT_SIZE = 4096  # a server's model's context when neither the server nor --context-size says


class Endpoint(NamedTuple):
    """Where a remote engine listens, and the key it wants, if any."""

    url: str  # Ollama's server root, or an OpenAI-compatible API base ending in /v1
    api_key: str | None = None  # sent as `Authorization: Bearer …`


def ollama_host(value: str, hailo_ollama: bool = False) -> str:
    """`OLLAMA_HOST` (or an Ollama `--url`) as the URL the Ollama CLI would connect to; for
    hailo-ollama a missing port is its 8000 whatever the scheme."""
    text = value.strip().strip("\"'").strip()
    default_port = HAILO_OLLAMA_DEFAULT_PORT if hailo_ollama else OLLAMA_DEFAULT_PORT
    scheme, separator, hostport = text.partition("://")
    if not separator:
        scheme, hostport = ("https", "ollama.com:443") if text == "ollama.com" else ("http", text)
    elif scheme == "http" and not hailo_ollama:
        default_port = "80"
    elif scheme == "https" and not hailo_ollama:
        default_port = "443"
    hostport, _, path = hostport.partition("/")
    host, port = _split_host_port(hostport)
    if port is None:
        port = default_port
    if not host:
        host = "127.0.0.1"
    number = whole_number(port)
    port = str(number) if number is not None and 0 <= number <= 65535 else default_port  # (ASCII digits in a URL)
    if ":" in host:  # an IPv6 address goes in brackets
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}" + (f"/{path}" if path else "")


def _split_host_port(hostport: str) -> tuple[str, str | None]:
    """('host', 'port'), or ('host', None) when no port is given (Go's net.SplitHostPort, forgiving)."""
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    import ipaddress  # here: ~1 ms of every start otherwise, for remote backends only

    try:
        ipaddress.IPv6Address(hostport)
        return hostport, None  # a bare IPv6 address has colons but no port
    except ValueError:
        pass
    host, separator, port = hostport.rpartition(":")
    return (host, port) if separator else (hostport, None)


def resolve_endpoint(backend: str, url: str | None, api_key: str | None, environ: Mapping[str, str]) -> Endpoint:
    """The URL and key for `backend` from the flags (`url`, `api_key`) and the environment."""
    if backend == OPENAI:
        env_url = environ.get("OPENAI_BASE_URL", "").strip() or OPENAI_DEFAULT_URL
        chosen = (url or env_url).rstrip("/")
        if api_key is None and chosen == env_url.rstrip("/"):
            api_key = environ.get("OPENAI_API_KEY") or None
        return Endpoint(chosen, api_key)
    if backend == HAILO_OLLAMA:
        return Endpoint(ollama_host(url or "", hailo_ollama=True), api_key)
    return Endpoint(ollama_host(url if url is not None else environ.get("OLLAMA_HOST", "")), api_key)
