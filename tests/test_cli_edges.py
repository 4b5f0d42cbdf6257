"""The command line's edges: a reader that goes away, options before a subcommand, the
lines printed before the prompt on a narrow terminal, and stdin with -p.

In-process (`main(argv)` with the streams replaced) wherever the process boundary is not
what is tested; the closed pipe starts real processes."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys

import pytest
from conftest import hailo_repl_command, run_cli
from terminal import user_messages_sent, with_fakes

from hailo_repl.cli import SUBCOMMANDS, main
from hailo_repl.wrap import wrap_text

QWEN = "Qwen2.5-1.5B-Instruct"
NARROW = 40


@pytest.fixture(autouse=True)
def signal_handlers_kept():
    """main() installs its SIGTERM/SIGHUP handlers; the test process gets its own back."""
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP)}
    yield
    for signum, handler in kept.items():
        signal.signal(signum, handler)


class TerminalStream(io.StringIO):
    """A stream that says it is a terminal (its width comes from $COLUMNS)."""

    def isatty(self) -> bool:
        return True


# ---- 5. a reader that goes away --------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--list-chats"],
        ["--list-models"],
        ["--list-models", "--quiet"],
        ["--show-config"],
        ["config"],
        ["completions", "bash"],
        ["doctor"],
        ["--help"],
        ["config", "--help"],
        ["--version"],
    ],
)
def test_every_command_ends_quietly_with_141_when_its_reader_has_gone(args, isolated_home):
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before the first line, as `| head -0` or a closed pager
    try:
        result = subprocess.run(
            hailo_repl_command() + args,
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": ""},
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 128 + signal.SIGPIPE, result.stderr
    assert result.stderr == b""  # no "Exception ignored … BrokenPipeError"


# ---- 12. options before a subcommand ---------------------------------------------------


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exit:  # argparse's --help and usage errors
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def test_options_before_a_subcommand_work_as_after_it(isolated_home, capsys, monkeypatch):
    monkeypatch.setenv("HAILO_FAKE_NO_DEVICE", "1")
    before = run_main(["--backend", "hailo", "doctor"], capsys)
    after = run_main(["doctor", "--backend", "hailo"], capsys)
    assert before == after
    code, out, _ = before
    assert code == 1 and "the hailo backend cannot chat" in out  # the hailo backend was asked about

    code, out, _ = run_main(["--temperature", "0.3", "config", "--max-tokens", "9"], capsys)
    assert code == 0
    assert [line.split() for line in out.splitlines() if line.startswith(("temperature:", "max-tokens:"))] == [
        ["temperature:", "0.3", "#", "flag"],
        ["max-tokens:", "9", "#", "flag"],
    ]


def test_an_option_the_subcommand_does_not_take_is_its_usage_error(isolated_home, capsys):
    code, out, err = run_main(["--prompt", "hi", "doctor"], capsys)
    assert code == 2 and out == ""
    assert "hailo-repl doctor: error: --prompt means nothing to the doctor: it checks what a chat needs" in err


def test_a_subcommand_name_as_an_options_value_is_that_value(isolated_home, capsys):
    code, out, err = run_main(["--resume", "doctor"], capsys)  # a chat id, not the subcommand
    assert code == 1 and out == ""
    assert "doctor" in err and "chat" in err and "Traceback" not in err


def test_help_names_every_subcommand(isolated_home, capsys):
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    text = " ".join(out.split())
    for name, command in SUBCOMMANDS.items():
        assert f"hailo-repl {name} {command.help}" in text


# ---- 7. the lines printed before the prompt wrap at word boundaries -------------------


def fits_in(text: str, width: int) -> bool:
    lines = text.splitlines()
    return len(lines) > 1 and all(len(line) <= width for line in lines)


@pytest.mark.llama
def test_the_no_hailo_device_notice_wraps_at_word_boundaries(isolated_home, capsys, monkeypatch):
    monkeypatch.setenv("HAILO_FAKE_NO_DEVICE", "1")
    monkeypatch.setenv("COLUMNS", str(NARROW))
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    terminal = TerminalStream()
    monkeypatch.setattr(sys, "stderr", terminal)

    assert main(["--max-tokens", "1", "-p", "hi"]) == 0

    notice = "No Hailo device found; using llama.cpp on the CPU with SmolLM2-135M-Instruct"
    assert terminal.getvalue() == wrap_text(notice, NARROW) + "\n"
    assert fits_in(terminal.getvalue(), NARROW) and terminal.getvalue().split() == notice.split()


def lines_before_the_prompt(stream: io.StringIO, flags: list[str], monkeypatch) -> str:
    monkeypatch.setattr(sys, "stderr", stream)
    assert main([*flags, "--resume", "no-such-chat-id"]) == 1  # its error is the line before the prompt
    return stream.getvalue()


def test_lines_before_the_prompt_follow_word_wrap_on_a_terminal(isolated_home, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(NARROW))
    piped = lines_before_the_prompt(io.StringIO(), [], monkeypatch)
    wrapped = lines_before_the_prompt(TerminalStream(), [], monkeypatch)
    unwrapped = lines_before_the_prompt(TerminalStream(), ["--no-word-wrap"], monkeypatch)

    assert "no-such-chat-id" in piped and len(piped.splitlines()) == 1 and len(piped) > NARROW
    assert wrapped == wrap_text(piped.rstrip("\n"), NARROW) + "\n"
    assert fits_in(wrapped, NARROW) and wrapped.split() == piped.split()  # broken between words only
    assert unwrapped == piped  # word-wrap off: the terminal's own wrap, as for replies


# ---- 14. stdin with -p -----------------------------------------------------------------


def test_piped_stdin_goes_before_the_prompt_in_one_message(
    isolated_home, hailo_resources, fake_script, fake_log, capsys, monkeypatch
):
    hailo_resources(QWEN)
    fake_script([{"tokens": ["Sure."]}])
    monkeypatch.setattr(sys, "stdin", io.StringIO("def add(a, b):\n    return a - b\n"))

    assert main(["-p", "What is wrong here?"]) == 0

    sent = user_messages_sent([e for e in fake_log() if e["event"] == "generate"])
    assert sent == ["def add(a, b):\n    return a - b\n\nWhat is wrong here?"]
    assert capsys.readouterr().out == "Sure.\n"


def test_empty_stdin_leaves_the_prompt_alone(isolated_home, hailo_resources, fake_script, fake_log, monkeypatch):
    hailo_resources(QWEN)
    fake_script([{"tokens": ["Hi."]}])
    monkeypatch.setattr(sys, "stdin", io.StringIO(" \n"))

    assert main(["-p", "hello"]) == 0

    assert user_messages_sent([e for e in fake_log() if e["event"] == "generate"]) == ["hello"]


# ---- a standard stream closed before the start -----------------------------------------


@pytest.mark.parametrize(
    ("args", "redirect"),
    [(["--list-chats"], ">&-"), (["config"], ">&-"), (["-p", "hi"], ">&-"), (["-p", "hi"], "<&-")],
)
def test_a_stream_closed_before_the_start_is_no_traceback(args, redirect, isolated_home, hailo_resources, fake_script):
    hailo_resources(QWEN)
    fake_script([{"tokens": ["Hi."]}])
    result = subprocess.run(
        ["sh", "-c", f'exec "$@" {redirect}', "sh", *hailo_repl_command(), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=with_fakes(),
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, b"")
    if redirect == "<&-":  # stdin closed: read as empty, the prompt alone is the message
        assert result.stdout == b"Hi.\n"


@pytest.mark.timeout(60)
def test_a_pipe_that_pours_without_end_is_one_line_not_a_hang(isolated_home, hailo_resources, fake_script):
    hailo_resources(QWEN)
    fake_script([{"tokens": ["Hi."]}])
    pouring = subprocess.Popen(["yes"], stdout=subprocess.PIPE)  # never ends by itself
    try:
        result = subprocess.run(
            hailo_repl_command() + ["-p", "hi"],
            stdin=pouring.stdout,
            capture_output=True,
            text=True,
            env=with_fakes(),
            timeout=45,
        )
    finally:
        pouring.kill()
        pouring.wait()
        pouring.stdout.close()
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == TOO_LONG


TOO_LONG = (
    "Error: stdin holds a message of more than 4 million characters, far more than the context holds; it was not sent\n"
)


@pytest.mark.parametrize("mode", [["--single"], []])
def test_a_message_longer_than_stdin_holds_for_one_is_one_line(mode, isolated_home, hailo_resources, fake_script):
    """--single reads stdin as one message, and without it each line is one: either is capped."""
    hailo_resources(QWEN)
    fake_script([{"tokens": ["Hi."]}])
    result = run_cli(*mode, stdin="hello\n" + "x" * 4_000_001 + "\nnever sent\n", fakes=True)
    assert result.returncode == 1 and result.stderr == TOO_LONG
    assert result.stdout == ("" if mode else "Hi.\n")  # line by line, the lines before it were answered
