"""End-to-end: the installed hailo-repl in a real pseudo-terminal, driven like a user would."""

import os
import signal
from pathlib import Path

import pytest
from conftest import remember_qwen_where_keeping_pays
from terminal import PROMPT, Terminal, device_messages

pytestmark = pytest.mark.e2e

SLOW_REPLY = [f"word{i} " for i in range(400)]
HELLO = {
    "replies": [["<text>", "Hello", " from", " Hailo", "</text>"], SLOW_REPLY, ["After", " the", " stop"]],
    "delay_ms": 30,
}


def test_a_session_on_the_hailo_double(double_terminal, fake_log):
    term = double_terminal(HELLO)
    term.expect("Commands:")
    term.expect(PROMPT)
    term.expect("Qwen2.5-1.5B-Instruct · Hailo-10H")  # the toolbar
    term.expect(r"ctx 0/4096 \(0%\)")

    term.send("/he\t")
    term.expect("lp")  # the completion, drawn whole or as the part added to "/he"
    term.send("\r")
    term.expect("Alt\\+Enter")  # /help's text: Tab completed /he
    term.expect(PROMPT)

    term.send("Hi there\r")
    term.expect("Assistant: Hello from Hailo")
    term.expect(PROMPT)
    term.expect(r"ctx [1-9]\d*/4096")  # the gauge moved after the reply

    term.send("Tell me everything\r")
    term.expect_screen("word5 ")
    term.interrupt()
    term.expect(r"\[interrupted\]")
    term.expect(PROMPT)
    assert term.child.isalive()

    term.send("Go on\r")
    term.expect("After the stop")
    term.expect(PROMPT)

    term.send("\x1b[A")  # Up recalls the last message
    term.expect("Go on")
    term.send("\x15/quit\r")  # Ctrl+U clears the recalled line first
    assert term.wait_for_exit() == 0

    recorded = fake_log()
    assert any(e["event"] == "abort" for e in recorded)
    generated = [e for e in recorded if e["event"] == "generate"]
    # After the abort the device held unseen tokens: it starts afresh with the reply as shown (the
    # system prompt's context is kept only as this first chat releases the model).
    last = generated[-1]
    assert last["held"] == ""
    sent = device_messages(last["held"] + last["inserted"])
    assert [role for role, _ in sent] == ["system", "user", "assistant", "user", "assistant", "user"]
    interrupted = sent[4][1]
    assert "word5" in interrupted and interrupted in term.screen_text(100_000)
    assert [e["event"] for e in recorded][-3:] == ["clear_context", "llm_release", "vdevice_release"]


def test_ctrl_c_on_an_empty_prompt_says_how_to_quit_and_ctrl_d_ends_the_chat(double_terminal, fake_log):
    term = double_terminal(HELLO)
    term.expect(PROMPT)
    term.send("\x03")
    term.expect(r"Ctrl\+D or /quit ends the chat\.")
    term.expect(PROMPT)
    term.send("\x04")
    assert term.wait_for_exit() == 0
    assert fake_log()[-1]["event"] == "vdevice_release"


def test_the_model_picker_in_a_terminal(double_terminal, fake_log, hailo_resources):
    hailo_resources("Qwen2.5-Coder-1.5B-Instruct")
    term = double_terminal(HELLO, hef=None)
    term.expect("Which one")
    term.send("2")
    term.send("\r")
    term.expect("chat with Qwen2.5-Coder-1.5B-Instruct on hailo")
    term.expect(PROMPT)
    assert term.quit() == 0
    assert {"event": "llm_open", "hef": "Qwen2.5-Coder-1.5B-Instruct.hef"} in fake_log()


def interrupt_before_the_first_token(term: Terminal, log) -> None:
    """Send a question and press Ctrl+C once it is at the device, which has not answered yet."""
    term.expect(PROMPT)
    asked = len(log.named("generate"))
    term.send("a question\r")
    term.wait_until(lambda: len(log.named("generate")) > asked, "the message at the device")
    term.interrupt()
    term.expect(r"\[interrupted\]")


