"""End-to-end: the installed hailo-repl in a real pseudo-terminal, driven like a user would."""

import json
import os
import time

import pexpect
import pytest

from conftest import FAKES, hailo_repl_command

SLOW_REPLY = [f"word{i} " for i in range(400)]


def spawn(args, env):
    command = hailo_repl_command()
    # pexpect never answers the cursor-position requests a terminal emulator answers at
    # once; prompt_toolkit would then wait 1 s in raw mode after each prompt, and a
    # Ctrl+C sent in that second would be read as a key by the next prompt.
    environment = {**os.environ, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1", **env}
    child = pexpect.spawn(command[0], command[1:] + args, env=environment, encoding="utf-8",
                          dimensions=(30, 110), timeout=120)
    return child


def wait_for_prompt(child):
    child.expect("You: ")


@pytest.fixture
def hailo_env(isolated_home, hailo_resources, tmp_path):
    hailo_resources("Qwen2.5-1.5B-Instruct")
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"replies": [["<text>", "Hello", " from", " Hailo", "</text>"], SLOW_REPLY, ["After", " the", " stop"]],
                                  "delay_ms": 30}))
    log = tmp_path / "fake.jsonl"
    env = {
        "PYTHONPATH": str(FAKES),
        "HAILO_FAKE_SCRIPT": str(script),
        "HAILO_FAKE_LOG": str(log),
        "HAILO_RESOURCES_DIR": os.environ["HAILO_RESOURCES_DIR"],
        "XDG_DATA_HOME": os.environ["XDG_DATA_HOME"],
        "XDG_STATE_HOME": os.environ["XDG_STATE_HOME"],
    }
    return env, log


def test_a_session_on_the_hailo_double(hailo_env):
    env, log = hailo_env
    child = spawn(["--hef-path", "Qwen2.5-1.5B-Instruct"], env)
    child.expect("Commands:")
    wait_for_prompt(child)

    child.send("/he\t")
    child.expect("/help")
    child.send("\r")
    child.expect("Alt\\+Enter")
    wait_for_prompt(child)

    child.send("Hi there\r")
    child.expect("Assistant: Hello from Hailo")
    wait_for_prompt(child)

    child.send("Tell me everything\r")
    child.expect("word5 ")
    child.sendintr()
    child.expect(r"\[interrupted\]")
    wait_for_prompt(child)
    assert child.isalive()

    child.send("Go on\r")
    child.expect("After the stop")
    wait_for_prompt(child)

    child.send("\x1b[A")  # Up recalls the last message
    child.expect("Go on")
    child.send("\x15/quit\r")  # Ctrl+U clears the recalled line first
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(e["event"] == "abort" for e in events)
    generated = [e for e in events if e["event"] == "generate"]
    assert generated[-1]["prompt"] == [{"role": "user", "content": "Go on"}]
    assert [e["event"] for e in events][-3:] == ["clear_context", "llm_release", "vdevice_release"]


def test_ctrl_c_on_an_empty_prompt_and_ctrl_d_end_the_chat(hailo_env):
    env, log = hailo_env
    for key in ("\x03", "\x04"):
        child = spawn(["--hef-path", "Qwen2.5-1.5B-Instruct"], env)
        wait_for_prompt(child)
        child.send(key)
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    assert [json.loads(line)["event"] for line in log.read_text().splitlines()][-1] == "vdevice_release"


def test_a_session_on_llama_cpp_with_smollm2(isolated_home):
    child = spawn(["--temperature", "0", "--max-tokens", "80"], {})
    child.expect("using llama.cpp on the CPU with SmolLM2-135M-Instruct")
    wait_for_prompt(child)
    child.send("/cont\t")
    child.expect("/context")
    child.send("\r")
    child.expect(r"Context: \[")
    wait_for_prompt(child)

    child.send("What is the capital of France?\r")
    child.expect("Paris")
    wait_for_prompt(child)

    child.send("Write a very long story about a dragon and a knight.\r")
    child.expect("Assistant: ")
    child.expect(r"\w+ \w+ \w+")  # some words are streaming
    child.sendintr()
    child.expect(r"\[interrupted\]")
    wait_for_prompt(child)

    child.send("Say hello.\r")
    child.expect("Assistant: ")
    wait_for_prompt(child)
    child.send("/stats\r")
    child.expect("Session: +3 replies")
    wait_for_prompt(child)

    # Ctrl+C while llama.cpp evaluates a long prompt, before any token
    long_text = "The quick brown fox jumps over the lazy dog. " * 320  # ~3,500 tokens
    child.send(f"\x1b[200~{long_text}\x1b[201~\r")
    child.expect(r"\x1b\[\?2004l")  # the prompt has ended: the message is on its way
    time.sleep(0.1)
    child.sendintr()
    child.expect(r"\[interrupted\]")
    assert "Assistant:" not in child.before
    wait_for_prompt(child)
    child.send("Say goodbye.\r")
    child.expect("Assistant: \\S")
    wait_for_prompt(child)

    child.send("\x1b[A")  # Up recalls the last message
    child.expect("Say goodbye")
    child.send("\x15/quit\r")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_the_model_picker_in_a_terminal(hailo_env, hailo_resources):
    env, log = hailo_env
    hailo_resources("Qwen2.5-Coder-1.5B-Instruct")
    child = spawn([], env)
    child.expect("Which one")
    child.send("2")
    child.send("\r")
    child.expect("chat with Qwen2.5-Coder-1.5B-Instruct on hailo")
    wait_for_prompt(child)
    child.send("/quit\r")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert {"event": "llm_open", "hef": "Qwen2.5-Coder-1.5B-Instruct.hef"} in [json.loads(line) for line in log.read_text().splitlines()]


def test_ctrl_c_while_the_device_evaluates_the_prompt(hailo_env, tmp_path):
    env, log = hailo_env
    script = tmp_path / "prefill.json"
    script.write_text(json.dumps({"replies": [{"tokens": ["late"], "prefill_ms": 2000}, ["Next", " answer"]]}))
    child = spawn(["--hef-path", "Qwen2.5-1.5B-Instruct"], {**env, "HAILO_FAKE_SCRIPT": str(script)})
    wait_for_prompt(child)
    child.send("a question\r")
    time.sleep(0.3)
    child.sendintr()
    child.expect(r"\[interrupted\]")
    assert "late" not in child.before
    wait_for_prompt(child)
    child.send("another\r")
    child.expect("Next answer")
    wait_for_prompt(child)
    child.send("/quit\r")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_history_off_leaves_no_file(hailo_env):
    env, _ = hailo_env
    child = spawn(["--hef-path", "Qwen2.5-1.5B-Instruct"], {**env, "HAILO_REPL_NOHISTORY": "1"})
    wait_for_prompt(child)
    child.send("private words\r")
    child.expect("Hello from Hailo")
    wait_for_prompt(child)
    child.send("/quit\r")
    child.expect(pexpect.EOF)
    child.close()
    data = os.environ["XDG_DATA_HOME"]
    assert not any("private words" in p.read_text() for p in __import__("pathlib").Path(data).rglob("history"))
