"""The output pane in tmux, which rewraps the lines on screen and in its history when the window's
width changes (pyte, which test_e2e_pane.py reads through, does not): a resize in the middle of a
reply must leave the reply once in the history and no copy of the prompt or the toolbar. And a
tmux session killed mid-reply, as a hang-up: the reply is finished and saved whole."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from terminal import QWEN, REPLYING, hailo_repl_command

pytestmark = [pytest.mark.e2e, pytest.mark.needs("tmux")]

TOOLBAR = f"{QWEN} · Hailo-10H │ ctx"


class Tmux:
    """One tmux server of the test's own (its socket in the test's folder), one window running `command`."""

    def __init__(self, folder: Path, command: list[str], env: dict[str, str], cols: int, rows: int):
        self.socket = folder / "tmux.sock"
        self.run("-f", "/dev/null", "new-session", "-d", "-x", str(cols), "-y", str(rows), shlex.join(command), env=env)
        try:
            self.server_pid = int(self.run("display-message", "-p", "#{pid}"))
        except Exception:
            with contextlib.suppress(Exception):
                self.run("kill-server")  # the server of this socket, as stop() cannot know its pid
            raise

    def run(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            ["tmux", "-S", str(self.socket), *args], env=env, capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout

    def screen(self) -> list[str]:
        return self.run("capture-pane", "-p").splitlines()

    def history(self) -> list[str]:
        """Everything the window holds, scrolled-off lines first, rows that tmux wrapped joined again."""
        return self.run("capture-pane", "-p", "-J", "-S", "-", "-E", "-").rstrip("\n").splitlines()

    def wait_for(self, found, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not found(self.screen()):
            if time.monotonic() > deadline:
                raise AssertionError(f"waiting for {what}: timed out; the screen showed:\n" + "\n".join(self.screen()))
            time.sleep(0.02)

    def type(self, text: str) -> None:
        self.run("send-keys", "-l", text)

    def resize(self, cols: int) -> None:
        self.run("resize-window", "-x", str(cols))

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # (gone with its last session)
            os.kill(self.server_pid, signal.SIGTERM)  # by its pid, as every test server here is stopped


def bottom_row(rows: list[str]) -> str:
    filled = [row for row in rows if row.strip()]
    return filled[-1] if filled else ""


@pytest.fixture
def tmux_chat(double_terminal, tmp_path):
    """hailo-repl on the double (the environment double_terminal gives), in a tmux window."""
    windows: list[Tmux] = []

    def start(
        replies: list[list[str]], delay_ms: int, cols: int, args: tuple[str, ...] = (), runner: tuple[str, ...] = ()
    ) -> Tmux:
        """`runner`: a command that runs hailo-repl's (its arguments after the runner's own)."""
        env = double_terminal.env({"replies": replies, "delay_ms": delay_ms}, TERM="xterm-256color")
        # A server of its own even when the tests run inside tmux, and a window of its own size.
        for name in ("TMUX", "COLUMNS", "LINES"):
            env.pop(name, None)
        command = [*runner, *hailo_repl_command(), "--hef-path", QWEN, *args]
        window = Tmux(tmp_path, command, env, cols=cols, rows=30)
        windows.append(window)
        window.wait_for(lambda rows: TOOLBAR in bottom_row(rows), "the first prompt and its toolbar")
        return window

    yield start
    for window in windows:
        window.stop()


def test_a_resize_to_narrower_and_back_during_a_reply_leaves_it_once_and_no_frame(tmux_chat):
    tokens = [f"w{i} " for i in range(300)]
    window = tmux_chat([["<text>", *tokens, "</text>"]], delay_ms=15, cols=100)
    window.type("tell me")
    window.run("send-keys", "Enter")
    window.wait_for(lambda rows: "w20 " in "\n".join(rows), "the reply to start")
    window.resize(60)
    window.wait_for(lambda rows: "w120 " in "\n".join(rows), "more of the reply, 60 columns wide")
    window.resize(100)
    # The speed shows only at the end of a toolbar wider than 60 columns: the chat has drawn at 100 again.
    window.wait_for(
        lambda rows: re.search(r"\d tok/s", bottom_row(rows)) and not REPLYING.search(bottom_row(rows)),
        "the reply to end",
    )

    history = window.history()
    words = " ".join(history).split()
    assert [word for word in words if re.fullmatch(r"w\d+", word)] == [token.strip() for token in tokens]
    assert words.count("Assistant:") == 1
    last = max(i for i, row in enumerate(history) if row.strip())
    left_behind = [row for row in history[:last] if TOOLBAR in row or row.startswith("You: tell")]
    assert left_behind == ["You: tell me"], "\n".join(history)


STORM = [(60, 20), (300, 80), (20, 6), (100, 30), (33, 7), (250, 70), (21, 9), (100, 30), (45, 12), (100, 30)] * 3


def test_a_storm_of_resizes_during_a_reply_leaves_each_line_once_and_no_frame_or_gap(tmux_chat):
    # Lines shorter than the narrowest size, a line every 0.3 s: between two lines the frame is drawn
    # again (the toolbar's figures) at whatever size the storm has reached.
    lines = [f"L{i:02d} alpha beta" for i in range(18)]
    tokens = [piece for line in lines for piece in (line[:3], line[3:9], line[9:], "\n")]
    window = tmux_chat([["<text>", "Here:\n", *tokens, "</text>"]], delay_ms=80, cols=100)
    window.type("tell me")
    window.run("send-keys", "Enter")
    window.wait_for(lambda rows: "L00 alpha beta" in rows, "the reply's first line")
    for cols, rows in STORM:  # as a window manager drags a window: a size every 0.1 s
        window.run("resize-window", "-x", str(cols), "-y", str(rows))
        time.sleep(0.1)
    window.wait_for(
        lambda rows: re.search(r"\d tok/s", bottom_row(rows)) and not REPLYING.search(bottom_row(rows)),
        "the reply to end",
    )

    history = window.history()
    start = history.index("Assistant: Here:")
    assert history[start + 1 : start + 1 + len(lines)] == lines, "\n".join(history[start:])
    left_behind = [row for row in history[:start] if TOOLBAR in row or row.startswith("You:")]
    assert left_behind == ["You: tell me"], "\n".join(history)


# Runs a command and records its pid and then its exit code, outliving the pane to do so: a
# handler for SIGHUP (not SIG_IGN, which the command would inherit; a handler it does not).
RECORD_EXIT = """
import os, signal, subprocess, sys
signal.signal(signal.SIGHUP, lambda signum, frame: None)
child = subprocess.Popen(sys.argv[3:])
with open(sys.argv[1], "w") as pids:
    pids.write(f"{os.getpid()} {child.pid}")