def test_ctrl_c_while_the_device_evaluates_the_prompt(double_terminal, fake_log):
    term = double_terminal(
        {"replies": [{"tokens": ["late", " and", " more"], "prefill_ms": 3000}, ["Next", " answer"]]}
    )
    interrupt_before_the_first_token(term, fake_log)
    # The prompt is back while the device is still evaluating: it has not aborted yet,
    # though the double holds the GIL while it waits, as HailoRT's bindings do.
    assert "abort" not in fake_log.names()
    assert "late" not in term.before
    term.expect(PROMPT)
    term.send("another\r")
    term.expect("Next answer")
    term.expect(PROMPT)
    assert term.quit() == 0
    assert fake_log.names().count("abort") == 1


def test_a_slow_hailo_load_is_announced_before_the_prompt(double_terminal):
    term = double_terminal({"replies": [["ok"]], "load_ms": 1000})
    term.expect(r"\[Info\] Loading Qwen2.5-1.5B-Instruct")
    term.expect(PROMPT)
    term.send("hi\r")
    term.expect("Assistant: ok")
    assert term.quit() == 0


def test_history_off_leaves_no_file(double_terminal):
    term = double_terminal(HELLO, HAILO_REPL_NOHISTORY="1")
    term.expect(PROMPT)
    term.send("private words\r")
    term.expect("Hello from Hailo")
    term.expect(PROMPT)
    assert term.quit() == 0
    assert not any("private words" in p.read_text() for p in Path(os.environ["XDG_DATA_HOME"]).rglob("history"))


@pytest.mark.llama
def test_a_session_on_llama_cpp_with_smollm2(isolated_home):
    term = Terminal(["--temperature", "0", "--max-tokens", "80"], {})
    term.expect("using llama.cpp on the CPU with SmolLM2-135M-Instruct")
    term.expect(PROMPT)
    term.expect("llama.cpp CPU")  # the toolbar
    term.send("/conte\t")  # "/cont" is also /continue's start
    term.expect("xt")  # the completion, drawn whole or as the part added to "/conte"
    term.send("\r")
    term.expect(r"Context: \[")  # /context's bar: Tab completed /conte
    term.expect(PROMPT)

    term.send("What is the capital of France?\r")
    term.expect("Paris")
    term.expect(PROMPT)

    term.send("Write a very long story about a dragon and a knight.\r")
    term.expect("Assistant: ")
    term.expect(r"\w+ \w+ \w+")  # some words are streaming
    term.interrupt()
    term.expect(r"\[interrupted\]")
    term.expect(PROMPT)

    term.send("Say hello.\r")
    term.expect("Assistant: ")
    term.expect(PROMPT)
    term.send("/stats\r")
    term.expect("Session: +3 replies")
    term.expect(PROMPT)

    # Ctrl+C while llama.cpp evaluates a long prompt, before any token
    long_text = "The quick brown fox jumps over the lazy dog. " * 320  # ~3,500 tokens
    term.send(f"\x1b[200~{long_text}\x1b[201~\r")
    term.expect_screen(r"│ waiting for the first token ")  # the toolbar: llama.cpp is reading the prompt
    term.interrupt()
    term.expect(r"\[interrupted\]")
    assert "Assistant:" not in term.before
    term.expect(PROMPT)
    term.send("Say goodbye.\r")
    term.expect("Assistant: \\S")
    term.expect(PROMPT)

    term.send("\x1b[A")  # Up recalls the last message
    term.expect("Say goodbye")
    term.send("\x15/quit\r")
    assert term.wait_for_exit() == 0


@pytest.mark.llama
def test_a_dumb_terminal_gets_plain_lines_and_a_model_that_loads_behind_the_prompt(isolated_home):
    """TERM=dumb: nothing is redrawn (no frames, no toolbar); llama.cpp, which loads behind the first
    prompt, still loads and answers (it waited for a frame that a dumb terminal never draws)."""
    term = Terminal(
        ["--backend", "llama", "--temperature", "0", "--max-tokens", "16", "--no-history"], {"TERM": "dumb"}
    )
    term.expect(PROMPT)
    term.send("Say hi.\r")
    term.expect("Assistant: ", timeout=60)
    term.expect(PROMPT, timeout=60)
    assert term.quit() == 0
    written = term.transcript.getvalue()
    assert "\x1b[?25l" not in written and "llama.cpp CPU" not in written  # no frame, no toolbar


