"""/copy: the OSC 52 bytes (plain, tmux, screen), a local clipboard tool, and what is copied."""

import base64
import os
import re
import stat
import threading

from scripted import CommandHarness, ScriptedBackend

from hailo_repl import clipboard
from hailo_repl.backends.base import GenerationParams
from hailo_repl.chat import Chat
from hailo_repl.render import ReplyRenderer

TEXT = "Grüße, 世界 🎉\nsecond line"
ENCODED = base64.b64encode(TEXT.encode("utf-8")).decode("ascii")


def test_plain_osc52_is_esc_bracket_52_c_base64_bel():
    sequence, how = clipboard.clipboard_sequence(TEXT, {})
    assert sequence == f"\x1b]52;c;{ENCODED}\x07"
    assert how == "OSC 52"


def test_inside_tmux_both_the_plain_and_the_passthrough_forms_are_sent():
    sequence, how = clipboard.clipboard_sequence(TEXT, {"TMUX": "/tmp/tmux-0/default,1,0"})
    plain = f"\x1b]52;c;{ENCODED}\x07"
    # set-clipboard on takes the first; allow-passthrough on the second (ESCs doubled inside).
    assert sequence == plain + f"\x1bPtmux;\x1b\x1b]52;c;{ENCODED}\x07\x1b\\"
    assert how == "OSC 52 through tmux"


def test_inside_screen_the_sequence_goes_in_short_dcs_chunks():
    long_text = "x" * 500
    sequence, how = clipboard.clipboard_sequence(long_text, {"STY": "1234.pts-0.pi"})
    chunks = re.findall(r"\x1bP(.*?)\x1b\\", sequence, re.S)
    assert "".join(chunks) == clipboard.osc52(long_text)
    assert all(len(chunk) <= 76 for chunk in chunks) and len(chunks) > 1
    assert sequence == "".join(f"\x1bP{chunk}\x1b\\" for chunk in chunks)
    assert how == "OSC 52 through screen"


def fake_tool(tmp_path, name):
    """A clipboard tool on PATH that keeps what it was given."""
    kept = tmp_path / f"{name}.out"
    script = tmp_path / "bin" / name
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"#!/bin/sh\ncat > {kept}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return kept


def test_on_a_local_desktop_a_clipboard_tool_is_used_too(tmp_path, monkeypatch):
    kept = fake_tool(tmp_path, "wl-copy")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    written = []
    how = clipboard.copy(TEXT, written.append, {"WAYLAND_DISPLAY": "wayland-0"})
    assert how == "OSC 52 and wl-copy"
    assert kept.read_text() == TEXT
    assert written == [f"\x1b]52;c;{ENCODED}\x07"]


def test_over_ssh_no_local_tool_is_used(tmp_path, monkeypatch):
    kept = fake_tool(tmp_path, "wl-copy")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    how = clipboard.copy(TEXT, lambda text: None, {"WAYLAND_DISPLAY": "w", "SSH_CONNECTION": "10.0.0.2 5 10.0.0.3 22"})
    assert how == "OSC 52" and not kept.exists()


REPLY = "Two ways:\n```python\nprint('one')\n```\nor\n```sh\necho two\n```\nDone."


def copied(output):
    (encoded,) = re.findall(r"\x1b\]52;c;([A-Za-z0-9+/=]*)\x07", output)
    return base64.b64decode(encoded).decode("utf-8")


def test_copy_the_last_reply_a_numbered_code_block_or_all(monkeypatch):
    for variable in ("TMUX", "STY", "WAYLAND_DISPLAY", "DISPLAY"):
        monkeypatch.delenv(variable, raising=False)
    context = CommandHarness(Chat(ScriptedBackend([REPLY]), "Be brief.", GenerationParams()))
    assert context.run("/copy") == "No reply to copy yet.\n"
    list(context.chat.reply("How do I print?", threading.Event()))

    out = context.run("/copy")
    assert copied(out) == REPLY
    assert out.endswith(f"[Info] Copied the last reply ({len(REPLY)} characters) to the clipboard (OSC 52).\n")
    assert copied(context.run("/copy 2")) == "echo two"
    assert "code block 1 of the last reply (12 characters)" in context.run("/copy 1")
    everything = copied(context.run("/copy all"))
    assert everything.startswith(
        "## System prompt\n\nBe brief.\n\n## You\n\nHow do I print?\n\n## Assistant\n\nTwo ways:"
    )
    assert "numbered 1 to 2" in context.run("/copy 3")
    assert "\x1b]52" not in context.run("/copy 0")


def test_copy_reads_a_block_number_as_every_number_is_read(monkeypatch):
    for variable in ("TMUX", "STY", "WAYLAND_DISPLAY", "DISPLAY"):
        monkeypatch.delenv(variable, raising=False)
    context = CommandHarness(Chat(ScriptedBackend([REPLY]), "Be brief.", GenerationParams()))
    list(context.chat.reply("How do I print?", threading.Event()))
    assert copied(context.run("/copy ٢")) == "echo two"  # Arabic-Indic 2, as /set takes it
    for not_a_number in ("²", "①", "1.5", "x"):  # (² and ① are digits to str.isdigit(), which int() refuses)
        assert "numbered 1 to 2" in context.run(f"/copy {not_a_number}")


def test_code_blocks_are_numbered_on_their_fence_lines_as_copy_counts_them():
    renderer = ReplyRenderer(color=True)
    shown = renderer.feed(REPLY) + renderer.flush()
    assert "```python \x1b[2m[1]\x1b[0m\n" in shown and "```sh \x1b[2m[2]\x1b[0m\n" in shown
    plain = ReplyRenderer(color=False)
    assert "```sh [2]\n" in plain.feed(REPLY) + plain.flush()
