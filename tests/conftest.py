"""Shared fixtures: the hailo_platform double on sys.path, fake HEFs, the CLI run in-process and
installed, and llama-cpp-python's server."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import llama_server as llama_server_process
import pytest
from terminal import FAKES, QWEN, Terminal, hailo_repl_command, user_messages_sent, with_fakes

if str(FAKES) not in sys.path:
    sys.path.insert(0, str(FAKES))  # in-process tests import the double as hailo_platform
# A saved device context on the double is as large and as slow as a real one (112 MiB, seconds
# with the GIL held): tests that are not about that cost keep it small (the installed program
# the e2e tests run inherits these); those about it set the script's own keys.
os.environ.setdefault("HAILO_FAKE_CONTEXT_BYTES", str(64 * 1024))
os.environ.setdefault("HAILO_FAKE_CONVERT_MS_PER_MB", "0")
# A test's chat runs in its own process unless the test asks for the engine process (the default,
# `auto`, would leave a per-user engine behind each test's home): tests/test_e2e_daemon.py does.
os.environ.setdefault("HAILO_REPL_DAEMON", "never")


def _logging_as_a_hailo_repl_process_has_it() -> None:
    """Every hailo-repl process sets up its log before anything logs (no sink on the terminal);
    the tests' process too, so a test run alone logs as one run after others does (loguru's
    default sink, added on whatever sys.stderr is when it first loads, is never used: the llama
    backend's load redirects stderr into the log, and a sink on that looped)."""
    from hailo_repl.log import setup_logging

    setup_logging(to_file=False)


_logging_as_a_hailo_repl_process_has_it()

# The Debian package of each program a test runs (@pytest.mark.needs).
PACKAGES = {"bash": "bash", "zsh": "zsh", "fish": "fish", "tmux": "tmux"}


def running_in_ci() -> bool:
    """CI=true (as CI services and .ci/run set it): every test must run there."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked `needs("zsh")` is skipped where zsh is missing, its reason naming the package
    to install; in CI it fails instead, so a CI machine without it cannot pass by skipping."""
    for marker in item.iter_markers("needs"):
        for program in marker.args:
            if shutil.which(program) is None:
                install = f"sudo apt install {PACKAGES.get(program, program)}"
                if running_in_ci():
                    pytest.fail(f"{program} is not installed, and CI runs every test ({install})", pytrace=False)
                pytest.skip(f"{program} is not installed ({install})")


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
def log_lines():
    """hailo-repl's log messages (INFO and up) while the test runs."""
    # hailo-repl's logger: its first use applies the set-up pending (which removes every sink), so
    # the sink is added after it, not removed by the test's first log line.
    from hailo_repl.log import logger

    lines: list[str] = []
    sink = logger.add(lines.append, level="INFO", format="{message}")
    yield lines
    logger.remove(sink)


@pytest.fixture
def fake_script(tmp_path, monkeypatch):
    """Write a HAILO_FAKE_SCRIPT for the double; returns the writer."""

    def write(script) -> Path:
        path = tmp_path / "script.json"
        path.write_text(json.dumps(script))
        monkeypatch.setenv("HAILO_FAKE_SCRIPT", str(path))
        return path

    return write


def remember_device(hef: Path, facts: Path, passed: bool = True, loads_pay: bool = True) -> None:
    """Write the facts a device would have shown: the self-check's verdict and, with `loads_pay`,
    figures by which loading any kept context beats reading it again (a load of 1 ms, a prefill
    of 1 s a token)."""
    from hailo_repl.backends.hailo_device import installed_hailort_version
    from hailo_repl.backends.hailo_selfcheck import DeviceFacts, device_key

    key = device_key(hef, installed_hailort_version())
    facts_file = DeviceFacts(facts)
    facts_file.remember(key, "text_path", {"passed": passed, "detail": "as the test says"})
    if loads_pay:
        facts_file.remember(key, "load", {"bytes": 1000, "device_ms": 1, "file_ms": 0})
        facts_file.remember(key, "prefill", {"short": [1, 10], "long": [1001, 1_000_010]})


def remember_qwen_where_keeping_pays(hailo_resources) -> None:
    """For a hailo-repl process this test starts: the double's Qwen HEF has shown figures by which
    keeping its device context pays (so a chat's and the system prompt's contexts are kept)."""
    facts = Path(os.environ["XDG_DATA_HOME"]) / "hailo-repl" / "contexts" / "hailo-device-facts.json"
    remember_device(hailo_resources.directory / "Qwen2.5-1.5B-Instruct.hef", facts)


@pytest.fixture
def loaded_hailo_backend(hailo_resources, fake_script):
    """Each call: a HailoBackend on the double whose device replies as `script` says, loaded as a
    new hailo-repl process loads it; all released afterwards."""
    from hailo_repl.backends.hailo import HailoBackend

    directory = hailo_resources("Qwen2.5-1.5B-Instruct")
    opened = []

    def open_with(
        script, context_cache: Path | None = None, passed_self_check: bool = True, loads_pay: bool = True, keeping=None
    ) -> HailoBackend:
        """`passed_self_check`: as on a device where this HEF passed it before (else it runs at load);
        `loads_pay`: its figures say a load beats reading again whatever a context holds (else
        they are what the self-check, or nothing, measured)."""
        fake_script(script)
        hef = directory / "Qwen2.5-1.5B-Instruct.hef"
        if passed_self_check:
            remember_device(hef, hailo_resources.facts, loads_pay=loads_pay)
        backend = HailoBackend(hef, context_cache=context_cache, facts_file=hailo_resources.facts, keeping=keeping)
        backend.load()
        opened.append(backend)
        return backend

    yield open_with
    for backend in opened:
        backend.release()