def test_a_message_typed_while_a_reply_streams_is_sent_after_it(double_terminal, fake_log):
    term = double_terminal({"replies": [[f"t{i} " for i in range(10)], ["Typed", " ahead"]], "delay_ms": 100})
    term.expect(PROMPT)
    term.send("first\r")
    term.expect_screen("t1 ")
    term.send("second\r")  # typed ahead, Enter included
    term.expect("t9 ")
    term.expect("Assistant: Typed ahead")
    term.expect(PROMPT)
    assert term.quit() == 0
    assert fake_log.user_messages_sent() == ["first", "second"]


def test_a_block_pasted_while_a_reply_streams_stays_one_message(double_terminal, fake_log):
    term = double_terminal({"replies": [[f"t{i} " for i in range(10)], ["Got", " it"]], "delay_ms": 100})
    term.expect(PROMPT)
    term.send("first\r")
    term.expect(r"\x1b\[\?2004l")  # the prompt ended and turned bracketed paste off...
    term.expect(r"\x1b\[\?2004h")  # ...and the REPL turned it back on for the reply
    term.expect_screen("t1 ")
    term.send("\x1b[200~line one\rline two\x1b[201~\r")  # what a terminal sends for a paste
    term.expect("Assistant: Got it")
    term.expect(PROMPT)
    assert term.quit() == 0
    assert fake_log.user_messages_sent() == ["first", "line one\nline two"]


def test_a_wait_that_times_out_says_what_the_screen_showed(double_terminal):
    term = double_terminal(HELLO)
    term.expect(PROMPT)
    term.send("/context\r")
    with pytest.raises(AssertionError) as failure:
        term.expect("text that never comes", timeout=1)
    assert "timed out" in str(failure.value) and "[Info] Context: [" in str(failure.value)
    assert term.quit() == 0


def test_ctrl_c_while_waiting_for_a_stalled_device_gives_the_prompt_back(double_terminal, fake_log):
    term = double_terminal({"replies": [{"tokens": ["late"], "stall_ms": 4000}, ["Next"]]})
    interrupt_before_the_first_token(term, fake_log)
    term.expect(PROMPT)
    term.send("another\r")  # the device is still stalled on the first reply
    term.expect("Waiting for the previous reply to end on the device")
    term.interrupt()
    term.expect(r"Not sent \(Ctrl\+C\)")
    # Back at the prompt while the device is still stalled: nothing was aborted mid-request.
    assert "abort" not in fake_log.names()
    term.expect(PROMPT)
    term.send("/quit\r")  # waits for the device too: it is released only once the reply has ended
    term.expect("Waiting for the previous reply to end on the device")
    assert term.wait_for_exit() == 0
    recorded = fake_log.names()
    assert recorded.count("generate") == 1 and recorded[-3:] == ["clear_context", "llm_release", "vdevice_release"]


def test_sigterm_during_a_reply_stops_it_before_the_release(double_terminal, fake_log, hailo_resources):
    remember_qwen_where_keeping_pays(hailo_resources)
    term = double_terminal({"replies": [["word "] * 400], "delay_ms": 20})
    term.expect(PROMPT)
    term.send("Tell me everything\r")
    term.expect_screen("word word word")
    term.child.kill(signal.SIGTERM)
    term.wait_for_exit()  # (its exit code is the signal tests' business)
    recorded = fake_log.names()
    kept = ["clear_context", "prefill", "save_context"]  # the system prompt's context, there being time
    assert recorded[recorded.index("abort") :] == ["abort", *kept, "clear_context", "llm_release", "vdevice_release"]
    assert "waited" not in recorded  # nothing reached the device while the reply ran


