"""The engine process in real processes on the hailo_platform double (daemon: always): a chat
that outlives its terminal, one engine per user, and what happens when either side is killed.
Every engine a test started is killed by the pid in its lock file at the test's end, passed or
failed (`engines`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import hailo_repl_command, remember_qwen_where_keeping_pays
from terminal import QWEN, Terminal, exit_code_of, wait_until, with_fakes

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

    def env(
        replies: list, delay_ms: int = 0, script_has: dict | None = None, **more: str | None
    ) -> dict[str, str | None]:
        """`script_has`: more of the double's script (a HEF's `load_ms`); `more`: environment variables."""
        script = tmp_path / f"script-{next(scripts)}.json"
        script.write_text(json.dumps({"replies": replies, "delay_ms": delay_ms, **(script_has or {})}))
        keep = ("HAILO_RESOURCES_DIR", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME")
        double = {
            "HAILO_FAKE_SCRIPT": str(script),
            "HAILO_FAKE_LOG": str(log),
            "HAILO_FAKE_EXCLUSIVE": str(tmp_path / "hailo-device"),  # one process at a time has it
            "HAILO_REPL_DAEMON": "always",
            **more,
        }
        return with_fakes(double | {k: os.environ[k] for k in keep})  # (None: a setting at its default)

    def chat(
        replies: list,
        *args: str,
        delay_ms: int = 0,
        cols: int = 120,
        script_has: dict | None = None,
        **more: str | None,
    ) -> Terminal:
        term = Terminal(["--hef-path", QWEN, *args], env(replies, delay_ms, script_has, **more), cols=cols, timeout=30)
        clients.append(term.child.pid)
        return term

    def piped(replies: list, *args: str, delay_ms: int = 0, **more: str | None) -> subprocess.Popen:
        process = subprocess.Popen(
            hailo_repl_command() + ["--hef-path", QWEN, *args],
            env={name: value for name, value in env(replies, delay_ms, None, **more).items() if value is not None},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
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


def test_by_default_a_terminal_chat_runs_in_the_engine_and_a_script_on_the_hailo_asks_the_same_one(engines):
    """`daemon: auto`, the default: the REPL's chat is in the engine process (it goes on after the
    terminal detached), and a later -p on the Hailo is answered by that engine, no second load."""
    replies = [["Hello", " there"]]
    term = engines(replies, HAILO_REPL_DAEMON=None)
    term.expect(PROMPT)
    term.exchange("hi", "Hello there")
    engine = engines.engine()
    term.send("/detach\r")
    term.expect(r"Detached: chat \w+ goes on in the engine process")
    assert term.wait_for_exit() == 0 and alive(engine)
    code, out, err = ended(engines.piped(replies, "-p", "again", HAILO_REPL_DAEMON=None))
    assert (code, out.strip()) == (0, "Hello there"), err
    assert engine_pid() == engine and engines.events().count("vdevice_open") == 1


@pytest.mark.llama
def test_by_default_a_script_on_the_cpu_runs_in_its_own_process_and_starts_no_engine(engines):
    """With llama.cpp a -p loads its model in a blink: `auto` keeps it in process, as `llm` does."""
    process = subprocess.run(
        hailo_repl_command() + ["--backend", "llama", "--max-tokens", "4", "--temperature", "0", "-p", "hi"],
        env={name: value for name, value in engines.env([]).items() if name != "HAILO_REPL_DAEMON"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0 and process.stdout.strip(), process.stderr
    assert engine_pid() is None and not socket_file().exists()


def test_a_script_waits_for_the_chat_a_terminal_holds_and_answers_once_the_terminal_left_it(engines):
    """The engine holds one chat: a -p while a terminal has it waits (as for the device in
    process), saying so once, instead of failing; /detach there lets it run."""
    term = engines([["Hello"]])
    term.expect(PROMPT)
    term.exchange("hi", "Hello")
    script = engines.piped([["unused"]], "-p", "from cron")
    time.sleep(1.5)
    assert script.poll() is None  # still waiting
    term.send("/detach\r")
    assert term.wait_for_exit() == 0
    code, out, err = ended(script)
    assert (code, out.strip()) == (0, "Hello"), err
    assert re.fullmatch(
        r"Chat \w+ is open in pts/\d+ \(0 min idle\); waiting until it is left there \(Ctrl\+C gives up\)\n", err
    )


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


def test_a_sigstopped_client_holds_nothing_back_and_c_elsewhere_takes_its_chat_over(engines):
    """A terminal that reads nothing (Ctrl+Z, a stalled SSH link): the reply runs to its end and
    is saved whole, `-c` in another terminal takes the chat at once, and the stopped one, let go
    on, says so in one line and exits."""
    tokens = words(40)
    first = engines([tokens], delay_ms=50)
    first.expect(PROMPT)
    first.send("tell me\r")
    first.expect_screen(r"w3 ")
    engines.engine()
    os.kill(first.child.pid, signal.SIGSTOP)
    try:
        whole = "".join(tokens).strip()
        wait_until(
            lambda: any(c["messages"][-1]["content"] == whole for c in saved_chats().values()),
            "the reply saved whole while its terminal reads nothing",
        )
        second = engines([["unused"]], "-c")
        second.expect(r"w39")
        second.expect(PROMPT)
    finally:
        os.kill(first.child.pid, signal.SIGCONT)
    first.expect(r"taken over by pts/\d+")
    assert first.wait_for_exit() == 0


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
    engines.engine()
    attached = wait_until(
        lambda: re.search(r"open in (pts/\d+)", daemon_command(engines, "status").stdout), "a terminal to have the chat"
    )[1]
    chatting = [term for term in terms if os.readlink(f"/proc/{term.child.pid}/fd/0") == f"/dev/{attached}"]
    refused = [term for term in terms if term not in chatting]
    for term in refused:  # the three that came second say where the chat is open, in one line, and exit 1
        term.expect(rf"\[Error\] Chat \w+ is open in {attached}")
    assert [term.wait_for_exit() for term in refused] == [1, 1, 1]
    [winner] = chatting
    winner.send("hello\r")
    winner.expect("hi")
    winner.expect_reply_end()
    engine = engines.engine()
    assert engines.events().count("vdevice_open") == 1
    started = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if _is_engine(pid) and alive(pid)]
    assert started == [engine]  # the engines started by the others exited: one engine
    assert zombies_of(winner.child.pid) == []  # each engine it started and lost the race was reaped


def zombies_of(parent: int) -> list[int]:
    found = []
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == parent:
            found.append(pid)
    return found


def _is_engine(pid: int) -> bool:
    """An engine process of this test's (its state folder: other tests, run beside it, start theirs)."""
    try:
        ours = f"XDG_STATE_HOME={os.environ['XDG_STATE_HOME']}\0".encode()
        return "\0-m\0hailo_repl.daemon\0" in Path(f"/proc/{pid}/cmdline").read_text() and ours in (
            Path(f"/proc/{pid}/environ").read_bytes()
        )
    except OSError:
        return False


