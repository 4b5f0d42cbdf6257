"""llama-cpp-python's own OpenAI-compatible server on 127.0.0.1 with the bundled SmolLM2, for
the tests (conftest.py's `llama_server` fixture) and benchmarks/bench_remote.py.

--interrupt_requests False (llama_cpp/server/settings.py, ServerSettings): a new request
then waits for the running one instead of cutting it short, so a next reply that comes at
once shows the server saw the previous client go.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from hailo_repl.models import BUNDLED_MODEL_NAME, bundled_gguf_path

DISCONNECTED = "Disconnected from client"  # what llama_cpp/server/app.py prints (get_event_publisher)


class ServerFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start(log: Path, timeout: float = 180) -> tuple[subprocess.Popen[bytes], str]:
    """The running server and its API base URL (…/v1), once it answers /v1/models."""
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf_path())]
    command += ["--model_alias", BUNDLED_MODEL_NAME, "--n_ctx", "4096", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--interrupt_requests", "False"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its "Disconnected" print reaches the log at once
    with open(log, "wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + timeout
    while server.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.2)
    stop(server)
    raise ServerFailed(f"llama_cpp.server did not answer /v1/models:\n{log.read_text(errors='replace')[-2000:]}")


def stop(server: subprocess.Popen[bytes]) -> None:
    """By its pid: SIGTERM, then SIGKILL if it will not go."""
    if server.poll() is not None:
        return
    os.kill(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