def test_sighup_during_a_reply_lets_it_end_before_the_release(double_terminal, fake_log, hailo_resources):
    remember_qwen_where_keeping_pays(hailo_resources)
    term = double_terminal({"replies": [["word "] * 100], "delay_ms": 20})
    term.expect(PROMPT)
    term.send("Tell me everything\r")
    term.expect_screen("word word word")
    term.child.kill(signal.SIGHUP)  # as when the SSH link drops
    term.wait_for_exit()
    recorded = fake_log.names()
    after = recorded[recorded.index("generate") :]
    assert "abort" not in after and "llm_release_during_generation" not in after
    # The chat's device context kept (as at a quit), the system prompt's, then the release.
    kept = ["save_context", "clear_context", "prefill", "save_context"]
    assert after[-7:] == [*kept, "clear_context", "llm_release", "vdevice_release"]
    assert "waited" not in recorded


def test_clear_right_after_ctrl_c_waits_for_the_abort(double_terminal, fake_log):
    term = double_terminal({"replies": [["word "] * 400, ["Fresh"]], "delay_ms": 100})
    term.expect(PROMPT)
    term.send("Tell me everything\r")
    term.expect_screen("word word")
    term.interrupt()
    term.expect(PROMPT)
    term.send("/clear\r")  # while the abort may still be on its way
    term.expect(PROMPT)
    term.send("hi\r")
    term.expect("Assistant: Fresh")
    term.expect(PROMPT)
    assert term.quit() == 0
    recorded = fake_log.names()
    chat = recorded[recorded.index("generate") :]  # after the load (and its self-check)
    assert chat.index("abort") < chat.index("clear_context") and "waited" not in recorded
    last = fake_log.named("generate")[-1]
    assert last["held"] == ""
    assert [role for role, _ in device_messages(last["inserted"])] == ["system", "user"]


# ---- vi mode and the external editor -----------------------------------------------------


def test_vi_mode_from_the_config_file_shows_the_mode_in_the_toolbar(double_terminal, fake_log):
    config = Path(os.environ["XDG_CONFIG_HOME"]) / "hailo-repl" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("vi-mode: true\n")
    term = double_terminal(HELLO)
    term.expect(PROMPT)
    term.expect(r"INSERT.*Qwen2\.5-1\.5B-Instruct · Hailo-10H")
    term.send("hello wrold")
    term.send("\x1b")  # Esc: normal mode
    term.expect("NORMAL")
    term.send("bcwworld")  # vi keys: back a word, change it
    term.expect("INSERT")
    send_and_quit(term, "")
    assert fake_log.user_messages_sent() == ["hello world"]


def test_set_vi_mode_applies_from_the_next_prompt(double_terminal):
    term = double_terminal(HELLO)
    term.expect(PROMPT)
    term.send("/set vi-mode on\r")
    term.expect(r"vi-mode = true")
    term.expect(r"INSERT.*Qwen2\.5-1\.5B-Instruct · Hailo-10H")
    assert term.quit() == 0


@pytest.fixture
def editor(tmp_path):
    """An $EDITOR that rewrites the file it is given to 'edited: <what was there>'."""
    script = tmp_path / "editor.sh"
    script.write_text('#!/bin/sh\nprintf "edited: %s\\n" "$(cat "$1")" > "$1"\n')
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize(
    ("flags", "keys", "then"),
    [([], "\x18\x05", " more"), ([], "\x07", " more"), (["--vi"], "\x1bv", "A more")],
    ids=["Ctrl+X Ctrl+E", "Ctrl+G", "vi: Esc v"],
)
def test_the_editor_key_puts_the_edited_text_back_at_the_prompt_unsent(
    double_terminal, fake_log, editor, flags, keys, then
):
    term = double_terminal(HELLO, *flags, EDITOR=editor, VISUAL="")
    term.expect(PROMPT)
    term.send("draft")
    term.send(keys)
    term.expect("edited: draft")
    send_and_quit(term, then)  # in vi, A appends at the end of the line
    assert fake_log.user_messages_sent() == ["edited: draft more"]  # sent once, not on leaving the editor


def send_and_quit(term: Terminal, text: str) -> None:
    """Type `text` and Enter, see the reply, and end the chat."""
    term.send(text + "\r")
    term.expect("Assistant: Hello from Hailo")
    term.expect(PROMPT)
    assert term.quit() == 0
