"""The engine process in real processes on the hailo_platform double (daemon: always): a chat
that outlives its terminal, one engine per user, and what happens when either side is killed.
Every engine a test started is killed by the pid in its lock file at the test's end, passed or
failed (`engines`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pexpect
import pytest
from conftest import hailo_repl_command
from terminal import QWEN, Terminal, with_fakes

from hailo_repl.daemon.lock import written_holder

pytestmark = pytest.mark.e2e

PROMPT = "You: "


def words(count: int) -> list[str]:
    return [f"w{i} " for i in range(count)]


def state() -> Path:
    return Path(os.environ["XDG_STATE_HOME"]) / "hailo-repl"


def engine_pid() -> int | None:
    found = written_holder(state() / "engine.lock")
    return found.pid if found is not None else None


def saved_chats() -> dict[str, dict]:
    folder = Path(os.environ["XDG_DATA_HOME"]) / "hailo-repl" / "sessions"
    return {path.stem: json.loads(path.read_text()) for path in folder.glob("*.json")} if folder.exists() else {}


def wait_until(found, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (result := found()):
        if time.monotonic() > deadline:
            raise AssertionError(f"waiting for {what}: timed out")
        time.sleep(0.02)
    return result


def alive(pid: int) -> bool:
    """Whether process `pid` runs (not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.fixture
def engines(isolated_home, hailo_resources, tmp_path):
    """Starts hailo-repl with `daemon: always` on the double (`chat` in a pty, `piped` without);
    `.log()` reads what the double did. At the end every engine process is killed by the pid in
    its lock file, and every client by its pid."""
    hailo_resources(QWEN)
    log = tmp_path / "fake.jsonl"
    scripts = iter(range(1000))
    clients: list[int] = []
    engine_pids: set[int] = set()

    def env(replies: list, delay_ms: int = 0, **more: str) -> dict[str, str]:
        script = tmp_path / f"script-{next(scripts)}.json"
        script.write_text(json.dumps({"replies": replies, "delay_ms": delay_ms}))
        keep = ("HAILO_RESOURCES_DIR", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME")
        double = {
            "HAILO_FAKE_SCRIPT": str(script),
            "HAILO_FAKE_LOG": str(log),
            "HAILO_FAKE_EXCLUSIVE": str(tmp_path / "hailo-device"),  # one process at a time has it
            "HAILO_REPL_DAEMON": "always",
            **more,
        }
        return with_fakes(double | {k: os.environ[k] for k in keep})

    def chat(replies: list, *args: str, delay_ms: int = 0, cols: int = 120, **more: str) -> Terminal:
        term = Terminal(["--hef-path", QWEN, *args], env(replies, delay_ms, **more), cols=cols, timeout=30)
        clients.append(term.child.pid)
        return term

    def piped(replies: list, *args: str, stdin: str = "", delay_ms: int = 0, **more: str) -> subprocess.Popen:
        process = subprocess.Popen(
            hailo_repl_command() + ["--hef-path", QWEN, *args],
            env=env(replies, delay_ms, **more),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        process.stdin.write(stdin)
        process.stdin.close()
        clients.append(process.pid)
        return process

    def note_engine() -> int:
        pid = wait_until(engine_pid, "the engine process's lock")
        engine_pids.add(pid)
        return pid

    def events() -> list[str]:
        return [json.loads(line)["event"] for line in log.read_text().splitlines()] if log.exists() else []

    chat.piped = piped
    chat.env = env
    chat.events = events
    chat.engine = note_engine
    yield chat
    found = engine_pid()
    for pid in engine_pids | ({found} if found else set()):
        with_kill(pid)
    for pid in clients:
        with_kill(pid)


def with_kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # not a child of the tests (the engine): wait until it is gone
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)


def test_a_client_killed_mid_reply_leaves_the_reply_to_finish_whole_and_c_shows_it_once(engines):
    tokens = words(30)  # 3 s at 10 tokens a second
    first = engines([tokens], delay_ms=100)
    first.expect(PROMPT)
    first.send("tell me\r")
    first.expect_screen(r"w3 ")
    engine = engines.engine()
    os.kill(first.child.pid, signal.SIGKILL)  # the terminal and its client gone at once
    whole = "".join(tokens).strip()
    chat = wait_until(
        lambda: next((cid for cid, c in saved_chats().items() if c["messages"][-1]["content"] == whole), None),
        "the reply saved whole by the engine",
    )
    saved = saved_chats()[chat]["messages"][-1]
    assert saved == {"role": "assistant", "content": whole}  # not interrupted
    assert alive(engine)

    second = engines([["unused"]], "-c")
    second.expect(r"w29")
    second.expect(PROMPT)
    assert second.screen_text(20000).count("w29") == 1  # the reply once
    assert second.screen_text(20000).count("tell me") == 1  # the question once
    assert engines.events().count("vdevice_open") == 1  # the same engine: nothing loaded again
    assert "abort" not in engines.events()


def test_an_engine_killed_mid_reply_ends_the_client_in_one_line_and_the_next_start_opens_the_device_again(engines):
    first = engines([["first", " answer"], words(50)], delay_ms=50)
    first.expect(PROMPT)
    first.send("one\r")
    first.expect("first answer")
    first.expect_reply_end()
    first.send("two\r")
    first.expect_screen(r"w3 ")
    engine = engines.engine()
    os.kill(engine, signal.SIGKILL)
    first.expect(r"engine \(pid \d+\) ended")
    assert first.wait_for_exit() == 1
    [chat] = saved_chats().values()
    assert [m["content"] for m in chat["messages"] if m["role"] != "system"] == ["one", "first answer"]

    second = engines([["again"]], "-c")
    second.expect(PROMPT)
    second.send("three\r")
    second.expect("again")
    second.expect_reply_end()
    assert engines.events().count("vdevice_open") == 2  # a new engine opened the device again
    assert engines.engine() != engine


def test_four_clients_starting_at_once_end_with_one_engine_and_one_device_open(engines):
    terms = [engines([["hi"]]) for _ in range(4)]
    refused, chatting = [], []
    for term in terms:  # the three that came second say where the chat is open, in one line, and exit 1
        if term.expect(r"\[Error\] Chat \w+ is open in pts/\d+", pexpect.TIMEOUT, timeout=15) == 0:
            refused.append(term)
        else:
            chatting.append(term)
    assert len(refused) == 3 and len(chatting) == 1
    assert [term.wait_for_exit() for term in refused] == [1, 1, 1]
    [winner] = chatting
    winner.send("hello\r")
    winner.expect("hi")
    winner.expect_reply_end()
    engine = engines.engine()
    assert engines.events().count("vdevice_open") == 1
    started = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if _is_engine(pid) and alive(pid)]
    assert started == [engine]  # the engines started by the others exited: one engine, no zombie


def _is_engine(pid: int) -> bool:
    try:
        return "\0-m\0hailo_repl.daemon\0" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False