def daemon_command(engines, action: str) -> subprocess.CompletedProcess:
    """`hailo-repl daemon ACTION` as the user runs it."""
    return subprocess.run(
        hailo_repl_command() + ["daemon", action], env=engines.env([]), capture_output=True, text=True, timeout=60
    )


def socket_file() -> Path:
    return state() / "engine.sock"


def ended(process: subprocess.Popen, timeout: float = 30) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def test_a_stale_socket_is_replaced_by_a_new_engine(engines):
    socket_file().parent.mkdir(parents=True, mode=0o700)
    with socket.socket(socket.AF_UNIX) as dead:  # an engine's socket left behind: nothing listens
        dead.bind(str(socket_file()))
    code, out, err = ended(engines.piped([["fresh"]], "-p", "hi"))
    assert (code, out.strip()) == (0, "fresh"), err
    engines.engine()
    with socket.socket(socket.AF_UNIX) as probe:
        probe.connect(str(socket_file()))  # a live engine listens there now


def test_a_file_that_is_not_a_socket_at_its_path_is_refused_in_one_line_and_left_alone(engines):
    socket_file().parent.mkdir(parents=True, mode=0o700)
    socket_file().write_text("my notes")
    code, out, err = ended(engines.piped([["unused"]], "-p", "hi"))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "is not a socket: refused, and left as it is" in err
    assert socket_file().read_text() == "my notes"
    assert engine_pid() is None and "vdevice_open" not in engines.events()


