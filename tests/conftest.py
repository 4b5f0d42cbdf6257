"""Shared fixtures: the hailo_platform double on sys.path, fake HEFs, the installed CLI, and
llama-cpp-python's server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import llama_server as llama_server_process
import pytest
from terminal import FAKES, hailo_repl_command, with_fakes

if str(FAKES) not in sys.path:
    sys.path.insert(0, str(FAKES))  # in-process tests import the double as hailo_platform
# A saved device context on the double is as large and as slow as a real one (112 MiB, seconds
# with the GIL held): tests that are not about that cost keep it small (the installed program
# the e2e tests run inherits these); those about it set the script's own keys.
os.environ.setdefault("HAILO_FAKE_CONTEXT_BYTES", str(64 * 1024))
os.environ.setdefault("HAILO_FAKE_CONVERT_MS_PER_MB", "0")


@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    """XDG dirs in tmp so tests never touch the user's history or logs."""
    for variable, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"), ("XDG_STATE_HOME", "state")):
        monkeypatch.setenv(variable, str(tmp_path / sub))
    monkeypatch.delenv("HAILO_RESOURCES_DIR", raising=False)
    return tmp_path


@pytest.fixture
def hailo_resources(tmp_path, monkeypatch):
    """A resources dir with fake HEFs; returns a function adding models by name."""
    root = tmp_path / "resources"
    directory = root / "models" / "hailo10h"
    directory.mkdir(parents=True)
    monkeypatch.setenv("HAILO_RESOURCES_DIR", str(root))

    def add(*names: str) -> Path:
        for name in names:
            (directory / f"{name}.hef").write_bytes(b"fake hef")
        return directory

    add.directory = directory
    add.facts = tmp_path / "hailo-device-facts.json"  # what the device has shown (self-check, save figures)
    return add


@pytest.fixture
def fake_script(tmp_path, monkeypatch):
    """Write a HAILO_FAKE_SCRIPT for the double; returns the writer."""

    def write(script) -> Path:
        path = tmp_path / "script.json"
        path.write_text(json.dumps(script))
        monkeypatch.setenv("HAILO_FAKE_SCRIPT", str(path))
        return path

    return write


@pytest.fixture
def loaded_hailo_backend(hailo_resources, fake_script):
    """Each call: a HailoBackend on the double whose device replies as `script` says, loaded as a
    new hailo-repl process loads it; all released afterwards."""
    from hailo_repl.backends.hailo import HailoBackend, installed_hailort_version
    from hailo_repl.backends.hailo_context import hef_identity
    from hailo_repl.backends.hailo_selfcheck import DeviceFacts

    directory = hailo_resources("Qwen2.5-1.5B-Instruct")
    opened = []

    def open_with(script, context_cache: Path | None = None, passed_self_check: bool = True) -> HailoBackend:
        """`passed_self_check`: as on a device where this HEF passed it before (else it runs at load)."""
        fake_script(script)
        hef = directory / "Qwen2.5-1.5B-Instruct.hef"
        if passed_self_check:
            passed = {"passed": True, "detail": "as the test says"}
            DeviceFacts(hailo_resources.facts).remember(
                hef_identity(hef), installed_hailort_version(), "text_path", passed
            )
        backend = HailoBackend(hef, context_cache=context_cache, facts_file=hailo_resources.facts)
        backend.load()
        opened.append(backend)
        return backend

    yield open_with
    for backend in opened:
        backend.release()


@pytest.fixture
def fake_log(tmp_path, monkeypatch):
    """HAILO_FAKE_LOG for the double; returns a reader of the recorded events."""
    path = tmp_path / "fake-hailo.jsonl"
    monkeypatch.setenv("HAILO_FAKE_LOG", str(path))

    def events() -> list[dict]:
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    return events


def run_cli(*args: str, stdin: str | None = None, env: dict | None = None, fakes: bool = False, timeout: float = 180):
    """Run the installed hailo-repl with no terminal; returns CompletedProcess."""
    environment = with_fakes() if fakes else dict(os.environ)
    environment.update(env or {})
    return subprocess.run(
        hailo_repl_command() + list(args),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
    )


@dataclass
class LlamaServer:
    url: str  # the API base, ending in /v1
    model: str
    log: Path  # what the server printed

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """llama-cpp-python's server with the bundled SmolLM2 on 127.0.0.1 (tests/llama_server.py)."""
    from hailo_repl.models import BUNDLED_MODEL_NAME

    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    try:
        server, url = llama_server_process.start(log)
    except llama_server_process.ServerFailed as error:
        pytest.fail(str(error))
    try:
        yield LlamaServer(url, BUNDLED_MODEL_NAME, log)
    finally:
        llama_server_process.stop(server)
