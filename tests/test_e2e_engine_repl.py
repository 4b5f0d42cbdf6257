"""The REPL through the engine process as a user works in it (daemon: always, on the double, in a
real pty): the keys and commands behave as in a chat in process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from subprocess import PIPE

import pytest
import test_e2e_daemon
from terminal import QWEN, hailo_repl_command
from test_e2e_daemon import PROMPT, saved_chats, words
from test_e2e_hangup import lock_file, start_time_of
from test_saving_edges import first_chat_saved, lock_held_by_another_process

engines = test_e2e_daemon.engines  # the fixture: hailo-repl with daemon: always on the double

pytestmark = pytest.mark.e2e


def the_chat() -> dict:
    [chat] = saved_chats().values()
    return chat


def test_a_reply_found_running_on_c_takes_enter_and_ctrl_c_as_one_sent_here_and_the_prompt_lives_on(engines):
    """A reply still running when `-c` arrives is this terminal's: Enter queues behind it, Ctrl+C
    stops it (kept as shown) and gives the queued message back, and the prompt goes on after it."""
    first = engines([words(300), ["next ", "answer"]], delay_ms=100)
    first.expect(PROMPT)
    first.send("tell me\r")
    first.expect_screen(r"w3 ")
    first.send("/detach\r")
    assert first.wait_for_exit() == 0

    second = engines([["unused"]], "-c")
    second.expect_screen(r"w2\d ")  # the reply goes on here, live
    second.send("and then?\r")
    second.expect_screen(r"queued: and then\?")
    second.send("\x03")  # Ctrl+C: stops the reply
    second.expect(r"\[interrupted\]")
    second.expect_screen(r"You: and then\?")  # the queued message back in the input line, unsent
    second.expect_reply_end()
    second.send("\r")
    second.expect("next answer")
    second.expect_reply_end()
    second.send("\x03")  # Ctrl+C at an empty prompt never ends the chat
    second.expect(r"Ctrl\+D or /quit ends the chat")
    second.send("/quit\r")
    assert second.wait_for_exit() == 0
    messages = [m for m in the_chat()["messages"] if m["role"] != "system"]
    assert [m["content"] for m in messages][2:] == ["and then?", "next answer"]
    stopped = messages[1]
    assert stopped["interrupted"] is True and len(stopped["content"].split()) < 250


LLAMA = "Llama-3.2-1B-Instruct"


def models_opened(tmp_path) -> list[str]:
    """The HEFs the double opened, in order."""
    lines = (tmp_path / "fake.jsonl").read_text().splitlines()
    return [event["hef"] for event in map(json.loads, lines) if event["event"] == "llm_open"]


def test_after_a_model_switch_the_next_terminal_gets_the_model_it_asks_for_loaded_only_if_it_is_not(
    engines, hailo_resources, tmp_path
):
    """/model in a chat on the engine, then a new terminal: asking for the model switched to uses
    it as loaded; asking for the first one again gets that one (not the model the engine has)."""
    hailo_resources(LLAMA)
    first = engines([["an ", "answer"]], HAILO_REPL_KEEP_ALIVE="5m")  # (each model opened starts its script again)
    first.expect(PROMPT)
    first.exchange("hi", "an answer")
    first.send(f"/model {LLAMA}\r")
    first.expect(f"Now chatting with {LLAMA}")
    first.exchange("and you?", "an answer")
    assert first.quit() == 0

    second = engines([["unused"]], "--hef-path", LLAMA)
    second.expect(PROMPT)
    second.exchange("still there?", "an answer")
    assert second.quit() == 0
    assert models_opened(tmp_path) == [f"{QWEN}.hef", f"{LLAMA}.hef"]  # nothing loaded again

    third = engines([["unused"]])  # --hef-path Qwen, as the first asked
    third.expect(PROMPT)
    third.send("who are you?\r")
    third.expect_reply_end()
    assert models_opened(tmp_path) == [f"{QWEN}.hef", f"{LLAMA}.hef", f"{QWEN}.hef"]
    third.expect_screen(f"{QWEN} · Hailo-10H")
    assert third.quit() == 0


def test_commands_typed_while_the_engine_starts_wait_for_it_and_do_what_they_say(engines, tmp_path):
    """The prompt is up before the engine process has opened the chat and loaded the model (a
    chat in process on the Hailo loads it first): a command typed then waits for it, as a message
    does, instead of failing or checking nothing."""
    script = tmp_path / "slow-load.json"
    script.write_text(json.dumps({"replies": [["fine"]], "load_ms": 2000}))
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("not json")
    term = engines([], HAILO_FAKE_SCRIPT=str(script))
    term.expect(PROMPT)
    term.send("/set max-tokens 5000\r")
    term.expect(r"Waiting for the model to load")
    term.expect(r"\[Error\] max-tokens must leave room for your message: at most \d+ .* not 5000")
    term.send(f"/load {corrupt}\r")
    term.expect(r"\[Error\] .*corrupt\.json is not a saved\s+conversation")  # (wrapped at the width)
    term.send("still works\r")
    term.expect("fine")
    assert term.quit() == 0


def test_a_one_shot_through_the_engine_told_to_hang_up_still_writes_the_whole_reply_into_its_pipe(engines):
    """SIGHUP to `hailo-repl -p … > file` on the Hailo (its turn in the engine process): the whole
    reply still goes to the pipe, exit 129, as in process; not a line saying the engine stopped it."""
    tokens = words(20)
    hung_up = engines.piped([tokens], "-p", "tell me", delay_ms=50)
    assert hung_up.stdout.read(3) == "w0 "
    hung_up.send_signal(signal.SIGHUP)
    out, err = hung_up.communicate(timeout=30)
    assert hung_up.returncode == 128 + signal.SIGHUP and err == ""
    assert "w0 " + out == "".join(tokens) + "\n"
    assert the_chat()["messages"][-1] == {"role": "assistant", "content": "".join(tokens).strip()}


@pytest.mark.llama
def test_a_one_shot_through_the_engine_says_when_there_is_no_hailo_device_and_llama_cpp_answers(engines):
    """-p on a Pi whose Hailo-10H is missing: the engine process falls back to llama.cpp, and the
    one-shot says so on stderr, as in process (the engine's line was kept for a terminal only)."""
    env = engines.env([["unused"]], HAILO_FAKE_NO_DEVICE="1")  # (no --hef-path: the model is the engine's pick)
    one_shot = subprocess.Popen(
        hailo_repl_command() + ["--max-tokens", "8", "-p", "hi"], env=env, text=True, stdout=PIPE, stderr=PIPE
    )
    engines.engine()  # (killed at the end by its pid)
    out, err = one_shot.communicate(timeout=120)
    assert one_shot.returncode == 0, err
    assert "No Hailo device found; using llama.cpp on the CPU with SmolLM2-135M-Instruct" in err
    assert len(err.strip().splitlines()) == 1 and out.strip()


def test_a_one_shot_through_the_engine_says_at_once_whom_the_hailo_waits_for(engines):
    """Another hailo-repl (a chat in process, `daemon: never`) holds the Hailo-10H: the engine's
    open waits for it, and the one-shot says so at once, as in process, not silently."""
    holder = {"pid": os.getpid(), "started": start_time_of(os.getpid()), "device": "hailo"}
    lock_file().parent.mkdir(parents=True, exist_ok=True)
    lock_file().write_text(json.dumps({"holders": [holder]}))
    waiting = engines.piped([["Hello"]], "-p", "hi")
    engines.engine()
    line = waiting.stderr.readline()
    assert f"The Hailo-10H is in use by hailo-repl pid {os.getpid()}" in line
    assert waiting.poll() is None  # still waiting
    lock_file().unlink()  # this "process" has ended
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0 and out == "Hello\n" and "Traceback" not in err


def test_a_one_shot_never_lands_in_a_chat_whose_reply_went_on_unwatched(engines):
    """A chat detached mid-reply, then a script's `-p` on the warm engine: it waits while that
    reply runs (one line on stderr), then is a chat of its own; the detached chat keeps only its
    own turns."""
    tokens = words(30)
    first = engines([tokens, ["short"]], delay_ms=100, HAILO_REPL_KEEP_ALIVE="5m")
    first.expect(PROMPT)
    first.send("tell me\r")
    first.expect_screen(r"w3 ")
    first.send("/detach\r")
    assert first.wait_for_exit() == 0

    one_shot = engines.piped([["unused"]], "-p", "quick")
    assert "reply goes on in the engine process; waiting for its end" in one_shot.stderr.readline()
    out, err = one_shot.communicate(timeout=30)
    assert one_shot.returncode == 0 and out == "short\n", err
    whole = "".join(tokens).strip()
    chats = [[m["content"] for m in chat["messages"] if m["role"] != "system"] for chat in saved_chats().values()]
    assert sorted(chats) == [["quick", "short"], ["tell me", whole]]


def test_a_message_sent_while_the_engine_saves_the_reply_before_says_what_it_waits_for(engines, isolated_home):
    """The reply is on screen and over; the engine's save of it waits for a lock another process
    holds: the next message waits for the save, and says so (not "to end on the device")."""
    term = engines([["First", " answer."], ["Second", " answer."], ["Third", " one."]])
    term.expect(PROMPT)
    term.exchange("one", "First answer.")
    path = first_chat_saved(isolated_home)
    with lock_held_by_another_process(path):
        term.exchange("two", "Second answer.")
        term.send("three\r")
        term.expect(r"Waiting for the previous reply to be saved… \(Ctrl\+C to go back\)", timeout=5)
    term.expect("Third one.")
    term.expect_reply_end()
    assert term.quit() == 0


def test_stats_in_a_new_terminal_on_a_warm_engine_count_that_terminals_replies_only(engines):
    first = engines([["an ", "answer"]], HAILO_REPL_KEEP_ALIVE="5m")
    first.expect(PROMPT)
    first.exchange("hi", "an answer")
    first.exchange("again", "an answer")
    assert first.quit() == 0

    second = engines([["unused"]])
    second.expect(PROMPT)
    second.send("/stats\r")
    second.expect("No replies yet.")
    second.exchange("more", "an answer")
    second.send("/stats\r")
    second.expect(r"Session: +1 replies")
    assert second.quit() == 0
