"""The sessions folder as hailo-repl finds it: a file that is not a chat is neither listed nor
resumed, and a chat index with entries of the wrong shape is rebuilt from the files."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import run_cli
from scripted import ScriptedBackend

from hailo_repl.backends.base import GenerationParams
from hailo_repl.chat import Chat
from hailo_repl.conversation import MAX_CHAT_FILE_BYTES
from hailo_repl.sessions import INDEX_NAME, SessionNotFoundError, SessionStore


def sessions(home: Path) -> Path:
    return home / "data" / "hailo-repl" / "sessions"


def a_chat(store: SessionStore, question: str = "Capital of France?") -> str:
    chat = Chat(ScriptedBackend(["Paris."]), "Be brief.", GenerationParams(), store)
    list(chat.reply(question, threading.Event()))
    return chat.session_id


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """hailo-repl without the hailo_platform double: the llama backend."""
    return run_cli(*args)


# ---- files that are not chats --------------------------------------------------------------

NOT_CHATS = {
    "numbers": {"messages": [{"role": "user", "content": 3}]},
    "no-messages": {"messages": []},
    "a-wizard": {"messages": [{"role": "wizard", "content": "hi"}]},
    "a-list": [{"role": "user", "content": "hi"}],
    "text": {"messages": "hi"},
    "settings": {"theme": "dark"},
}


def test_a_json_file_that_is_not_a_chat_is_not_listed_continued_or_resumed(isolated_home):
    store = SessionStore(sessions(isolated_home))
    real = a_chat(store)
    for name, document in NOT_CHATS.items():
        (store.directory / f"{name}.json").write_text(json.dumps(document))
    too_large = {"messages": [{"role": "user", "content": "x" * MAX_CHAT_FILE_BYTES}]}
    (store.directory / "huge.json").write_text(json.dumps(too_large))
    later = time.time() + 3600
    for path in store.directory.glob("*.json"):
        if path.stem != real:
            os.utime(path, (later, later))  # newer than the chat: -c would have picked one

    assert [c.id for c in store.chats()] == [real]
    assert store.latest().id == real  # what -c continues
    listing = run("--list-chats")
    assert listing.returncode == 0 and len(listing.stdout.splitlines()) == 1 and real in listing.stdout

    resumed = run("--resume", "numbers", "-p", "hi")
    # One line, before any backend is opened (no "No Hailo device…, using llama.cpp" line first).
    path = store.directory / "numbers.json"
    assert resumed.returncode == 1
    assert resumed.stderr == f"Error: {path} is not a saved conversation (no list of role/content messages)\n"
    with pytest.raises(SessionNotFoundError, match=r"huge.json is larger than 32 MiB, more than hailo-repl reads"):
        store.find("huge")


def test_a_name_that_cannot_be_followed_is_left_out_of_the_list(isolated_home, hailo_resources, fake_script):
    hailo_resources("Qwen2.5-1.5B-Instruct")  # the double answers: the listing is tested, not a model
    fake_script([{"tokens": ["Hi."]}])
    store = SessionStore(sessions(isolated_home))
    real = a_chat(store)
    (store.directory / "loop.json").symlink_to("loop.json")  # ELOOP on stat, on every listing
    assert [c.id for c in store.chats()] == [real]
    for args in (["--list-chats"], ["--resume", real[:4]], ["-c"]):
        result = run_cli(*args, *([] if args == ["--list-chats"] else ["--max-tokens", "1", "-p", "hi"]), fakes=True)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr


def test_a_listing_runs_no_escape_sequence_from_a_chat(isolated_home):
    store = SessionStore(sessions(isolated_home))
    chat_id = a_chat(store, "a\x1b]0;owned\x07b \x1b[2J piped")  # `cat file | hailo-repl -p …` can start one
    path = store.directory / f"{chat_id}.json"
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "model": "m\x1b[31m\nnext row"}))
    listing = run("--list-chats")
    assert listing.returncode == 0, listing.stderr
    (row,) = listing.stdout.splitlines()  # the model's newline breaks no row
    assert row.startswith(chat_id) and row.endswith("piped") and row.isprintable()  # no ESC, no BEL


# ---- the index -----------------------------------------------------------------------------


def _turns_as_text(entry):
    entry["summary"]["turns"] = "1"


def _updated_as_number(entry):
    entry["summary"]["updated"] = 1764806400


def _model_as_list(entry):
    entry["summary"]["model"] = ["Qwen"]


def _first_words_missing(entry):
    del entry["summary"]["first_words"]


def _turns_as_bool(entry):
    entry["summary"]["turns"] = True


def _another_chats_id(entry):
    entry["summary"]["id"] = "0000beef"


def _summary_as_text(entry):
    entry["summary"] = "Capital of France?"


def _an_extra_field(entry):
    entry["summary"]["colour"] = "red"


BREAKAGES = [
    _turns_as_text,
    _updated_as_number,
    _model_as_list,
    _first_words_missing,
    _turns_as_bool,
    _another_chats_id,
    _summary_as_text,
    _an_extra_field,
]


@pytest.mark.parametrize("breakage", BREAKAGES, ids=lambda f: f.__name__.strip("_"))
def test_an_index_entry_of_the_wrong_shape_is_rebuilt_from_its_file(tmp_path, breakage):
    store = SessionStore(tmp_path / "sessions")
    chat_id = a_chat(store)
    listed = [c.line() for c in store.chats()]
    index_path = store.directory / INDEX_NAME
    good = json.loads(index_path.read_text())
    broken = json.loads(index_path.read_text())
    breakage(broken["files"][f"{chat_id}.json"])
    index_path.write_text(json.dumps(broken))

    assert [c.line() for c in store.chats()] == listed
    assert store.find(chat_id[:4]).id == store.latest().id == chat_id
    assert json.loads(index_path.read_text()) == good  # rebuilt, not met again on the next run


def test_the_installed_program_lists_and_resumes_chats_over_a_broken_index(isolated_home):
    store = SessionStore(sessions(isolated_home))
    chat_id = a_chat(store)
    store.chats()
    index_path = store.directory / INDEX_NAME
    index = json.loads(index_path.read_text())
    index["files"][f"{chat_id}.json"]["summary"].update(turns="x", updated=5, model=None)
    index_path.write_text(json.dumps(index))

    listing = run("--list-chats")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split()[0] == chat_id and "Capital of France?" in listing.stdout
    assert json.loads(index_path.read_text())["files"][f"{chat_id}.json"]["summary"]["turns"] == 1
