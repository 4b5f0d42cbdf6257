"""End-to-end: saved chats in the real REPL — a killed process, -c, /history, /resume with Tab."""

import json
import os
import signal
from pathlib import Path

import pytest
from terminal import Terminal, with_fakes

pytestmark = pytest.mark.e2e

PROMPT = "You: "
QWEN = "Qwen2.5-1.5B-Instruct"


@pytest.fixture
def env(isolated_home, hailo_resources):
    hailo_resources(QWEN)
    return with_fakes(
        {
            "HAILO_RESOURCES_DIR": os.environ["HAILO_RESOURCES_DIR"],
            "XDG_DATA_HOME": os.environ["XDG_DATA_HOME"],
            "XDG_STATE_HOME": os.environ["XDG_STATE_HOME"],
        }
    )


def repl(env, tmp_path, replies, *args) -> Terminal:
    script = tmp_path / f"script-{len(list(tmp_path.glob('script-*')))}.json"
    script.write_text(json.dumps({"replies": replies, "delay_ms": 20}))
    return Terminal(["--hef-path", QWEN, *args], {**env, "HAILO_FAKE_SCRIPT": str(script)})


def saved_chats() -> list[Path]:
    directory = Path(os.environ["XDG_DATA_HOME"]) / "hailo-repl" / "sessions"
    return sorted(p for p in directory.glob("*.json") if not p.name.startswith("."))


def test_sigkill_during_a_reply_loses_only_that_reply_and_c_shows_the_last_turns(env, tmp_path):
    term = repl(env, tmp_path, [["The", " first", " answer."], [f"w{i} " for i in range(500)]])
    term.expect(PROMPT)
    term.send("First question\r")
    term.expect("first answer")
    term.expect(PROMPT)
    term.send("Second question\r")
    term.expect("w5 ")
    os.kill(term.child.pid, signal.SIGKILL)
    term.child.close()

    (path,) = saved_chats()
    contents = [m["content"] for m in json.loads(path.read_text())["messages"]]
    assert contents[1:] == ["First question", "The first answer."]

    again = repl(env, tmp_path, [["Still", " here."]], "-c")
    again.expect(f"Continuing chat {path.stem}")
    again.expect("You: First question")
    again.expect("Assistant: The first answer.")
    again.expect(PROMPT)
    again.expect(r"ctx [1-9]\d*/4096")  # the gauge counts the resumed history before any reply
    again.send("Third question\r")
    again.expect("Still here.")
    again.expect(PROMPT)
    again.send("/quit\r")
    assert again.wait_for_exit() == 0
    contents = [m["content"] for m in json.loads(path.read_text())["messages"]]
    assert contents[-2:] == ["Third question", "Still here."]


def test_history_then_resume_with_tab_inside_the_repl(env, tmp_path):
    first = repl(env, tmp_path, [["About", " tea."]])
    first.expect(PROMPT)
    first.send("Tell me about tea\r")
    first.expect("About tea.")
    first.expect(PROMPT)
    first.send("/quit\r")
    assert first.wait_for_exit() == 0
    (tea,) = saved_chats()

    term = repl(env, tmp_path, [["About", " coffee."], ["More", " tea."]])
    term.expect(PROMPT)
    term.send("And coffee?\r")
    term.expect("About coffee.")
    term.expect(PROMPT)
    term.send("/history tea\r")
    term.expect(f"{tea.stem} .*Tell me about tea")
    term.expect(PROMPT)
    term.send(f"/resume {tea.stem[:3]}\t")
    term.expect(tea.stem[3:])  # Tab completed the id
    term.send("\r")
    term.expect(f"Continuing chat {tea.stem}")
    term.expect("You: Tell me about tea")
    term.expect(PROMPT)
    term.send("Go on\r")
    term.expect("More tea.")
    term.expect(PROMPT)
    term.send("/quit\r")
    assert term.wait_for_exit() == 0

    tea_chat = [m["content"] for m in json.loads(tea.read_text())["messages"]]
    assert tea_chat[1:] == ["Tell me about tea", "About tea.", "Go on", "More tea."]
    assert len(saved_chats()) == 2  # the coffee chat stays saved on its own
