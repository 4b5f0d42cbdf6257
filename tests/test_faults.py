"""The fault matrix: hailo-repl as a hostile or unlucky user meets it, on the installed
program (the hailo_platform double, or llama.cpp) in a real pty or pipe.

Each test is one row: what was done, and what must hold: nothing lost, nothing frozen,
nothing hostile on screen.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from conftest import hailo_repl_command, run_cli, run_installed
from terminal import PROMPT, QWEN, Terminal

LONG_REPLY = [f"word{i} " for i in range(600)]
HOSTILE = "\x1b]52;c;c3RvbGVu\x07\x1b[2J\x1b[31m"  # write the clipboard, clear the screen, turn red


@pytest.fixture
def device(double_terminal):
    """Starts hailo-repl on the double with a script: `device(script, *args, **env)`; `device.env(script)`
    is the environment for a run with no terminal, `device.log` what the double did."""

    def start(script: dict | None = None, *args: str, **more_env: str) -> Terminal:
        # Wide: the lines these tests match name long temporary paths, and hailo-repl wraps at the edge.
        return double_terminal(script, *args, cols=400, timeout=30, **more_env)

    start.env = double_terminal.env
    start.log = double_terminal.log
    return start


def raw(term: Terminal) -> str:
    """Everything the program wrote, escape sequences included."""
    return term.transcript.getvalue()


def data_dir(home) -> os.PathLike:
    return home / "data" / "hailo-repl"


# ---- losing data ------------------------------------------------------------------------


@pytest.mark.e2e
def test_save_never_replaces_a_device_a_fifo_or_a_file_that_is_not_a_chat(device, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    chat = tmp_path / "chat.json"
    link = tmp_path / "link.json"
    link.symlink_to(chat)
    term = device()
    term.expect(PROMPT)
    term.send("/save /dev/full\r")
    term.expect(r"\[Error\] Cannot save to /dev/full: .*it is a device")
    term.send(f"/save {fifo}\r")
    term.expect(r"it is a FIFO")
    term.send(f"/save {notes}\r")
    term.expect(r"exists and is not a saved chat; /save --force")
    term.send(f"/save {link}\r")
    term.expect(r"\[Info\] Saved 1 messages")
    term.expect(PROMPT)
    assert notes.read_text() == "my notes"
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode) and stat.S_ISFIFO(fifo.stat().st_mode)
    assert link.is_symlink() and json.loads(chat.read_text())["messages"]
    assert stat.S_IMODE(chat.stat().st_mode) == 0o600
    term.send(f"/save --force {notes}\r")
    term.expect(r"\[Info\] Saved 1 messages")
    assert term.quit() == 0
    assert json.loads(notes.read_text())["messages"][0]["role"] == "system"


def test_saves_in_the_same_second_get_different_files(tmp_path, monkeypatch):
    from hailo_repl import conversation

    class FrozenClock:
        @staticmethod
        def now():
            import datetime

            return datetime.datetime(2026, 11, 27, 1, 2, 3)

    monkeypatch.setattr(conversation, "datetime", types.SimpleNamespace(datetime=FrozenClock))
    first = conversation.save_new_conversation(tmp_path, [{"role": "user", "content": "one"}], "m")
    second = conversation.save_new_conversation(tmp_path, [{"role": "user", "content": "two"}], "m")
    assert first != second
    assert [json.loads(p.read_text())["messages"][0]["content"] for p in (first, second)] == ["one", "two"]


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_history_file_that_cannot_be_used_is_said_once_and_the_chat_goes_on(device, isolated_home, kind):
    history = data_dir(isolated_home) / "history"
    history.parent.mkdir(parents=True)
    history.mkdir() if kind == "folder" else os.mkfifo(history)
    term = device({"replies": [["first"], ["second"]]})
    term.expect(PROMPT)
    term.send("one\r")
    term.expect("first")
    term.send("two\r")
    term.expect("second")
    assert term.quit() == 0
    screen = term.screen_text(size=100_000)
    assert screen.count("Input history is off for this chat") == 1
    assert "Traceback" not in screen and "Loading history failed" not in screen


def test_two_processes_appending_to_one_history_never_interleave(tmp_path):
    history = tmp_path / "history"
    writer = (
        "import sys; from pathlib import Path; from hailo_repl.history import SafeFileHistory\n"
        "h = SafeFileHistory(Path(sys.argv[1]), print)\n"
        "for i in range(40): h.store_string('\\n'.join([sys.argv[2] * 200] * 60))\n"
    )
    processes = [subprocess.Popen([sys.executable, "-c", writer, str(history), tag]) for tag in ("a", "b")]
    assert [p.wait(timeout=60) for p in processes] == [0, 0]
    from hailo_repl.history import SafeFileHistory

    entries = list(SafeFileHistory(history, print).load_history_strings())
    assert len(entries) == 80
    assert all(entry in ("\n".join(["a" * 200] * 60), "\n".join(["b" * 200] * 60)) for entry in entries)


@pytest.mark.e2e
@pytest.mark.parametrize("gap", [0.03, 0.07, 0.3, 0.8])
def test_a_burst_of_ctrl_c_during_a_reply_never_ends_the_chat(device, gap):
    term = device({"replies": [LONG_REPLY, LONG_REPLY, LONG_REPLY, ["still", " here"]], "delay_ms": 10})
    for _ in range(3):
        term.expect(PROMPT)
        term.send("tell me\r")
        term.expect("word3 ")
        for _ in range(3):
            term.interrupt()
            time.sleep(gap)
        term.expect(r"\[interrupted\]")
    term.expect(PROMPT)
    term.send("are you there?\r")
    term.expect("still here")
    assert term.quit() == 0


# ---- freezing ---------------------------------------------------------------------------


def saved_chat(path, turns: int) -> None:
    messages = [{"role": "system", "content": "be brief"}]
    for number in range(turns):
        messages += [
            {"role": "user", "content": f"question {number} " + "lorem ipsum " * 20},
            {"role": "assistant", "content": f"answer {number} " + "dolor sit " * 20},
        ]
    path.write_text(json.dumps({"model": QWEN, "messages": messages}))


@pytest.mark.e2e
def test_a_long_loaded_chat_is_answered_and_ctrl_c_and_sigterm_still_work(device, tmp_path):
    big = tmp_path / "big.json"
    saved_chat(big, 5_000)
    term = device({"replies": [["fitted"], LONG_REPLY], "delay_ms": 10})
    term.expect(PROMPT)
    term.send(f"/load {big}\r")
    term.expect(r"Loaded 10001 messages")
    term.send("and now?\r")
    term.expect(r"\[Context\] Dropped the \d+ oldest turn")
    term.expect("fitted")
    term.send("go on\r")
    term.expect("word3 ")
    term.interrupt()
    term.expect(r"\[interrupted\]")
    term.expect(PROMPT)
    term.child.kill(signal.SIGTERM)
    assert term.wait_for_exit() == 128 + signal.SIGTERM


@pytest.mark.e2e
def test_load_refuses_fifos_devices_and_huge_files_at_once(device, tmp_path):
    fifo = tmp_path / "chat.fifo"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as file:
        file.truncate(33 << 20)
    term = device()
    term.expect(PROMPT)
    term.send(f"/load {fifo}\r")
    term.expect(r"\[Error\] Cannot read .*chat\.fifo: .*FIFO")
    term.send("/load /dev/zero\r")
    term.expect(r"\[Error\] Cannot read /dev/zero: .*device")
    term.send(f"/load {huge}\r")
    term.expect(r"\[Error\] .*huge\.json is larger than 32 MiB")
    assert term.quit() == 0


def test_model_fifo_is_refused_at_once(isolated_home, tmp_path):
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    result = run_installed("--model", str(fifo), "-p", "hi", timeout=30)  # a hang fails in 30 s, not 300
    assert result.returncode == 2 and "FIFO" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.e2e
def test_after_a_suspend_the_terminal_mode_between_prompts_comes_back(device):
    import termios

    term = device({"replies": [LONG_REPLY, ["sent"]], "delay_ms": 10})
    term.expect(PROMPT)
    term.send("long one\r")
    term.expect("word3 ")
    term.child.kill(signal.SIGSTOP)
    # What a shell does on `fg`: its own mode back (echo, line by line, CR to NL)
    attributes = termios.tcgetattr(term.child.child_fd)
    attributes[0] |= termios.ICRNL
    attributes[3] |= termios.ICANON | termios.ECHO
    termios.tcsetattr(term.child.child_fd, termios.TCSANOW, attributes)
    term.child.kill(signal.SIGCONT)

    def own_mode_back() -> bool:  # hailo-repl's: no echo, key by key
        return not termios.tcgetattr(term.child.child_fd)[3] & (termios.ICANON | termios.ECHO)

    term.wait_until(own_mode_back, "hailo-repl's terminal mode after SIGCONT", timeout=10)
    term.send("typed ahead\r")  # sent once the reply ends, not echoed into it
    term.expect("sent")
    assert "typed ahead" not in term.screen_text(size=100_000).split("word3 ")[1].split("You:")[0]
    assert term.quit() == 0


# ---- hostile text on screen -------------------------------------------------------------


@pytest.mark.e2e
def test_text_from_files_commands_and_the_model_reaches_the_screen_without_escapes(device, tmp_path):
    chat = tmp_path / "evil.json"
    chat.write_text(json.dumps({"messages": [{"role": "system", "content": f"be{HOSTILE} evil"}]}))
    term = device({"replies": [["<text>", "\x1b]52;c;", "c3RvbGVu\x07", "ok\u202e", "txt", "\x1b[2J"]]})
    term.expect(PROMPT)
    term.send(f"/load {chat}\r")
    term.expect("Loaded 1 messages")
    term.send("/system\r")
    term.expect(r"System prompt: be\]52;c;c3RvbGVu\[2J\[31m evil")  # neutralised: visible, harmless
    term.send(f"\x1b[200~/nosuch{HOSTILE}\x1b[201~\r")  # pasted: the escapes arrive as text
    term.expect("Unknown command /nosuch")
    term.send(f"\x1b[200~/load /no/such{HOSTILE}\x1b[201~\r")
    term.expect(r"\[Error\] Cannot read /no/such")
    term.send("hi\r")
    term.expect("oktxt")
    assert term.quit() == 0
    written = raw(term)
    assert "\x1b]52" not in written and "\x1b[2J" not in written and "\x1b[31m" not in written
    assert "\u202e" not in written


def test_bidi_controls_are_removed_and_joiners_kept():
    from hailo_repl.streaming import StreamingTextFilter

    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    shown = StreamingTextFilter().feed(f"abc\u202edcba \u2066x\u2069 \u200bzero\ufeff {family} \u200cnj")
    assert shown == f"abcdcba x zero {family} \u200cnj"


def test_a_paragraph_keeps_its_lines_and_tabs_and_loses_its_escapes_and_bidi_marks():
    """Console lines of several lines (a chat's name from its file, a welcome) are cleaned
    whole: a newline beside an escape does not let the escape through."""
    from hailo_repl.streaming import terminal_safe

    assert terminal_safe("one\n\ttwo\nthree") == "one\n\ttwo\nthree"
    assert terminal_safe("one\n\x1b[2Jtwo\t\u202eowt\r\n") == "one\n[2Jtwo\towt\n"


# ---- quiet failures that should be loud, and loud ones that should be quiet ----------------


def test_bytes_that_are_not_utf8_on_stdin_are_replaced_and_every_line_answered(device):
    result = subprocess.run(
        hailo_repl_command() + ["--hef-path", QWEN],
        input=b"caf\xe9 au lait\nsecond line\n",
        capture_output=True,
        env=device.env({"replies": [["one"], ["two"]]}),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == ["one", "two"]
    assert result.stderr.decode().count("not UTF-8") == 1
    first, second = [e["inserted"] for e in device.log.named("generate")]
    assert "caf\ufffd au lait" in first and "second line" in second


@pytest.mark.parametrize("kind", ["folder", "full disk"])
def test_a_log_that_cannot_be_written_never_reaches_the_terminal(device, isolated_home, kind):
    log = isolated_home / "state" / "hailo-repl" / "hailo-repl.log"
    log.parent.mkdir(parents=True)
    log.mkdir() if kind == "folder" else log.symlink_to("/dev/full")
    env = device.env({"replies": [{"tokens": ["Hello", " there"], "fail_after": 1}]})
    result = run_cli("--hef-path", QWEN, "-p", "hi", env=env)
    assert result.returncode == 1  # the failure was logged, or tried to be
    assert "Logging error" not in result.stderr and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: Hailo generation failed:"), result.stderr


@pytest.mark.llama
def test_verbose_adds_the_timing_block_not_llama_cpps_model_dump(isolated_home):
    result = run_installed("--backend", "llama", "--max-tokens", "4", "--verbose", "-p", "hi", env={"PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    assert "eval count:" in result.stderr
    assert "llama.cpp" not in result.stderr.replace("using llama.cpp on the CPU", "")
    assert len(result.stderr.splitlines()) < 15


def test_a_reader_that_goes_away_ends_the_run_quietly(device):
    env = device.env({"replies": [LONG_REPLY], "delay_ms": 2})
    process = subprocess.Popen(
        hailo_repl_command() + ["--hef-path", QWEN, "-p", "hi"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout.read(12) == b"word0 word1 "
    process.stdout.close()  # as `| head -c 12` does
    assert process.wait(timeout=60) in (0, 128 + signal.SIGPIPE)
    assert process.stderr.read() == b""


# ---- privacy ----------------------------------------------------------------------------


@pytest.mark.e2e
def test_history_chats_and_log_are_private_whatever_the_umask(device, isolated_home):
    previous = os.umask(0o022)
    try:
        failing = device.env({"replies": [{"tokens": ["a", "b"], "fail_after": 1}]})
        assert run_cli("--hef-path", QWEN, "-p", "x", env=failing).returncode == 1  # a log entry
        term = device({"replies": [["fine"]]})
        term.expect(PROMPT)
        term.send("my secret\r")
        term.expect("fine")
        term.send("/save\r")
        term.expect(r"\[Info\] Saved")
        assert term.quit() == 0
    finally:
        os.umask(previous)
    written = [p for p in (isolated_home / "data").rglob("*")] + [p for p in (isolated_home / "state").rglob("*")]
    assert any(p.name == "history" for p in written) and any(p.suffix == ".log" for p in written)
    assert any(p.name.startswith("chat-") for p in written)
    for path in written:
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, path


def test_the_log_of_a_failure_holds_no_message_text(device, isolated_home):
    env = device.env({"replies": [{"tokens": ["par", "tial"], "fail_after": 1}]})
    result = run_cli("--hef-path", QWEN, "-p", "my password is hunter2", env=env)
    assert result.returncode == 1 and "Hailo generation failed" in result.stderr
    log = (isolated_home / "state" / "hailo-repl" / "hailo-repl.log").read_text()
    assert "hailo generation failed" in log and "Traceback" in log
    assert "hunter2" not in log


# ---- small ones -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"), [(["-p", ""], "empty"), (["-p", "   "], "empty"), (["--model", ""], "path")]
)
def test_empty_prompts_and_model_paths_are_refused(isolated_home, args, words):
    result = run_cli(*args, env={"PYTHONPATH": ""})
    assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_the_repl_ends_on_sigterm_and_sighup_with_128_plus_n_and_releases(device, signum):
    term = device()
    term.expect(PROMPT)
    term.child.kill(signum)
    assert term.wait_for_exit() == 128 + signum
    assert device.log.names()[-3:] == ["clear_context", "llm_release", "vdevice_release"]


@pytest.mark.e2e
def test_settings_that_would_make_every_message_fail_are_refused(device):
    term = device({"replies": [["fine"]]})
    term.expect(PROMPT)
    term.send("/set max-tokens 5000\r")
    term.expect(r"\[Error\] max-tokens must leave room for your message: at most \d+ .* not 5000")
    term.send("/set max-tokens 100000000000000000000000000000\r")
    term.expect(r"\[Error\] max-tokens must leave room")
    term.send("/set temperature -0\r")
    term.expect(r"\[Info\] temperature = 0\.0\r")
    term.send("still works\r")
    term.expect("fine")
    assert term.quit() == 0


@pytest.mark.e2e
def test_ctrl_z_and_ctrl_space_never_reach_the_message(device):
    term = device({"replies": [["ok"]]})
    term.expect(PROMPT)
    term.send("ab\x1acd\x00ef\r")
    term.expect("ok")
    assert term.quit() == 0
    assert device.log.user_messages_sent() == ["abcdef"]


@pytest.mark.e2e
def test_ctrl_c_during_a_hailo_load_ends_the_chat_once_it_has_loaded(device):
    term = device({"replies": [["never"]], "load_ms": 1500})
    term.expect(r"Ctrl\+C ends the chat once it has loaded")
    term.interrupt()
    term.expect(r"Ending the chat \(Ctrl\+C during the model load\)")
    assert term.wait_for_exit() == 128 + signal.SIGINT
    assert device.log.names()[-1] == "vdevice_release"


# ---- rows that already held -------------------------------------------------------------


def test_escape_sequences_split_across_tokens_never_reach_stdout(device):
    env = device.env({"replies": [["a\x1b", "]52;c;", "eA==\x07b\x1b[", "2Jc\r\x07"]]})
    result = run_cli("--hef-path", QWEN, "-p", "hi", env=env)
    assert result.returncode == 0 and result.stdout == "a]52;c;eA==b[2Jc\n"  # no ESC, BEL or CR left


@pytest.mark.e2e
def test_a_huge_paste_is_refused_in_one_line_and_the_chat_goes_on(device):
    term = device({"replies": [["fine"]], "context_capacity": 2048})
    term.expect(PROMPT)
    term.send("\x1b[200~" + "word " * 20_000 + "\x1b[201~\r")
    term.expect(r"\[Error\] the message needs \d+ tokens", timeout=120)
    term.send("short\r")
    term.expect("fine")
    assert term.quit() == 0


@pytest.mark.e2e
def test_corrupt_wrong_and_binary_chat_files_are_one_line_each(device, tmp_path):
    (tmp_path / "corrupt.json").write_text('{"messages": [')
    (tmp_path / "wrong.json").write_text('{"messages": [{"who": "me"}]}')
    (tmp_path / "binary.json").write_bytes(b"\x00\xff\xfe" * 100)
    term = device()
    term.expect(PROMPT)
    for name, reason in (("corrupt", "not valid JSON"), ("wrong", "no list of role"), ("binary", "not text")):
        term.send(f"/load {tmp_path / name}.json\r")
        term.expect(rf"\[Error\] .*{name}\.json is not a saved conversation \({reason}")
    assert term.quit() == 0
    assert "Traceback" not in term.screen_text(size=100_000)


@pytest.mark.e2e
@pytest.mark.parametrize("when", ["load", "reply"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_during_load_and_reply_release_the_device(device, when, signum):
    term = device({"replies": [LONG_REPLY], "delay_ms": 10, "load_ms": 800})
    if when == "load":
        term.expect("Loading")
    else:
        term.expect(PROMPT)
        term.send("story\r")
        term.expect("word3 ")
    term.child.kill(signum)
    assert term.wait_for_exit() == 128 + signum
    recorded = device.log.names()
    assert recorded[-3:] == ["clear_context", "llm_release", "vdevice_release"]
    if when == "reply":
        [saved] = (Path(os.environ["XDG_DATA_HOME"]) / "hailo-repl" / "sessions").glob("*.json")
        reply = json.loads(saved.read_text())["messages"][-1]
        if signum == signal.SIGHUP:  # a hang-up: the reply runs to its end, then the device is released
            # (its end: the default max-tokens, 512)
            assert reply == {"role": "assistant", "content": "".join(LONG_REPLY[:512]).strip(), "truncated": True}
            assert "abort" not in recorded
        else:  # SIGTERM stops it
            assert reply["interrupted"] and reply["content"].startswith("word0 word1 word2 word3")
            assert "abort" in recorded


@pytest.mark.e2e
def test_a_device_failing_mid_reply_then_retry_and_undo(device):
    failing = {"tokens": ["half", " a"], "fail_after": 1}
    term = device({"replies": [failing, ["whole", " answer"]]})
    term.expect(PROMPT)
    term.send("question\r")
    term.expect(r"\[Error\] Hailo generation failed")
    term.send("/retry\r")
    term.expect("whole answer")
    term.send("/undo\r")
    term.expect(r"\[Info\] Removed the last exchange")
    term.send("/context\r")
    term.expect(r"Context: \[")
    assert term.quit() == 0
    assert "Traceback" not in term.screen_text(size=100_000)
