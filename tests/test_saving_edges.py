"""Saving a chat at the edges: a newer hailo-repl's file, a lock that cannot be had, a file
replaced between turns, a save that fails everywhere. Nothing said in a turn is lost, and
-p says with its exit code when it could not keep a turn."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import run_cli
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from scripted import ScriptedBackend

from hailo_repl import private_files
from hailo_repl.backends.base import GenerationParams
from hailo_repl.chat import Chat
from hailo_repl.console import Console
from hailo_repl.conversation import CHAT_FORMAT
from hailo_repl.engine.local import LocalEngine
from hailo_repl.sessions import SessionStore

QWEN = "Qwen2.5-1.5B-Instruct"
CHAT_ID = "abcd1234"


def sessions(home: Path) -> Path:
    return home / "data" / "hailo-repl" / "sessions"


def chats_on_disk(home: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sessions(home).glob("*.json") if not p.name.startswith(".")}


def a_later_versions_chat(home: Path, chat_format: int) -> Path:
    """The probe's chat: written by a later hailo-repl, with fields this one does not know."""
    document = {
        "format": chat_format,
        "id": CHAT_ID,
        "model": QWEN,
        "backend": "hailo",
        "settings": {"temperature": 0.5, "max_tokens": 512, "top_p": None, "seed": 42},
        "created": "2026-12-01T10:00:00+00:00",
        "updated": "2026-12-01T10:05:00+00:00",
        "title": "My important chat",
        "tags": ["work"],
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "q1", "attachments": [{"name": "a.txt", "text": "file text"}]},
            {"role": "assistant", "content": "a1", "reasoning": "long thinking", "tokens": 12},
        ],
    }
    path = sessions(home) / f"{CHAT_ID}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(document))
    return path


# ---- 1. chat files from a newer hailo-repl ----------------------------------------------------