class FakeLog:
    """What the double did (its HAILO_FAKE_LOG, one JSON event a line), read afresh at each call."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]

    def named(self, name: str) -> list[dict]:
        """The events called `name` ("generate", "abort", "save_context"…), in order."""
        return [event for event in self() if event["event"] == name]

    def names(self) -> list[str]:
        return [event["event"] for event in self()]

    def user_messages_sent(self) -> list[str]:
        """The newest user message of each generate() the double saw."""
        return user_messages_sent(self.named("generate"))


@pytest.fixture
def fake_log(tmp_path, monkeypatch):
    """HAILO_FAKE_LOG for the double (in this process and in those it starts); its reader."""
    path = tmp_path / "fake-hailo.jsonl"
    monkeypatch.setenv("HAILO_FAKE_LOG", str(path))
    return FakeLog(path)


@pytest.fixture(autouse=True)
def _terminals_closed():
    """Each Terminal a test opened is closed at its end, and what it started stopped, even when
    the test failed before it quit."""
    yield
    Terminal.close_all()


@pytest.fixture
def double_terminal(isolated_home, hailo_resources, fake_log, tmp_path):
    """Starts the installed hailo-repl in a pseudo-terminal on the hailo_platform double:
    `double_terminal(script, *args, hef=QWEN, rows=30, cols=110, timeout=120, **env)`, where
    `script` is the double's HAILO_FAKE_SCRIPT (replies, delays, stalls…), `args` more command-line
    arguments, `hef` the --hef-path (None: none given) and `env` more environment. `.log` reads
    what the double did (fake_log); `.env(script)` is the environment for a run with no terminal.
    The terminals are closed at the test's end."""
    hailo_resources(QWEN)
    scripts = itertools.count()

    def changes(script: dict, **more: str) -> dict[str, str]:
        """What the environment needs beside this process's: the double and its script."""
        path = tmp_path / f"script-{next(scripts)}.json"
        path.write_text(json.dumps(script))
        return {"PYTHONPATH": with_fakes()["PYTHONPATH"], "HAILO_FAKE_SCRIPT": str(path), **more}

    def env(script: dict, **more: str) -> dict[str, str]:
        return {**os.environ, **changes(script, **more)}

    def start(
        script: dict | None = None,
        *args: str,
        hef: str | None = QWEN,
        rows: int = 30,
        cols: int = 110,
        timeout: float = 120,
        **more_env: str,
    ) -> Terminal:
        model = ["--hef-path", hef] if hef else []
        environment = changes(script or {"replies": [["Hello", " there"]]}, **more_env)
        return Terminal([*model, *args], environment, rows=rows, cols=cols, timeout=timeout)

    start.log = fake_log
    start.env = env
    return start


def run_cli(*args: str, stdin: str | None = None, env: dict | None = None, fakes: bool = False):
    """hailo-repl's main() run in this process as the installed command runs with no terminal:
    stdin, stdout and stderr are UTF-8 pipes, the environment is this one plus `env`, and
    hailo_platform is the double, imported afresh, only if it is on that environment's
    PYTHONPATH (`fakes` puts it there). Returns what the process would have: its exit code,
    stdout and stderr. Tests of what only a process has (signals, a pipe closed under it,
    llama.cpp writing to file descriptor 2, the installed entry point) use run_installed."""
    from hailo_repl.cli import main

    environment = with_fakes() if fakes else dict(os.environ)
    environment.update(env or {})
    with _as_in_a_new_process(environment, stdin or "") as (stdout, stderr):
        try:
            code = main(list(args))
        except SystemExit as exit:  # argparse's usage errors, --help, --version
            code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    return subprocess.CompletedProcess(
        ["hailo-repl", *args], code, stdout.getvalue().decode(), stderr.getvalue().decode()
    )


@contextlib.contextmanager
def _as_in_a_new_process(environment: dict[str, str], stdin: str) -> Iterator[tuple[io.BytesIO, io.BytesIO]]:
    """What main() reads or changes of its process, as a new process would have it, and put back
    afterwards: the environment, the standard streams (yields what stdout and stderr received),
    the handlers of the signals it handles, the log's sink, and hailo_platform (imported afresh,
    or not at all)."""
    from hailo_repl.log import setup_logging

    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    saved_double = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "hailo_platform"}
    for name in saved_double:
        del sys.modules[name]
    if str(FAKES) not in environment.get("PYTHONPATH", "").split(os.pathsep):
        sys.modules["hailo_platform"] = None  # not installed: importing it raises ImportError
    stdout, stderr = io.BytesIO(), io.BytesIO()
    writers = (
        io.TextIOWrapper(stdout, encoding="utf-8", write_through=True),
        io.TextIOWrapper(stderr, encoding="utf-8", errors="backslashreplace", write_through=True),
    )
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding="utf-8")
    sys.stdout, sys.stderr = writers
    try:
        with mock.patch.dict(os.environ, environment, clear=True):
            yield stdout, stderr
    finally:
        for writer in writers:
            writer.flush()
            writer.detach()  # closing the wrapper would close what it wrote
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        for signum, handler in saved_handlers.items():
            signal.signal(signum, handler)
        setup_logging(to_file=False)  # the run's log file is in a temporary home about to go
        for name in [name for name in sys.modules if name.split(".")[0] == "hailo_platform"]:
            del sys.modules[name]
        sys.modules.update(saved_double)


def run_installed(
    *args: str, stdin: str | None = None, env: dict | None = None, fakes: bool = False, timeout: float = 180
):
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
