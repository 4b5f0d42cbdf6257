"""A conversation that cannot fit the context at all is refused naming what is too long: the
system prompt, or the message (its own tokens, not the system prompt's)."""

from __future__ import annotations

import threading

import pytest
from conftest import run_cli
from scripted import ScriptedBackend

from hailo_repl.backends.base import GenerationParams
from hailo_repl.chat import Chat
from hailo_repl.context import ContextOverflowError

QWEN = "Qwen2.5-1.5B-Instruct"


def test_a_system_prompt_larger_than_the_context_is_named_not_the_message(isolated_home, hailo_resources, fake_script):
    hailo_resources(QWEN)
    fake_script([["never"]])

    result = run_cli("--backend", "hailo", "--system-prompt", "rule " * 6000, "-p", "hello", fakes=True)

    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: the system prompt needs ")
    assert line.endswith("but the context holds 4096; shorten it (--system-prompt, /system)")
    assert "message" not in line and result.stdout == ""


def words(messages):
    return sum(len(m["content"].split()) for m in messages)


class WordCounting(ScriptedBackend):
    def count_tokens(self, messages):
        return words(messages)


def test_a_system_prompt_that_leaves_no_room_for_the_reply_is_named_in_the_repl():
    """/system set too long: the next message is refused naming the system prompt, and the
    fix (a shorter reply) that would make room."""
    chat = Chat(WordCounting(["ok"], capacity=100), "short", GenerationParams(max_tokens=20))
    chat.set_system_prompt("rule " * 90)
    with pytest.raises(ContextOverflowError) as refused:
        list(chat.reply("hello", threading.Event()))
    assert str(refused.value) == (
        "the system prompt needs 90 tokens plus 20 for the reply, but the context holds 100; "
        "shorten it (--system-prompt, /system), or allow a shorter reply (--max-tokens, /set max-tokens)"
    )


def test_a_message_too_long_is_named_with_its_own_tokens_beside_the_system_prompts():
    chat = Chat(WordCounting(["ok"], capacity=100), "rule " * 30, GenerationParams(max_tokens=20))
    with pytest.raises(ContextOverflowError) as refused:
        list(chat.reply("word " * 60, threading.Event()))
    assert str(refused.value) == (
        "the message needs 60 tokens besides the system prompt's 30, plus 20 for the reply, but the context "
        "holds 100; shorten it, or allow a shorter reply (--max-tokens, /set max-tokens)"
    )
