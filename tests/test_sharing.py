"""Two hailo-repl processes on one saved chat, or saving to one config file, lose nothing.

The rule (docs/saved-chats.md): a save rewrites the chat's file only if it is still what
this process last read or wrote; if another process saved a turn in between, this one's
conversation is saved as a new chat and a line says so. `/set --save` edits the config
file under a lock. These tests start real processes, on the hailo_platform double.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from scripted import ScriptedBackend
from terminal import hailo_repl_command, with_fakes

from hailo_repl.backends.base import GenerationParams
from hailo_repl.chat import Chat
from hailo_repl.config_file import load_config
from hailo_repl.sessions import SessionStore

QWEN = "Qwen2.5-1.5B-Instruct"
CHAT_ID = "c0ffee00"
STALL_MS = 2000  # a reply's last token this late: time for the test to stop the process before it saves
HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
]


def sessions(home: Path) -> Path:
    return home / "data" / "hailo-repl" / "sessions"


def saved_chat(home: Path) -> Path:
    """A chat saved earlier, as hailo-repl writes one."""
    path = sessions(home) / f"{CHAT_ID}.json"
    path.parent.mkdir(parents=True)
    document = {"id": CHAT_ID, "model": QWEN, "backend": "hailo", "settings": {}, "messages": HISTORY}
    path.write_text(json.dumps(document))
    return path


def chats_on_disk(home: Path) -> dict[str, list[dict]]:
    return {
        path.stem: json.loads(path.read_text())["messages"]
        for path in sessions(home).glob("*.json")
        if not path.name.startswith(".")
    }


def script_file(tmp_path: Path, name: str, tokens: list[str], stall_ms: int) -> Path:
    """A reply whose last token comes `stall_ms` late."""
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps([{"tokens": tokens, "stall_at": len(tokens) - 1, "stall_ms": stall_ms}]))
    return path


def start(tmp_path: Path, name: str, question: str, stall_ms: int = 0) -> tuple[subprocess.Popen, Path]:
    """`hailo-repl --resume CHAT_ID -p QUESTION` on the double, its reply's last token `stall_ms`
    late (so it saves no sooner); returns it and its device log."""
    log = tmp_path / f"{name}.jsonl"
    env = with_fakes()
    env["HAILO_FAKE_SCRIPT"] = str(script_file(tmp_path, name, [f"Reply {name}", "."], stall_ms))
    env["HAILO_FAKE_LOG"] = str(log)
    # Each its own state folder, so its own lock file: on one it would wait for the others to
    # release the Hailo (instance_lock), which they do only once their replies are saved. Two
    # processes on one chat at once are as here on llama.cpp or a server; the double shares the device.
    env["XDG_STATE_HOME"] = str(tmp_path / f"state-{name}")
    process = subprocess.Popen(
        [*hailo_repl_command(), "--resume", CHAT_ID, "-p", question],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, log


def has_generated(log: Path) -> bool:
    return log.exists() and any(json.loads(line)["event"] == "generate" for line in log.read_text().splitlines())


def stop_once_replying(process: subprocess.Popen, log: Path) -> None:
    """SIGSTOP the process as soon as its reply has started (it has read the chat, not saved it)."""
    deadline = time.monotonic() + 60
    while not has_generated(log):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{log.stem} never started its reply"
        time.sleep(0.01)
    process.send_signal(signal.SIGSTOP)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def where_each_question_is(chats: dict[str, list[dict]], questions: list[str]) -> dict[str, list[str]]:
    return {
        q: [chat for chat, messages in chats.items() if {"role": "user", "content": q} in messages] for q in questions
    }


def test_a_turn_saved_by_another_process_meanwhile_is_kept_and_this_one_goes_on_as_a_new_chat(
    isolated_home, hailo_resources, tmp_path
):
    hailo_resources(QWEN)
    saved_chat(isolated_home)
    # A reads the chat and starts its reply; it is stopped mid-reply while B continues the
    # same chat from start to end; then A finishes: both saved the chat as they read it.
    first, first_log = start(tmp_path, "A", "Question A", stall_ms=STALL_MS)  # stopped well before its reply ends
    try:
        stop_once_replying(first, first_log)
        try:
            second, _ = start(tmp_path, "B", "Question B")
            second_code, second_err = finish(second)
        finally:
            first.send_signal(signal.SIGCONT)
        first_code, first_err = finish(first)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    assert (first_code, second_code) == (0, 0), (first_err, second_err)
    chats = chats_on_disk(isolated_home)
    assert chats[CHAT_ID] == [
        *HISTORY,
        {"role": "user", "content": "Question B"},
        {"role": "assistant", "content": "Reply B."},
    ]
    (forked,) = set(chats) - {CHAT_ID}
    assert chats[forked] == [
        *HISTORY,
        {"role": "user", "content": "Question A"},
        {"role": "assistant", "content": "Reply A."},
    ]
    assert (
        f"[Info] Chat {CHAT_ID} was changed by another hailo-repl since this one read it: this conversation is "
        f"saved as a new chat, {forked}, and both keep their turns." in " ".join(first_err.split())
    )
    assert "new chat" not in second_err
    assert [p.name for p in sessions(isolated_home).iterdir() if p.name.endswith(".lock")] == []


def test_three_processes_continuing_one_chat_at_once_keep_every_turn(isolated_home, hailo_resources, tmp_path):
    hailo_resources(QWEN)
    saved_chat(isolated_home)
    questions = ["Question A", "Question B", "Question C"]
    # Each is stopped once its reply has started, seconds before it can end and save, so the
    # three overlap: all read the chat before any saves.
    running = [
        start(tmp_path, name, question, stall_ms=STALL_MS) for name, question in zip("ABC", questions, strict=True)
    ]
    try:
        for process, log in running:
            stop_once_replying(process, log)
    finally:
        for process, _ in running:
            process.send_signal(signal.SIGCONT)
    results = [finish(process) for process, _ in running]

    assert [code for code, _ in results] == [0, 0, 0], results
    chats = chats_on_disk(isolated_home)
    # Every question is in exactly one chat, after the history it was asked in; the three
    # overlapped, so the two that saved after the first went on as new chats and said so.
    assert all(len(found) == 1 for found in where_each_question_is(chats, questions).values()), chats
    assert all(messages[: len(HISTORY)] == HISTORY for messages in chats.values())
    notices = sum("saved as a new chat" in " ".join(err.split()) for _, err in results)
    assert (len(chats), notices) == (3, 2), results


def test_two_chats_open_on_one_saved_chat_both_keep_their_turns(tmp_path):
    """Two REPLs left open on one chat: each turn is saved, none overwrites the other's."""
    store = SessionStore(tmp_path / "sessions")
    ssh = Chat(ScriptedBackend(["Paris."], ["Rome."]), "Be brief.", GenerationParams(), store)
    list(ssh.reply("Capital of France?", threading.Event()))
    original = ssh.session_id
    desktop = Chat(ScriptedBackend(["Berlin."], ["Madrid."]), "Be brief.", GenerationParams(), store)
    desktop.resume(original)  # while the first is still open on it

    said: list[str] = []
    list(desktop.reply("Of Germany?", threading.Event(), notify=said.append))
    list(ssh.reply("Of Italy?", threading.Event(), notify=said.append))
    list(desktop.reply("Of Spain?", threading.Event(), notify=said.append))

    def questions(session_id: str) -> list[str]:
        messages = json.loads(store.path_of(session_id).read_text())["messages"]
        return [m["content"] for m in messages if m["role"] == "user"]

    assert desktop.session_id == original != ssh.session_id
    assert questions(desktop.session_id) == ["Capital of France?", "Of Germany?", "Of Spain?"]
    assert questions(ssh.session_id) == ["Capital of France?", "Of Italy?"]
    assert len(said) == 1 and f"saved as a new chat, {ssh.session_id}" in said[0]
    assert sorted(c.id for c in store.chats()) == sorted([desktop.session_id, ssh.session_id])


