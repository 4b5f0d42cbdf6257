"""End-to-end in a real pseudo-terminal: the remote backends against the Ollama double on
127.0.0.1, and /model switching on the server and on the Hailo double."""

from __future__ import annotations

import os

import pytest
from ollama_double import OllamaDouble, hailo_ollama_reply, ollama_reply
from terminal import Terminal, device_messages

pytestmark = pytest.mark.e2e

PROMPT = "You: "
MODEL = "qwen2:1.5b"


def xdg_env() -> dict[str, str]:
    return {name: os.environ[name] for name in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME")}


def test_ctrl_c_closes_the_stream_and_the_next_message_goes_out(isolated_home):
    slow = ollama_reply([f"word{i} " for i in range(2000)], delay=0.02)
    with OllamaDouble(
        [ollama_reply(["Hello!"], prompt_eval_count=20), slow, ollama_reply(["After", " the stop"])]
    ) as double:
        term = Terminal(["--backend", "ollama", "--url", double.url, "--model", MODEL], xdg_env())
        term.expect("chat with qwen2:1.5b on ollama")
        term.expect(PROMPT)
        term.expect(r"qwen2:1\.5b · Ollama")  # the toolbar

        term.send("Hi\r")
        term.expect("Assistant: Hello!")
        term.expect(PROMPT)
        term.expect(r"ctx 21/32768 \(0%\)")  # the server's counts: 20 prompt + 1 generated

        term.send("Tell me everything\r")
        term.expect("word5 ")
        term.interrupt()
        term.expect(r"\[interrupted\]")
        term.expect(PROMPT)
        assert double.disconnected.wait(10)  # the server saw the client go: it stops generating

        term.send("Go on\r")
        term.expect("After the stop")
        term.expect(PROMPT)
        term.send("/quit\r")
        assert term.wait_for_exit() == 0

    sent = double.requests[-1]["messages"]
    assert [m["content"] for m in sent[1:4]] == ["Hi", "Hello!", "Tell me everything"]
    assert sent[4]["content"].startswith("word0 word1 word2 word3 word4 word5")  # the partial reply is kept
    assert sent[-1]["content"] == "Go on"


def test_hailo_ollama_gauge_is_marked_as_an_estimate(isolated_home):
    double = OllamaDouble([hailo_ollama_reply(["Hi", " there"])], flavour="hailo-ollama")
    with double:
        term = Terminal(["--backend", "hailo-ollama", "--url", double.url], xdg_env())  # one model: no question
        term.expect(PROMPT)
        term.send("Hello\r")
        term.expect("Assistant: Hi there")
        term.expect(PROMPT)
        term.expect(r"ctx ~\d+/4096")
        term.send("/context\r")
        term.expect(r"\d+/4096 \(\d+%, estimated\)")
        term.send("/quit\r")
        assert term.wait_for_exit() == 0


def test_model_switches_the_running_chat_on_a_server(isolated_home):
    models = {"qwen2:1.5b": 32768, "llama3.2:3b": 131072}
    replies = [ollama_reply(["I am Qwen."]), ollama_reply(["I am Llama."])]
    with OllamaDouble(replies, models=models) as double:
        term = Terminal(["--backend", "ollama", "--url", double.url, "--model", MODEL], xdg_env())
        term.expect(PROMPT)
        term.send("Who are you?\r")
        term.expect("I am Qwen.")
        term.expect(PROMPT)

        term.send("/model\r")
        term.expect(r"  llama3\.2:3b\s+\* qwen2:1\.5b")
        term.expect(PROMPT)
        term.send("/model ll\t")
        term.expect("ama3.2:3b")  # Tab completed the server's model name
        term.send("\r")
        term.expect("Now chatting with llama3.2:3b")
        term.expect(PROMPT)
        term.expect(r"llama3\.2:3b · Ollama")
        term.send("And now?\r")
        term.expect("I am Llama.")
        term.expect(PROMPT)
        term.send("/model nosuch\r")
        term.expect(r"\[Error\] nosuch is not among the server's models")
        term.send("/quit\r")
        assert term.wait_for_exit() == 0

    last = double.requests[-1]
    assert last["model"] == "llama3.2:3b"
    assert [m["content"] for m in last["messages"][1:]] == ["Who are you?", "I am Qwen.", "And now?"]


def test_model_on_the_hailo_releases_the_hef_and_loads_the_other(double_terminal, fake_log, hailo_resources):
    hailo_resources("Qwen2.5-Coder-1.5B-Instruct")
    term = double_terminal({"replies": [["Hello"]]})  # each model the double loads starts the script anew
    term.expect(PROMPT)
    term.send("Hi\r")
    term.expect("Assistant: Hello")
    term.expect(PROMPT)
    term.send("/model Qwen2.5-Coder-1.5B-Instruct\r")
    term.expect("Releasing Qwen2.5-1.5B-Instruct and loading Qwen2.5-Coder-1.5B-Instruct")
    term.expect("Now chatting with Qwen2.5-Coder-1.5B-Instruct")
    term.expect(PROMPT)
    term.send("Write code\r")
    term.expect("Assistant: Hello")
    term.expect(PROMPT)
    assert term.quit() == 0

    recorded, names = fake_log(), fake_log.names()
    coder = names.index("llm_open", names.index("llm_release"))
    assert recorded[coder]["hef"] == "Qwen2.5-Coder-1.5B-Instruct.hef"
    assert names.index("vdevice_release") < coder  # the first model was released before the other loaded
    last = fake_log.named("generate")[-1]
    held = device_messages(last["held"] + last["inserted"])
    assert [content for role, content in held if role != "system"] == ["Hi", "Hello", "Write code"]
