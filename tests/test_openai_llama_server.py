"""The OpenAI protocol against a real server: llama-cpp-python's own, on 127.0.0.1, serving the
bundled SmolLM2 (the `llama_server` fixture in conftest.py)."""

from __future__ import annotations

import os
import threading
import time

import pytest
from conftest import run_cli
from llama_server import DISCONNECTED
from terminal import Terminal

from hailo_repl.backends.base import GenerationParams
from hailo_repl.backends.openai import OpenAIBackend
from hailo_repl.chat import Chat
from hailo_repl.servers import Endpoint

pytestmark = pytest.mark.llama

PROMPT = "You: "


def openai_args(server) -> list[str]:
    return ["--backend", "openai", "--url", server.url, "--model", server.model, "--temperature", "0"]


def test_a_reply_from_the_server(isolated_home, llama_server):
    result = run_cli(*openai_args(llama_server), "--max-tokens", "40", "-p", "What is the capital of France?")

    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    # stderr: nothing, or (a loaded machine, a cold server) that hailo-repl waits for the first token
    assert all(line.startswith("[Info] waiting for the server") for line in result.stderr.splitlines())


def test_a_multi_turn_chat_keeps_the_conversation(llama_server):
    backend = OpenAIBackend(Endpoint(llama_server.url), llama_server.model)
    backend.load()
    chat = Chat(backend, "You are a helpful assistant.", GenerationParams(temperature=0.0, max_tokens=40))
    try:
        first = "".join(chat.reply("Remember this word: banana.", threading.Event()))
        second = "".join(chat.reply("What did I just tell you?", threading.Event()))
    finally:
        backend.release()

    assert first.strip() and "banana" in second.lower()  # the second turn saw the first
    assert [m["role"] for m in chat.messages] == ["system", "user", "assistant", "user", "assistant"]
    usage = chat.usage()  # llama-cpp-python's server sends no usage: the gauge is an estimate
    assert usage.estimated and usage.capacity == 4096 and usage.used > 0


def test_the_model_list_comes_from_the_server(isolated_home, llama_server):
    result = run_cli("--backend", "openai", "--url", llama_server.url, "--list-models")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"Models on {llama_server.url} (openai):", llama_server.model]


def test_pipe_mode_asks_the_server_which_model(isolated_home, llama_server):
    # One model on the server: no --model needed.
    result = run_cli("--backend", "openai", "--url", llama_server.url, "--max-tokens", "30", stdin="Say hello.\n")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


@pytest.mark.e2e
def test_ctrl_c_in_a_terminal_and_the_server_answers_the_next_message(isolated_home, llama_server):
    env = {name: os.environ[name] for name in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME")}
    term = Terminal([*openai_args(llama_server), "--max-tokens", "3000"], env)
    term.expect(PROMPT)
    term.expect(r"SmolLM2-135M-Instruct · OpenAI API")
    disconnects_before = llama_server.log_text().count(DISCONNECTED)

    term.send("Write a very long story about a dragon.\r")
    term.expect(r"Assistant: \w+\W+\w+\W+\w+")
    term.interrupt()
    term.expect(r"\[interrupted\]")
    term.expect(PROMPT)

    # The server saw the client go and stopped; with --interrupt_requests False a next
    # request would otherwise wait behind up to 3000 tokens.
    deadline = time.monotonic() + 60
    while llama_server.log_text().count(DISCONNECTED) == disconnects_before:
        assert time.monotonic() < deadline, llama_server.log_text()[-2000:]
        time.sleep(0.1)
    term.send("What is the capital of France?\r")
    term.expect("Paris")
    term.expect(PROMPT)
    term.send("/quit\r")
    assert term.wait_for_exit() == 0
