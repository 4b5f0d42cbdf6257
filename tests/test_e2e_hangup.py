"""A hang-up (the terminal or the SSH link gone) in the installed hailo-repl on the double: the
reply in flight runs to its end and is saved whole, and a new hailo-repl that needs the Hailo
device or that chat meanwhile says which pid it waits for, waits, then starts. A stale entry in
the lock file (its pid gone, or given to another program since) costs no wait."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import hailo_repl_command
from terminal import Terminal, exit_code_of, wait_until, with_fakes

pytestmark = pytest.mark.e2e

QWEN = "Qwen2.5-1.5B-Instruct"
PROMPT = "You: "


def words(count: int) -> list[str]:
    return [f"w{i} " for i in range(count)]


def lock_file() -> Path:
    return Path(os.environ["XDG_STATE_HOME"]) / "hailo-repl" / "hailo-repl.lock"


def lock_holders() -> list[dict]:
    try:
        return json.loads(lock_file().read_text())["holders"]
    except FileNotFoundError:
        return []


def saved_chat(chat: str) -> dict:
    return json.loads((Path(os.environ["XDG_DATA_HOME"]) / "hailo-repl" / "sessions" / f"{chat}.json").read_text())


def start_time_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[22 - 3])


def stop_if_running(pid: int) -> None:
    """Kill child `pid` if it has not ended; one already waited for is left alone (its pid may
    be another process's by now)."""
    try:
        if os.waitpid(pid, os.WNOHANG) == (0, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    except ChildProcessError:
        pass


@pytest.fixture
def double(isolated_home, hailo_resources, tmp_path):
    """Starts hailo-repl on the double in a pty (`chat`) or with pipes (`piped`); every process
    still running at the end is killed by its pid."""
    hailo_resources(QWEN)
    log = tmp_path / "fake.jsonl"
    pids: list[int] = []

    def env(replies: list, delay_ms: int = 0) -> dict[str, str]:
        script = tmp_path / f"script-{time.monotonic_ns()}.json"
        script.write_text(json.dumps({"replies": replies, "delay_ms": delay_ms}))
        keep = ("HAILO_RESOURCES_DIR", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "HAILO_REPL_DAEMON")
        device = str(tmp_path / "hailo-device")  # one process at a time has it, as the real one
        double = {"HAILO_FAKE_SCRIPT": str(script), "HAILO_FAKE_LOG": str(log), "HAILO_FAKE_EXCLUSIVE": device}
        return with_fakes(double | {k: os.environ[k] for k in keep})

    def chat(replies: list, *args: str, delay_ms: int = 0) -> Terminal:
        term = Terminal(["--hef-path", QWEN, *args], env(replies, delay_ms), cols=200, timeout=30)
        pids.append(term.child.pid)
        return term

    def piped(replies: list, *args: str, delay_ms: int = 0) -> subprocess.Popen:
        process = subprocess.Popen(
            hailo_repl_command() + ["--hef-path", QWEN, *args],
            env=env(replies, delay_ms),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        pids.append(process.pid)
        return process

    chat.piped = piped
    chat.events = lambda: [json.loads(line)["event"] for line in log.read_text().splitlines()]
    yield chat
    for pid in pids:
        stop_if_running(pid)


def hang_up_mid_reply(term: Terminal) -> str:
    """Close `term`'s window during its reply; returns the chat its process says it is finishing."""
    term.send("tell me\r")
    term.expect_screen(r"w3 ")
    term.close_window()  # the terminal is gone: SIGHUP
    [holder] = wait_until(
        lambda: [h for h in lock_holders() if h["pid"] == term.child.pid and h["finishing"]],
        "the hung-up process to say it is finishing",
    )
    assert holder["device"] == "hailo"
    return holder["chat"]


def test_a_second_chat_waits_for_a_hung_up_reply_then_continues_it_whole(double):
    tokens = words(50)  # 5 s at 10 tokens a second: the second process starts while it runs
    first = double([tokens], delay_ms=100)
    first.expect(PROMPT)
    chat = hang_up_mid_reply(first)
    waiting = rf"hailo-repl pid {first.child.pid} is finishing a reply in chat {chat} .*Ctrl\+C gives up"

    gives_up = double([["unused"]], "-c")
    gives_up.expect(waiting)
    gives_up.interrupt()  # Ctrl+C: no wait after all
    gives_up.expect("Interrupted.")
    assert gives_up.wait_for_exit() == 130

    second = double([["Next", " answer"]], "-c")
    second.expect(waiting)
    second.expect(f"Continuing chat {chat}")  # once the first has ended…
    assert exit_code_of(first.child.pid, timeout=30) == 128 + signal.SIGHUP
    second.expect(r"w49")  # …with the whole reply
    second.expect(PROMPT)
    assert saved_chat(chat)["messages"][-1] == {"role": "assistant", "content": "".join(tokens).strip()}
    events = double.events()
    # One process at a time has the device: the second opens it once the first released it.
    assert events.count("vdevice_open") == 2
    assert events.index("vdevice_release") < len(events) - 1 - events[::-1].index("vdevice_open")
    assert "abort" not in events
    second.send("/quit\r")
    assert second.wait_for_exit() == 0
    assert not lock_file().exists()  # nothing left behind once no process holds anything


def sessions() -> list[Path]:
    return sorted((Path(os.environ["XDG_DATA_HOME"]) / "hailo-repl" / "sessions").glob("*.json"))


def test_a_one_shot_whose_terminal_closes_mid_reply_finishes_it_saves_it_whole_and_exits_129(double):
    """`hailo-repl -p` over SSH, the link dropped: the reply runs to its end (its writes to the
    dead terminal dropped), is saved whole, and the device is released before the exit."""
    tokens = words(30)  # 3 s at 10 tokens a second
    term = double([tokens], "-p", "tell me", delay_ms=100)
    term.expect("w3 ")
    term.close_window()  # SIGHUP, and every write after it fails with EIO
    [holder] = wait_until(
        lambda: [h for h in lock_holders() if h["pid"] == term.child.pid and h["finishing"]],
        "the hung-up process to say it is finishing",
    )
    assert exit_code_of(term.child.pid, timeout=30) == 128 + signal.SIGHUP
    [saved] = sessions()
    assert saved.stem == holder["chat"]
    reply = json.loads(saved.read_text())["messages"][-1]
    assert reply == {"role": "assistant", "content": "".join(tokens).strip()}  # whole, not interrupted
    events = double.events()
    assert "abort" not in events and events[-1] == "vdevice_release"
    assert not lock_file().exists()


def test_a_one_shot_told_to_hang_up_finishes_the_reply_into_its_pipe_and_sigterm_still_stops_one(double):
    """SIGHUP to `hailo-repl -p … > file` (a pipe here, still read): the whole reply still goes
    there and into the chat, exit 129; SIGTERM stops the reply, kept interrupted, exit 143."""
    tokens = words(20)
    hung_up = double.piped([tokens], "-p", "tell me", delay_ms=50)
    assert hung_up.stdout.read(3) == "w0 "
    hung_up.send_signal(signal.SIGHUP)
    out, err = hung_up.communicate(timeout=30)
    assert hung_up.returncode == 128 + signal.SIGHUP and "Traceback" not in err
    assert "w0 " + out == "".join(tokens) + "\n"  # (as it came: the last space too)
    [saved] = sessions()
    assert json.loads(saved.read_text())["messages"][-1] == {"role": "assistant", "content": "".join(tokens).strip()}

    terminated = double.piped([tokens], "-p", "tell me again", delay_ms=50)
    assert terminated.stdout.read(3) == "w0 "
    terminated.send_signal(signal.SIGTERM)
    out, err = terminated.communicate(timeout=30)
    assert terminated.returncode == 128 + signal.SIGTERM and "Traceback" not in err
    [stopped] = [path for path in sessions() if path != saved]
    reply = json.loads(stopped.read_text())["messages"][-1]
    assert reply["interrupted"] and len(reply["content"].split()) < len(tokens)


def test_a_new_chat_on_the_hailo_waits_for_a_live_holder_and_names_it(double):
    holder = {"pid": os.getpid(), "started": start_time_of(os.getpid()), "device": "hailo"}
    lock_file().parent.mkdir(parents=True, exist_ok=True)
    lock_file().write_text(json.dumps({"holders": [holder]}))
    waiting = double.piped([["Hello"]], "-p", "hi")
    line = waiting.stderr.readline()
    assert f"The Hailo-10H is in use by hailo-repl pid {os.getpid()}" in line and "Ctrl+C gives up" in line
    assert waiting.poll() is None  # still waiting
    lock_file().unlink()  # this "process" has ended
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0 and out == "Hello\n" and "Traceback" not in err


@pytest.mark.parametrize("stale", ["pid gone", "pid reused"])
def test_a_stale_lock_is_taken_over_without_a_wait(double, stale):
    if stale == "pid gone":
        ended = subprocess.Popen(["true"])
        ended.wait()
        holder = {"pid": ended.pid, "started": None, "device": "hailo", "chat": "0123abcd", "finishing": True}
    else:  # a live process, but not the one that wrote the entry: it started at another time
        holder = {"pid": os.getpid(), "started": start_time_of(os.getpid()) - 1, "device": "hailo"}
    lock_file().parent.mkdir(parents=True, exist_ok=True)
    lock_file().write_text(json.dumps({"holders": [holder]}))
    process = double.piped([["Hello"]], "-p", "hi")
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and out == "Hello\n"
    assert "waiting" not in err and "in use" not in err
    assert not lock_file().exists()  # the stale entry went with this process's own


@pytest.mark.llama
@pytest.mark.parametrize("term_name", ["xterm-256color", "dumb"])
def test_a_hang_up_on_llama_cpp_lets_the_reply_end_and_saves_it_whole(isolated_home, term_name):
    """llama.cpp holds no device, so it registers only once its terminal hangs up; with TERM=dumb the
    reply is written as it comes, without the pane."""
    term = Terminal(["--backend", "llama", "--temperature", "0", "--max-tokens", "200"], {"TERM": term_name})
    pid = term.child.pid
    try:
        term.expect(PROMPT)
        assert not lock_file().exists()  # a chat on the CPU holds nothing while it runs
        term.send("Write a long story about a dragon.\r")
        term.expect(r"Assistant: \S+ \S+ \S+", timeout=60)
        term.close_window()  # the terminal is gone
        [holder] = wait_until(lambda: lock_holders(), "the hung-up process to say it is finishing")
        assert holder["pid"] == pid and holder["finishing"] and holder["device"] is None
        assert exit_code_of(pid, timeout=120) == 128 + signal.SIGHUP
    finally:
        stop_if_running(pid)
    reply = saved_chat(holder["chat"])["messages"][-1]
    assert reply["role"] == "assistant" and "interrupted" not in reply and len(reply["content"].split()) > 20
    assert not lock_file().exists()
