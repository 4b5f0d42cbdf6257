"""End-to-end: two REPLs left open on one saved chat (an SSH session and a desktop terminal)
both keep every turn; the one that would overwrite the other's turn goes on as a new chat."""

from __future__ import annotations

import json

import pytest
from terminal import PROMPT, QWEN

pytestmark = pytest.mark.e2e

CHAT_ID = "c0ffee00"


def test_two_repls_open_on_one_chat_keep_every_turn(isolated_home, double_terminal, tmp_path):
    directory = isolated_home / "data" / "hailo-repl" / "sessions"
    directory.mkdir(parents=True)
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
    (directory / f"{CHAT_ID}.json").write_text(json.dumps({"model": QWEN, "messages": history}))

    # Each its own state folder, so its own lock file: on one the second would wait for the first to
    # release the Hailo (instance_lock). Two chats open on one saved chat are as here on llama.cpp
    # or a server; the double shares the device.
    ssh = double_terminal(
        {"replies": [["Rome."]], "delay_ms": 20}, "--resume", CHAT_ID, XDG_STATE_HOME=str(tmp_path / "state-ssh")
    )
    desktop = double_terminal(
        {"replies": [["Berlin."], ["Madrid."]], "delay_ms": 20},
        "--resume",
        CHAT_ID,
        XDG_STATE_HOME=str(tmp_path / "state-desktop"),
    )
    for term in (ssh, desktop):
        term.expect(f"Continuing chat {CHAT_ID}")
        term.expect("Assistant: Paris.")  # the resumed turns shown, then the prompt
        term.expect(PROMPT)

    desktop.exchange("Of Germany?", "Berlin.")
    ssh.send("Of Italy?\r")
    ssh.expect(f"Chat {CHAT_ID} was changed by another hailo-repl")  # said with the reply
    ssh.expect(PROMPT)
    desktop.exchange("Of Spain?", "Madrid.")
    for term in (ssh, desktop):
        assert term.quit() == 0

    chats = {p.stem: json.loads(p.read_text())["messages"] for p in directory.glob("[!.]*.json")}
    turns = {chat: [m["content"] for m in messages[1:]] for chat, messages in chats.items()}
    (forked,) = set(chats) - {CHAT_ID}
    assert turns == {
        CHAT_ID: ["Capital of France?", "Paris.", "Of Germany?", "Berlin.", "Of Spain?", "Madrid."],
        forked: ["Capital of France?", "Paris.", "Of Italy?", "Rome."],
    }
    assert forked in " ".join(ssh.screen_text(4000).split())  # the new chat's id was given