def test_a_chat_with_fields_this_version_does_not_know_keeps_them_when_a_turn_is_saved(
    isolated_home, hailo_resources, fake_script
):
    hailo_resources(QWEN)
    fake_script([["a2"]])
    path = a_later_versions_chat(isolated_home, chat_format=1)

    result = run_cli("--backend", "hailo", "--resume", CHAT_ID, "-p", "q2", fakes=True)

    assert result.returncode == 0, result.stderr
    saved = json.loads(path.read_text())
    assert saved["format"] == CHAT_FORMAT
    assert (saved["title"], saved["tags"]) == ("My important chat", ["work"])
    assert saved["settings"]["seed"] == 42  # a setting this version has not, beside the ones it has
    assert saved["messages"][1]["attachments"] == [{"name": "a.txt", "text": "file text"}]
    assert saved["messages"][2] == {"role": "assistant", "content": "a1", "reasoning": "long thinking", "tokens": 12}
    assert saved["messages"][3:] == [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    assert saved["created"] == "2026-12-01T10:00:00+00:00"
    assert list(chats_on_disk(isolated_home)) == [CHAT_ID]  # the same chat, not a new one


def test_a_chat_of_a_newer_major_format_is_listed_and_resumed_but_never_rewritten(
    isolated_home, hailo_resources, fake_script
):
    hailo_resources(QWEN)
    fake_script([["a2"]])
    path = a_later_versions_chat(isolated_home, chat_format=CHAT_FORMAT + 1)
    before = path.read_bytes()

    listing = run_cli("--list-chats")
    assert CHAT_ID in listing.stdout and "q1" in listing.stdout

    result = run_cli("--backend", "hailo", "--resume", CHAT_ID, "-p", "q2", fakes=True)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "a2"
    assert path.read_bytes() == before
    (new_id,) = set(chats_on_disk(isolated_home)) - {CHAT_ID}
    assert (
        f"[Info] Chat {CHAT_ID} was saved by a newer hailo-repl (format {CHAT_FORMAT + 1}), which this one never "
        f"rewrites: this conversation is saved as a new chat, {new_id}." in " ".join(result.stderr.split())
    )
    new = chats_on_disk(isolated_home)[new_id]
    assert new["format"] == CHAT_FORMAT and "title" not in new  # a later format's fields may mean other things
    assert [m["content"] for m in new["messages"]] == ["sys", "q1", "a1", "q2", "a2"]


def test_a_newer_formats_messages_of_a_kind_this_version_has_not_are_left_in_its_file(
    isolated_home, hailo_resources, fake_script
):
    hailo_resources(QWEN)
    fake_script([["a2"]])
    path = a_later_versions_chat(isolated_home, chat_format=CHAT_FORMAT + 1)
    document = json.loads(path.read_text())
    document["messages"].insert(2, {"role": "tool", "content": '{"weather": "sunny"}', "name": "weather"})
    path.write_text(json.dumps(document))
    before = path.read_bytes()

    assert CHAT_ID in run_cli("--list-chats").stdout
    result = run_cli("--backend", "hailo", "--resume", CHAT_ID, "-p", "q2", fakes=True)

    assert result.returncode == 0, result.stderr
    assert path.read_bytes() == before
    (new_id,) = set(chats_on_disk(isolated_home)) - {CHAT_ID}
    new = chats_on_disk(isolated_home)[new_id]
    assert [(m["role"], m["content"]) for m in new["messages"]][1:] == [
        ("user", "q1"),
        ("assistant", "a1"),
        ("user", "q2"),
        ("assistant", "a2"),
    ]


def test_every_chat_file_written_says_its_format(isolated_home, hailo_resources, fake_script, tmp_path):
    hailo_resources(QWEN)
    fake_script([["a"]])
    assert run_cli("--backend", "hailo", "-p", "q", fakes=True).returncode == 0
    (saved,) = chats_on_disk(isolated_home).values()
    assert saved["format"] == CHAT_FORMAT

    store = SessionStore(tmp_path / "elsewhere")
    chat = Chat(ScriptedBackend(["b"]), "sys", GenerationParams(), store)
    list(chat.reply("q", threading.Event()))
    assert json.loads(store.path_of(chat.session_id).read_text())["format"] == CHAT_FORMAT


def test_save_does_not_replace_a_newer_versions_chat_file_unless_forced(tmp_path):
    from hailo_repl.conversation import NotAChatFile, save_conversation

    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"format": CHAT_FORMAT + 1, "messages": [{"role": "user", "content": "x"}]}))
    with pytest.raises(NotAChatFile, match=rf"was saved by a newer hailo-repl \(format {CHAT_FORMAT + 1}\)"):
        save_conversation(newer, [{"role": "user", "content": "y"}], "m")
    assert json.loads(newer.read_text())["format"] == CHAT_FORMAT + 1
    save_conversation(newer, [{"role": "user", "content": "y"}], "m", replace_any=True)
    assert json.loads(newer.read_text())["messages"] == [{"role": "user", "content": "y"}]


# ---- 2. a turn that cannot be saved -------------------------------------------------------------


def a_chat_of_ours(home: Path) -> Path:
    path = sessions(home) / f"{CHAT_ID}.json"
    path.parent.mkdir(parents=True)
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "q1"}]
    path.write_text(
        json.dumps({"format": 1, "model": QWEN, "messages": [*messages, {"role": "assistant", "content": "a1"}]})
    )
    return path