def test_no_history_leaves_no_chat_log_or_context_on_disk(engines):
    code, out, err = ended(engines.piped([["quiet"]], "--no-history", "-p", "hi", HAILO_REPL_KEEP_ALIVE="0"))
    assert (code, out.strip()) == (0, "quiet"), err
    wait_until(lambda: engine_pid() is None, "the engine to end (keep-alive 0)")
    data = Path(os.environ["XDG_DATA_HOME"]) / "hailo-repl"
    assert not (data / "sessions").exists() and not (data / "contexts").exists()
    assert not (state() / "hailo-repl.log").exists()


def test_a_no_history_chat_on_a_warm_engine_writes_no_chat_and_the_next_normal_chat_is_saved(engines):
    replies = [["answer"]] * 3  # (the engine reads the script its first client gave)
    code, out, err = ended(engines.piped(replies, "--system-prompt", "plans for the heist", "-p", "hi"))
    assert (code, out.strip()) == (0, "answer"), err
    pid = engines.engine()
    assert len(saved_chats()) == 1
    code, out, err = ended(engines.piped(replies, "--no-history", "--system-prompt", "the vault code", "-p", "hi"))
    assert (code, out.strip()) == (0, "answer"), err
    assert engine_pid() == pid and len(saved_chats()) == 1  # the same engine; nothing new on disk
    log = state() / "hailo-repl.log"
    assert "the vault code" not in log.read_text() and "plans for the heist" not in log.read_text()
    code, out, err = ended(engines.piped(replies, "-p", "hi"))
    assert (code, out.strip()) == (0, "answer"), err
    assert len(saved_chats()) == 2


def test_a_state_folder_that_is_a_symlink_to_the_users_own_folder_holds_the_engine(engines, tmp_path):
    real = tmp_path / "state-elsewhere"
    real.mkdir(mode=0o700)
    state().parent.mkdir(parents=True, exist_ok=True)
    state().symlink_to(real)
    code, out, err = ended(engines.piped([["linked"]], "-p", "hi"))
    assert (code, out.strip()) == (0, "linked"), err
    engines.engine()
    assert (real / "engine.sock").exists() and (real / "engine.lock").exists()


def test_an_engine_of_another_protocol_version_is_named_in_one_line_and_daemon_stop_ends_it(engines, tmp_path):
    other = subprocess.Popen(  # an engine of an older hailo-repl still running
        [
            sys.executable,
            "-c",
            "import sys; import hailo_repl.daemon.protocol as p; p.PROTOCOL_VERSION = 0; "
            "from hailo_repl.daemon.__main__ import main; sys.exit(main(['--keep-alive', '600']))",
        ],
        env=engines.env([["old"]]),
        start_new_session=True,
    )
    try:
        wait_until(socket_file().exists, "the old engine's socket")
        code, out, err = ended(engines.piped([["unused"]], "-p", "hi"))
        assert code == 1 and out == ""
        assert err.count("\n") == 1
        assert f"engine of version 0.1.0 runs (pid {other.pid}): `hailo-repl daemon stop`, then start again" in err
        stop = subprocess.run(
            hailo_repl_command() + ["daemon", "stop"], env=engines.env([]), capture_output=True, text=True, timeout=60
        )
        assert stop.returncode == 0, stop.stderr
        assert f"Stopped the engine process (pid {other.pid})" in stop.stderr
        assert other.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        with_kill(other.pid)


def test_daemon_status_names_the_chat_and_its_terminal_and_stop_releases_the_device(engines):
    term = engines([["Hello", " there"]])
    term.expect(PROMPT)
    term.exchange("hi", "Hello there")
    engine = engines.engine()
    status = daemon_command(engines, "status")
    assert status.returncode == 0, status.stderr
    assert f"engine process: pid {engine}, hailo-repl 0.1.0, memory " in status.stdout
    assert f"model: {QWEN} on hailo (ready)" in status.stdout
    [chat] = saved_chats()
    assert re.search(rf"chat: {chat}, open in pts/\d+", status.stdout)

    stop = daemon_command(engines, "stop")
    assert stop.returncode == 0 and f"Stopped the engine process (pid {engine})" in stop.stderr
    term.expect("engine")  # the terminal is told, in one line, and ends
    assert term.wait_for_exit() is not None
    assert engines.events()[-1] == "vdevice_release"
    assert not socket_file().exists()
    gone = daemon_command(engines, "status")
    assert gone.returncode == 1 and "No hailo-repl engine process runs." in gone.stderr