SAVER = """
import sys, time
from pathlib import Path
from hailo_repl.config_file import save_setting
from hailo_repl.settings import SETTINGS
path, gate, key, *values = sys.argv[1:]
print("at the gate", flush=True)
while not Path(gate).exists():
    time.sleep(0.002)
for value in values:
    save_setting(Path(path), SETTINGS[key], SETTINGS[key].parse(value))
"""

SAVES = {
    "temperature": ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.8", "0.9", "1.1", "0.25"],
    "max-tokens": ["100", "200", "300", "400", "500", "600", "700", "800", "900", "64"],
    "top-p": ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "0.95"],
    "system-prompt": [f"Be brief {n}." for n in range(9)] + ["Answer in French."],
}


def test_processes_saving_settings_at_once_each_keep_their_key(tmp_path):
    """`/set --save` in several hailo-repl processes at once, each a key of its own."""
    config = tmp_path / "config.yaml"
    config.write_text("# my settings\nvi-mode: true\n")
    gate = tmp_path / "go"
    savers = [
        subprocess.Popen(
            [sys.executable, "-c", SAVER, str(config), str(gate), key, *values],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for key, values in SAVES.items()
    ]
    assert all(saver.stdout.readline() == "at the gate\n" for saver in savers)  # all imported, all waiting
    gate.touch()
    errors = [saver.communicate(timeout=120)[1] for saver in savers]

    assert [saver.returncode for saver in savers] == [0] * len(SAVES), errors
    saved = {key: value.value for key, value in load_config(config).items()}
    assert saved == {
        "vi-mode": True,
        "temperature": 0.25,
        "max-tokens": 64,
        "top-p": 0.95,
        "system-prompt": "Answer in French.",
    }
    assert config.read_text().startswith("# my settings\n")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".lock")] == []


def test_a_config_lock_held_too_long_is_one_line(tmp_path, monkeypatch):
    """A process stopped while it holds the lock (Ctrl+Z mid-save): the save gives up with one line."""
    from hailo_repl import private_files
    from hailo_repl.config_file import ConfigFileError, save_setting
    from hailo_repl.settings import SETTINGS

    config = tmp_path / "config.yaml"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from hailo_repl.private_files import update_lock\n"
            "with update_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(30)",
            str(config),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        monkeypatch.setattr(private_files, "LOCK_WAIT_SECONDS", 0.3)
        with pytest.raises(ConfigFileError) as raised:
            save_setting(config, SETTINGS["temperature"], 0.3)
    finally:
        holder.kill()
        holder.wait()
    assert str(raised.value) == (
        f"{config}: cannot write the config file: another process has held {tmp_path / '.config.yaml.lock'} for 0.3 s"
    )
    assert not config.exists()
    save_setting(config, SETTINGS["temperature"], 0.3)  # the holder gone, the lock is free
    assert load_config(config)["temperature"].value == 0.3