@contextlib.contextmanager
def lock_held_by_another_process(path: Path) -> Iterator[None]:
    """A process stuck in a save of `path` (stopped with Ctrl+Z, a hung mount) for as long as the block runs."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from hailo_repl.private_files import update_lock\n"
            "with update_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        yield
    finally:
        holder.kill()  # by the pid it recorded
        holder.wait()


def test_a_lock_held_past_the_wait_keeps_the_turn_in_a_new_chat(
    isolated_home, hailo_resources, fake_script, monkeypatch
):
    hailo_resources(QWEN)
    fake_script([["a2"]])
    path = a_chat_of_ours(isolated_home)
    before = path.read_bytes()
    monkeypatch.setattr(private_files, "LOCK_WAIT_SECONDS", 0.3)
    with lock_held_by_another_process(path):
        result = run_cli("--backend", "hailo", "--resume", CHAT_ID, "-p", "q2", fakes=True)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "a2\n"  # the reply's line ended before the save, and nothing after it
    assert path.read_bytes() == before
    (new_id,) = set(chats_on_disk(isolated_home)) - {CHAT_ID}
    assert [m["content"] for m in chats_on_disk(isolated_home)[new_id]["messages"]] == ["sys", "q1", "a1", "q2", "a2"]
    lock = sessions(isolated_home) / f".{CHAT_ID}.json.lock"
    assert (
        f"[Info] Chat {CHAT_ID} could not be saved (another process has held {lock} for 0.3 s): this conversation "
        f"is saved as a new chat, {new_id}." in " ".join(result.stderr.split())
    )


@pytest.mark.parametrize("thing", ["folder", "symlink"])
def test_something_else_at_the_locks_path_is_named_as_the_lock(isolated_home, hailo_resources, fake_script, thing):
    hailo_resources(QWEN)
    fake_script([["a2"]])
    a_chat_of_ours(isolated_home)
    lock = sessions(isolated_home) / f".{CHAT_ID}.json.lock"
    if thing == "folder":
        lock.mkdir()
        there = "a folder"
    else:
        lock.symlink_to("/nonexistent")
        there = "a symlink to /nonexistent"

    result = run_cli("--backend", "hailo", "--resume", CHAT_ID, "-p", "q2", fakes=True)

    assert result.returncode == 0, result.stderr
    (new_id,) = set(chats_on_disk(isolated_home)) - {CHAT_ID}
    assert (
        f"Chat {CHAT_ID} could not be saved ({there} sits where its lock file goes, {lock}; remove it): "
        f"this conversation is saved as a new chat, {new_id}." in " ".join(result.stderr.split())
    )
    assert chats_on_disk(isolated_home)[new_id]["messages"][-1] == {"role": "assistant", "content": "a2"}


def test_p_exits_1_when_its_turn_could_not_be_saved_anywhere(isolated_home, hailo_resources, fake_script):
    hailo_resources(QWEN)
    fake_script([["a"]])
    sessions(isolated_home).parent.mkdir(parents=True)
    sessions(isolated_home).write_text("a file where the sessions folder goes")

    result = run_cli("--backend", "hailo", "-p", "q", fakes=True)

    assert result.returncode == 1
    assert result.stdout == "a\n"  # the reply itself was shown, whole
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"[Error] Cannot save the chat to {sessions(isolated_home)}/")
    assert line.endswith(f": {sessions(isolated_home)} is not a folder")


def test_a_pipe_exits_1_when_the_disk_is_full_and_0_once_a_later_turn_saves_them_all(
    isolated_home, hailo_resources, fake_script, monkeypatch
):
    hailo_resources(QWEN)
    fake_script([["a"], ["b"]])
    real_write = private_files.write_bytes_atomically
    full = {"saves left to fail": 2}

    def write_on_a_full_disk(path, data):
        if full["saves left to fail"]:
            full["saves left to fail"] -= 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, data)

    monkeypatch.setattr("hailo_repl.sessions.write_bytes_atomically", write_on_a_full_disk)
    failed = run_cli("--backend", "hailo", stdin="one\ntwo\n", fakes=True)
    assert failed.returncode == 1
    assert failed.stderr.count("No space left on device") == 2
    assert chats_on_disk(isolated_home) == {}

    full["saves left to fail"] = 1  # the first turn's save fails, the second's writes both
    fake_script([["a"], ["b"]])
    kept = run_cli("--backend", "hailo", stdin="one\ntwo\n", fakes=True)
    assert kept.returncode == 0, kept.stderr
    (saved,) = chats_on_disk(isolated_home).values()
    assert [m["content"] for m in saved["messages"][1:]] == ["one", "a", "two", "b"]


class WaitsToSave:
    """A chat store whose save waits, as for another process's lock, until the reply's end is on screen."""

    writable = True

    def __init__(self, screen: io.StringIO):
        self.screen = screen
        self.end_shown_before_the_save_ended: bool | None = None

    def save(self, record, messages, version, newer_format=None):
        shown = threading.Event()
        for _ in range(500):  # up to 5 s: the time a stuck lock keeps the reply's end from showing today
            if "Hello there\n" in self.screen.getvalue():
                shown.set()
                break
            shown.wait(0.01)
        self.end_shown_before_the_save_ended = shown.is_set()
        return SimpleNamespace(version="saved", moved=None)  # as sessions.Saved


def test_the_replys_last_word_is_shown_before_its_save_ends():
    from hailo_repl.app import Repl
    from hailo_repl.engine.local import LocalEngine

    screen = io.StringIO()
    store = WaitsToSave(screen)
    chat = Chat(ScriptedBackend(["Hello", " there"]), "sys", GenerationParams(), store=store)
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        repl = Repl(
            LocalEngine(chat), history=False, console=Console(screen)
        )  # word-wrap on: "there" waits for the reply's end
        pipe.send_text("hi\r/quit\r")
        assert asyncio.run(repl.run()) == 0
    assert "Assistant: Hello there\n" in screen.getvalue()
    assert store.end_shown_before_the_save_ended is True


# ---- 3. a chat file replaced between turns --------------------------------------------------------


def talk(chat: Chat, question: str) -> None:
    list(chat.reply(question, threading.Event()))


def replaced_between_turns(tmp_path: Path, replace) -> tuple[SessionStore, Chat, list[str], str]:
    store = SessionStore(tmp_path / "sessions")
    chat = Chat(ScriptedBackend(["a1"], ["a2"]), "sys", GenerationParams(), store)
    talk(chat, "q1")
    first = chat.session_id
    path = store.path_of(first)
    path.unlink()
    replace(path)
    lines: list[str] = []
    list(chat.reply("q2", threading.Event(), notify=lines.append))
    return store, chat, lines, first


@pytest.mark.parametrize(
    ("replace", "there"),
    [
        (lambda path: path.mkdir(), "a folder"),
        (lambda path: path.symlink_to("/dev/null"), "a symlink to /dev/null, a device"),
        (lambda path: os.mkfifo(path), "a FIFO"),
    ],
    ids=["folder", "symlink to /dev/null", "fifo"],
)
def test_a_chat_file_replaced_between_turns_is_named_and_the_turn_kept(tmp_path, replace, there):
    store, chat, lines, first = replaced_between_turns(tmp_path, replace)

    path = store.path_of(first)
    assert lines == [
        f"[Info] Chat {first} was replaced by {there} ({path}): this conversation is saved as a new chat, "
        f"{chat.session_id}."
    ]
    saved = json.loads(store.path_of(chat.session_id).read_text())
    assert [m["content"] for m in saved["messages"]] == ["sys", "q1", "a1", "q2", "a2"]


@pytest.mark.parametrize("folder_exists", [False, True])
def test_a_dangling_symlink_in_a_chats_place_creates_nothing_where_it_points(tmp_path, folder_exists):
    elsewhere = tmp_path / "elsewhere"
    if folder_exists:
        elsewhere.mkdir()
    target = elsewhere / "deep" / "x.json" if not folder_exists else elsewhere / "x.json"

    store, chat, lines, first = replaced_between_turns(tmp_path, lambda path: path.symlink_to(target))

    assert lines == [
        f"[Info] Chat {first} was replaced by a symlink to {target}, which does not exist ({store.path_of(first)}): "
        f"this conversation is saved as a new chat, {chat.session_id}."
    ]
    assert not os.path.lexists(target)
    made = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")}
    chats = {"sessions", f"sessions/{first}.json", f"sessions/{chat.session_id}.json"}
    assert made == chats | ({"elsewhere"} if folder_exists else set())


def test_no_write_makes_folders_through_a_symlink(tmp_path):
    """The class of the dangling chat file: /save FILE, the config file, any private file."""
    from hailo_repl.commands import BUILTINS

    link = tmp_path / "notes.json"
    link.symlink_to(tmp_path / "gone" / "deeper" / "notes.json")
    with pytest.raises(FileNotFoundError, match="whose folder does not exist"):
        private_files.write_atomically(link, "text")
    with pytest.raises(FileNotFoundError):
        with private_files.update_lock(link):
            pass

    class Context:
        engine = LocalEngine(Chat(ScriptedBackend(), "sys", GenerationParams()))
        console = Console(io.StringIO())
        sessions_dir = tmp_path / "sessions"

    entry, argument, _ = BUILTINS.parse(f"/save {link}")
    entry.handler(Context, argument)
    assert "whose folder does not exist" in Context.console.stream.getvalue()
    assert not (tmp_path / "gone").exists()

    folder_link = tmp_path / "sessions-on-usb"  # a folder that is a link to an unplugged drive
    folder_link.symlink_to(tmp_path / "usb" / "sessions")
    with pytest.raises(OSError):
        private_files.write_atomically(folder_link / "chat.json", "text")
    assert not (tmp_path / "usb").exists()


def first_chat_saved(home: Path, within: float = 30) -> Path:
    deadline = time.monotonic() + within
    while not (saved := [p for p in sessions(home).glob("*.json") if not p.name.startswith(".")]):
        assert time.monotonic() < deadline, "the first turn was never saved"
        time.sleep(0.01)
    (path,) = saved
    return path


@pytest.mark.e2e
def test_in_the_terminal_a_reply_ends_on_screen_while_its_save_waits_for_a_held_lock(double_terminal, isolated_home):
    replies = [["First", " answer."], ["Second", " answer", " at", " last."], ["Third", " one."]]
    term = double_terminal({"replies": replies})
    term.expect("You: ")
    term.exchange("one", "First answer.")
    path = first_chat_saved(isolated_home)  # (saved once the reply is on screen, not before)
    with lock_held_by_another_process(path):
        term.send("two\r")
        # Within the lock's 10 s wait: the last word (held by the word-wrap until the reply's
        # end) is on screen, and the toolbar says the reply is over.
        term.expect_screen("Second answer at last.", timeout=5)
        term.expect_reply_end(timeout=5)
        term.send("three\r")  # waits for that save, and says what for
        term.expect("Waiting for the previous reply to be saved… \\(Ctrl\\+C to go back\\)", timeout=5)
    term.expect("Third one.")  # the lock let go: the save ends, the next message goes
    term.expect_reply_end()
    assert term.quit() == 0
    assert [m["content"] for m in json.loads(path.read_text())["messages"]][3:] == [
        "two",
        "Second answer at last.",
        "three",
        "Third one.",
    ]


def test_a_folder_where_the_config_files_lock_goes_is_named_as_the_lock(tmp_path):
    """The other file saved under a lock: /set --save's config file."""
    from hailo_repl.config_file import ConfigFileError, save_setting
    from hailo_repl.settings import SETTINGS

    config = tmp_path / "config.yaml"
    lock = tmp_path / ".config.yaml.lock"
    lock.mkdir()
    with pytest.raises(ConfigFileError) as refused:
        save_setting(config, SETTINGS["temperature"], 0.3)
    assert str(refused.value) == (
        f"{config}: cannot write the config file: a folder sits where its lock file goes, {lock}; remove it"
    )
    assert not config.exists()