def test_keep_alive_0_releases_at_once_after_the_last_terminal_left_but_not_while_the_chat_is_unsaved(engines):
    code, out, err = ended(engines.piped([["one"]], "-p", "hi", HAILO_REPL_KEEP_ALIVE="0"))
    assert (code, out.strip()) == (0, "one"), err
    wait_until(lambda: engine_pid() is None, "the engine to end")
    assert engines.events()[-1] == "vdevice_release"

    sessions = Path(os.environ["XDG_DATA_HOME"]) / "hailo-repl" / "sessions"
    shutil.rmtree(sessions)
    sessions.write_text("not a folder")  # every save of the chat fails
    code, out, err = ended(engines.piped([["two"]], "-p", "hi", HAILO_REPL_KEEP_ALIVE="0"))
    assert code == 1 and out.strip() == "two" and "[Error]" in err
    engine = engines.engine()
    time.sleep(1.0)  # twenty of keep-alive 0's ticks
    assert alive(engine) and engine_pid() == engine  # the latest turn is in no file: the engine keeps it
    status = daemon_command(engines, "status")
    assert "its last save failed" in status.stdout


def test_a_detached_chat_goes_on_and_c_takes_it_over_from_a_terminal_still_connected(engines):
    first = engines([["Hello"], ["Again"]])
    first.expect(PROMPT)
    first.exchange("hi", "Hello")
    first.send("/detach\r")
    first.expect(r"Detached: chat \w+ goes on in the engine process")
    assert first.wait_for_exit() == 0
    engine = engines.engine()
    assert alive(engine)

    second = engines([["unused"]], "-c")
    second.expect("Hello")
    second.expect(PROMPT)
    third = engines([["unused"]], "-c")  # the second left connected (an SSH drop): -c takes the chat
    third.expect("Hello")
    second.expect(r"taken over by pts/\d+")
    assert second.wait_for_exit() == 0
    third.expect(PROMPT)
    third.exchange("more", "Again")
    assert engines.events().count("vdevice_open") == 1


def test_sigterm_at_the_engine_stops_its_reply_kept_interrupted_releases_and_removes_the_socket(engines):
    engine = subprocess.Popen(
        [sys.executable, "-m", "hailo_repl.daemon", "--keep-alive", "600"],
        env=engines.env([words(100)], delay_ms=50),
        start_new_session=True,
    )
    try:
        wait_until(socket_file().exists, "the engine's socket")
        client = engines.piped([], "-p", "tell me")
        wait_until(lambda: "generate" in engines.events(), "the reply to start")
        time.sleep(0.5)
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(timeout=30) == 128 + signal.SIGTERM
        code, out, err = ended(client)
        assert code == 1 and "w3" in out and "engine" in err
        [chat] = saved_chats().values()
        assert chat["messages"][-1].get("interrupted") is True
        assert engines.events()[-1] == "vdevice_release"
        assert not socket_file().exists()
    finally:
        with_kill(engine.pid)


def test_a_socket_deleted_under_a_live_engine_is_bound_again(engines):
    engine = subprocess.Popen(
        [sys.executable, "-m", "hailo_repl.daemon", "--keep-alive", "600"],
        env=engines.env([["still", " here"]]),
        start_new_session=True,
    )
    try:
        wait_until(socket_file().exists, "the engine's socket")
        socket_file().unlink()  # a tmpfiles cleaner, a user
        wait_until(socket_file().exists, "the socket bound again", timeout=10)
        code, out, err = ended(engines.piped([], "-p", "hi"))
        assert (code, out.strip()) == (0, "still here"), err
        assert engine_pid() == engine.pid
    finally:
        with_kill(engine.pid)


def test_an_engine_whose_state_folder_was_deleted_takes_its_lock_and_socket_again(engines):
    engine = subprocess.Popen(
        [sys.executable, "-m", "hailo_repl.daemon", "--keep-alive", "600"], env=engines.env([]), start_new_session=True
    )
    try:
        wait_until(socket_file().exists, "the engine's socket")
        shutil.rmtree(state())
        wait_until(socket_file().exists, "the socket bound again", timeout=10)
        assert engine_pid() == engine.pid  # its lock again: a hailo-repl started now connects to it
    finally:
        with_kill(engine.pid)


