"""The REPL through the engine process as a user works in it (daemon: always, on the double, in a
real pty): the keys and commands behave as in a chat in process."""

from __future__ import annotations

import pytest
import test_e2e_daemon
from test_e2e_daemon import PROMPT, saved_chats, words

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
