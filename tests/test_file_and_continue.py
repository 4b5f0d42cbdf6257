"""/file puts a file's text into the next message (or refuses it); /continue goes on with a cut-off reply."""

import threading

import pytest
from scripted import CommandHarness, ScriptedBackend

from hailo_repl.backends.base import GenerationParams
from hailo_repl.chat import CONTINUE_PROMPT, Chat
from hailo_repl.commands import BUILTINS, CommandCompleter, Send


def harness(backend, max_tokens=20) -> CommandHarness:
    return CommandHarness(Chat(backend, "be kind", GenerationParams(max_tokens=max_tokens)))


@pytest.fixture
def context():
    # ScriptedBackend counts one token a word; 200 tokens of context, 20 kept for the reply.
    return harness(ScriptedBackend(default=["Read", " it."], capacity=200))


def test_a_file_goes_with_the_next_message_after_saying_its_size(context, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("alpha beta gamma\ndelta\n")
    said = context.run(f"/file {notes}")
    assert said.startswith("[Info] notes.md: 23 characters, about ")
    assert "tokens (" in said and "% of the context); it goes with your next message." in said

    list(context.chat.reply("Summarise it", threading.Event()))
    sent = context.chat.backend.prompts[0][-1]
    assert sent == "[File notes.md]\nalpha beta gamma\ndelta\n[End of file notes.md]\n\nSummarise it"
    list(context.chat.reply("next", threading.Event()))
    assert context.chat.backend.prompts[1][-1] == "next"  # only once


def test_a_file_too_big_for_the_context_is_refused(context, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("word " * 400)
    said = context.run(f"/file {big}")
    assert said.startswith("[Error] big.txt needs ")
    assert "not attached" in said
    list(context.chat.reply("hi", threading.Event()))
    assert context.chat.backend.prompts[0][-1] == "hi"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "is not text (it holds binary data)"),
        (b"caf\xe9 latin-1", "is not text (not UTF-8)"),
    ],
)
def test_a_file_that_is_not_text_is_refused(context, tmp_path, content, reason):
    path = tmp_path / "data.bin"
    path.write_bytes(content)
    said = context.run(f"/file {path}")
    assert said == f"[Error] {path} {reason}\n"
    assert context.chat.attachments == []


def test_a_missing_path_or_a_folder_is_one_line(context, tmp_path):
    assert context.run(f"/file {tmp_path / 'nope.txt'}") == f"[Error] {tmp_path / 'nope.txt'} does not exist\n"
    assert context.run(f"/file {tmp_path}") == f"[Error] {tmp_path} is not a file\n"
    assert context.run("/file") == "Usage: /file <path>\n"


def test_file_completes_paths(tmp_path, monkeypatch):
    (tmp_path / "report.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    found = CommandCompleter(BUILTINS).get_completions(Document("/file rep"), CompleteEvent(completion_requested=True))
    assert [c.text for c in found] == ["ort.txt"]


def test_continue_after_a_reply_cut_by_max_tokens_and_refused_after_a_complete_one():
    backend = ScriptedBackend([f"w{i} " for i in range(5)], ["and", " the", " end."], ["Done."])
    context = harness(backend, max_tokens=5)

    list(context.chat.reply("Tell a story", threading.Event()))
    assert context.chat.messages[-1].get("truncated") is True
    context.run("/continue")
    outcome = context.outcome
    assert outcome == Send(CONTINUE_PROMPT)
    list(context.chat.reply(outcome.text, threading.Event()))
    assert backend.prompts[-1][-3:] == ["Tell a story", "w0 w1 w2 w3 w4", CONTINUE_PROMPT]

    assert "truncated" not in context.chat.messages[-1]
    said = context.run("/continue")
    outcome = context.outcome
    assert outcome is None and said.startswith("The last reply is complete")