def test_an_engine_whose_state_folder_was_deleted_ends_once_another_engine_holds_the_new_one(engines):
    """Two engines that each thought themselves the user's would unlink each other's socket at
    every tick: the one whose lock file went with the folder yields to the one holding the new."""
    command = [sys.executable, "-m", "hailo_repl.daemon", "--keep-alive", "600"]
    old = subprocess.Popen(command, env=engines.env([]), start_new_session=True)
    new = None
    try:
        wait_until(socket_file().exists, "the engine's socket")
        shutil.rmtree(state())  # the state folder removed under the live engine (a user's rm -rf)
        new = subprocess.Popen(command, env=engines.env([]), start_new_session=True)
        wait_until(lambda: engine_pid() == new.pid, "the new engine's lock")
        assert old.wait(timeout=15) == 0  # the old one ended, its socket not taken back
        assert alive(new.pid) and socket_file().exists()
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(str(socket_file()))  # the new engine listens there
    finally:
        with_kill(old.pid)
        if new is not None:
            with_kill(new.pid)


ENGINE_MODULES = """
import atexit, sys
atexit.register(lambda: open(sys.argv[1], "w").write(" ".join(sorted(sys.modules))))
from hailo_repl.daemon.__main__ import main
sys.exit(main(["--keep-alive", "0"]))
"""


def test_the_engine_process_imports_no_terminal_library(engines, tmp_path):
    modules = tmp_path / "modules.txt"
    engine = subprocess.Popen(
        [sys.executable, "-c", ENGINE_MODULES, str(modules)], env=engines.env([["Hi"]]), start_new_session=True
    )
    try:
        wait_until(socket_file().exists, "the engine's socket")
        code, out, err = ended(engines.piped([], "-p", "hi"))
        assert (code, out.strip()) == (0, "Hi"), err
        assert engine.wait(timeout=30) == 0  # keep-alive 0: it ends once the client has gone
        loaded = modules.read_text().split()
        assert "hailo_repl.engine.local" in loaded and "hailo_platform" in loaded
        assert [name for name in loaded if name.split(".")[0] in ("prompt_toolkit", "pygments")] == []
    finally:
        with_kill(engine.pid)


def test_c_during_a_reply_left_running_shows_its_question_once_and_its_reply_so_far_then_live(engines):
    tokens = words(40)  # 4 s at 10 tokens a second
    first = engines([tokens], delay_ms=100)
    first.expect(PROMPT)
    first.send("tell me\r")
    first.expect_screen(r"w3 ")
    first.close_window()  # the SSH link drops: SIGHUP, a detach
    second = engines([["unused"]], "-c")
    second.expect("Its reply is still running in the engine process")
    second.expect(r"w39")
    second.pump(0.5)
    shown = second.screen_text(20000)
    assert shown.count("tell me") == 1 and "w39" in shown
    # the reply so far (the replay, up to w3 or so) and the live text meet with no gap and no
    # repeat: the first line the pane commits holds the words in order (the transcript also has
    # the live row's redraws, so counting words in it says nothing)
    assert "Assistant: " + " ".join(f"w{i}" for i in range(25)) in shown
    assert "[interrupted]" not in shown
    [chat] = saved_chats().values()
    assert chat["messages"][-1] == {"role": "assistant", "content": "".join(tokens).strip()}
    assert "abort" not in engines.events()


def test_sigterm_at_the_terminal_is_a_detach_the_reply_goes_on_and_is_saved_whole(engines):
    tokens = words(30)
    term = engines([tokens], delay_ms=100)
    term.expect(PROMPT)
    term.send("tell me\r")
    term.expect_screen(r"w3 ")
    os.kill(term.child.pid, signal.SIGTERM)
    assert exit_code_of(term.child.pid, timeout=30) == 128 + signal.SIGTERM
    whole = "".join(tokens).strip()
    wait_until(
        lambda: any(c["messages"][-1] == {"role": "assistant", "content": whole} for c in saved_chats().values()),
        "the reply saved whole",
    )
    assert "abort" not in engines.events()