code = child.wait()
with open(sys.argv[2] + ".part", "w") as file:
    file.write(str(code))
os.replace(sys.argv[2] + ".part", sys.argv[2])
"""


def test_a_tmux_session_killed_mid_reply_finishes_the_reply_saves_it_whole_and_exits_129(
    tmux_chat, double_terminal, tmp_path, isolated_home
):
    tokens = [f"w{i} " for i in range(40)]  # 4 s at 10 tokens a second
    runner, pid_file, code_file = tmp_path / "record_exit.py", tmp_path / "pids", tmp_path / "exit-code"
    runner.write_text(RECORD_EXIT)
    window = tmux_chat(
        [tokens], delay_ms=100, cols=100, runner=(sys.executable, str(runner), str(pid_file), str(code_file))
    )
    recorder, chat = (int(pid) for pid in pid_file.read_text().split())
    try:
        window.type("tell me")
        window.run("send-keys", "Enter")
        window.wait_for(lambda rows: "w3 " in "\n".join(rows), "the reply to start")
        window.run("kill-session")  # the terminal is gone: SIGHUP, and EIO at every write
        deadline = time.monotonic() + 30
        while not code_file.exists():
            assert time.monotonic() < deadline, "hailo-repl had not ended 30 s after its session was killed"
            time.sleep(0.05)
    finally:
        if not code_file.exists():  # by their recorded pids: neither is this process's child
            for pid in (chat, recorder):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    assert int(code_file.read_text()) == 128 + signal.SIGHUP
    assert not Path(f"/proc/{chat}").exists()  # gone (reaped by the recorder)
    [saved] = (isolated_home / "data" / "hailo-repl" / "sessions").glob("*.json")
    reply = json.loads(saved.read_text())["messages"][-1]
    assert reply == {"role": "assistant", "content": "".join(tokens).strip()}  # whole, not interrupted
    events = double_terminal.log.names()
    assert "abort" not in events and events[-1] == "vdevice_release"
