"""/file, /load and /save take a path as terminals paste a dropped file: in quotes or with
backslash-escaped spaces; Tab completes it in the same quoting."""

from __future__ import annotations

import json

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from scripted import CommandHarness, ScriptedBackend

from hailo_repl.backends.base import GenerationParams
from hailo_repl.chat import Chat, file_message
from hailo_repl.commands import BUILTINS, CommandCompleter

NAME = "my notes.txt"


def harness(tmp_path) -> CommandHarness:
    chat = Chat(ScriptedBackend(default=["Ok."], capacity=2000), "be kind", GenerationParams(max_tokens=20))
    return CommandHarness(chat, sessions_dir=tmp_path / "sessions")


def as_pasted(path) -> list[str]:
    """`path` as terminals paste a dropped file, and as typed plainly."""
    text = str(path)
    return [f"'{text}'", f'"{text}"', text.replace(" ", "\\ "), f"'{text}' ", text]


@pytest.mark.parametrize("form", range(5))
def test_file_takes_a_quoted_or_escaped_path(form, tmp_path):
    path = tmp_path / NAME
    path.write_text("alpha beta\n")
    context = harness(tmp_path)
    said = context.run(f"/file {as_pasted(path)[form]}")
    assert said.startswith(f"[Info] {NAME}: 11 characters"), said
    assert context.chat.attachments == [file_message(NAME, "alpha beta\n")]


@pytest.mark.parametrize("form", range(5))
def test_save_and_load_take_a_quoted_or_escaped_path(form, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a quote taken as part of the name makes a folder here, not elsewhere
    path = tmp_path / "my chat.json"
    context = harness(tmp_path)
    said = context.run(f"/save {as_pasted(path)[form]}")
    assert said == f"[Info] Saved 1 messages to {path}\n"
    assert json.loads(path.read_text())["messages"][0]["content"] == "be kind"
    said = context.run(f"/load {as_pasted(path)[form]}")
    assert said == f"[Info] Loaded 1 messages from {path}\n"


def test_a_name_with_an_apostrophe_is_taken_as_typed(tmp_path):
    path = tmp_path / "John's notes.txt"
    path.write_text("hello\n")
    assert harness(tmp_path).run(f"/file {path}").startswith("[Info] John's notes.txt: 6 characters")


def completions(text: str) -> list[str]:
    event = CompleteEvent(completion_requested=True)
    return [c.text for c in CommandCompleter(BUILTINS).get_completions(Document(text), event)]


def test_tab_completes_a_path_in_the_quoting_it_was_begun_in(tmp_path, monkeypatch):
    (tmp_path / NAME).write_text("x")
    (tmp_path / "my notes, old.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    assert completions("/file my") == [" notes, old.txt", " notes.txt"]  # plain, as before
    assert completions("/file 'my n") == ["otes, old.txt", "otes.txt"]
    assert completions('/file "my n') == ["otes, old.txt", "otes.txt"]
    assert completions("/file my\\ n") == ["otes,\\ old.txt", "otes.txt"]
    assert completions(f"/load '{tmp_path}/my") == [" notes, old.txt", " notes.txt"]

    for begun in ("/file my\\ n", "/file 'my n", '/file "my n'):  # Enter right after Tab attaches the file
        completed = begun + completions(begun)[0]
        assert harness(tmp_path).run(completed).startswith("[Info] my notes, old.txt: 1 characters"), completed