def test_the_doctor_names_the_engine_process_holding_the_hailo_instead_of_a_busy_device(engines):
    code, out, err = ended(engines.piped([["ready"]], "-p", "hi"))
    assert (code, out.strip()) == (0, "ready"), err
    engine = engines.engine()
    doctor = subprocess.run(
        hailo_repl_command() + ["doctor", "--hef-path", QWEN],
        env=engines.env([]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"the hailo-repl engine process (pid {engine}) has it open with {QWEN}" in doctor.stdout
    assert "`hailo-repl daemon stop` releases it" in doctor.stdout
    assert engines.events().count("vdevice_open") == 1  # the doctor did not try to open it


def c_after_a_client_killed_mid_reply(engines, replies: list, delay_ms: int) -> Terminal:
    """`hailo-repl -c` arriving at "tell me"'s reply (the first of `replies`), still running in
    the engine after its terminal's client was SIGKILLed."""
    first = engines(replies, delay_ms=delay_ms)
    first.expect(PROMPT)
    first.send("tell me\r")
    first.expect_screen(r"w3 ")
    os.kill(first.child.pid, signal.SIGKILL)
    second = engines([["unused"]], "-c")
    second.expect("Its reply is still running in the engine process")
    return second


def test_c_during_a_reply_in_flight_makes_it_this_terminals_ctrl_c_stops_it_and_the_chat_goes_on(engines):
    second = c_after_a_client_killed_mid_reply(engines, [words(400), ["Again"]], delay_ms=50)
    second.expect_screen(r"w\d+ w\d+ ")  # the reply so far, then live
    second.interrupt()  # as for a reply to a message sent here: the reply stops, the chat stays
    second.expect(r"\[interrupted\]")
    second.expect(PROMPT)
    assert "[Info] Ctrl+D or /quit ends the chat" not in second.screen_text(20000)  # (not an empty line's Ctrl+C)
    second.exchange("more", "Again")
    assert second.quit() == 0
    [chat] = saved_chats().values()
    contents = [(m["role"], m["content"], m.get("interrupted")) for m in chat["messages"] if m["role"] != "system"]
    assert contents[0][:2] == ("user", "tell me") and contents[1][2] is True
    assert contents[2:] == [("user", "more", None), ("assistant", "Again", None)]
    assert engines.events().count("abort") == 1


def test_a_message_typed_during_a_reply_followed_after_c_waits_for_its_end(engines):
    second = c_after_a_client_killed_mid_reply(engines, [words(30), ["Queued", " answer"]], delay_ms=100)
    second.send("and then?\r")  # Enter during the reply: the message waits for its end, as when sent here
    second.expect("Queued answer")
    second.expect_reply_end()
    assert second.quit() == 0
    said = ["tell me", "".join(words(30)).strip(), "and then?", "Queued answer"]
    wait_until(
        lambda: (
            [[m["content"] for m in c["messages"] if m["role"] != "system"] for c in saved_chats().values()] == [said]
        ),
        "the chat saved with the queued message after the followed reply",
    )
    assert "abort" not in engines.events()


def test_the_prompt_is_up_and_takes_typing_while_the_engine_process_loads_the_model(engines):
    term = engines([["Hi", " there"]], script_has={"load_ms": 3000})  # a HEF load of seconds, GIL held
    term.expect(PROMPT)
    term.send("hello")
    term.expect_screen(r"You: hello")
    assert "loading model" in term.screen.last_row()
    assert "llm_open" not in engines.events()  # the engine process is still loading it
    term.send("\r")  # sent once the model is ready
    term.expect("Hi there")
    term.expect_reply_end()
    assert engines.events().count("llm_open") == 1


def test_keys_typed_during_a_slow_device_context_save_in_the_engine_echo_before_it_ends(engines, hailo_resources):
    remember_qwen_where_keeping_pays(hailo_resources)  # the chat's device context is worth keeping
    # A save whose copies hold the engine's GIL for about 4 s (the suite's context is 64 KiB).
    term = engines([["Noted"]], HAILO_FAKE_CONVERT_MS_PER_MB="60000")
    term.expect(PROMPT)
    term.exchange("remember this", "Noted")
    term.send("/save\r")
    term.expect("Keeping the device context")
    term.send("typed on")
    term.expect_screen(r"You: typed on")
    assert "save_context" not in engines.events()  # (the double notes a save once its copies are done)
    sessions = Path(os.environ["XDG_DATA_HOME"]) / "hailo-repl" / "sessions"
    assert list(sessions.glob("*.ctx")) == []
    term.wait_until(lambda: list(sessions.glob("*.ctx")), "the device context kept", timeout=30)
    assert engines.events().count("save_context") == 1
    term.send("\x15")  # Ctrl+U
    assert term.quit() == 0
