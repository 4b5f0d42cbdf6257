"""End-to-end in the real REPL: saved chats (a killed process, -c, /history, /resume with Tab)
and word-wrap (a streamed reply with CJK at 40 columns, hailo-repl's own lines)."""

import base64
import json
import os
import signal
from pathlib import Path

import pytest
from conftest import FakeLog, remember_device
from prompt_toolkit.utils import get_cwidth
from terminal import ANSI_SEQUENCE, PROMPT, Terminal, device_messages

pytestmark = pytest.mark.e2e


@pytest.fixture
def repl(double_terminal):
    """`repl(replies, *args, **options)`: hailo-repl on the double, 20 ms a token (double_terminal)."""

    def start(replies, *args: str, **options) -> Terminal:
        return double_terminal({"replies": replies, "delay_ms": 20}, *args, **options)

    return start


def saved_chats() -> list[Path]:
    directory = Path(os.environ["XDG_DATA_HOME"]) / "hailo-repl" / "sessions"
    return sorted(p for p in directory.glob("*.json") if not p.name.startswith("."))


def test_sigkill_during_a_reply_loses_only_that_reply_and_c_shows_the_last_turns(repl):
    term = repl([["The", " first", " answer."], [f"w{i} " for i in range(500)]])
    term.expect(PROMPT)
    term.exchange("First question", "first answer")
    term.send("Second question\r")
    term.expect("w5 ")
    os.kill(term.child.pid, signal.SIGKILL)
    term.child.close()

    (path,) = saved_chats()
    contents = [m["content"] for m in json.loads(path.read_text())["messages"]]
    assert contents[1:] == ["First question", "The first answer."]

    again = repl([["Still", " here."]], "-c")
    again.expect(f"Continuing chat {path.stem}")
    again.expect("You: First question")
    again.expect("Assistant: The first answer.")
    again.expect(PROMPT)
    again.expect(r"ctx [1-9]\d*/4096")  # the gauge counts the resumed history before any reply
    again.exchange("Third question", "Still here.")
    assert again.quit() == 0
    contents = [m["content"] for m in json.loads(path.read_text())["messages"]]
    assert contents[-2:] == ["Third question", "Still here."]


def test_history_then_resume_with_tab_inside_the_repl(repl, tmp_path, hailo_resources):
    # A device whose figures say loading a kept context beats reading it again.
    facts = Path(os.environ["XDG_DATA_HOME"]) / "hailo-repl" / "contexts" / "hailo-device-facts.json"
    remember_device(hailo_resources.directory / "Qwen2.5-1.5B-Instruct.hef", facts)
    first = repl([["About", " tea."]])
    first.expect(PROMPT)
    first.exchange("Tell me about tea", "About tea.")
    assert first.quit() == 0
    (tea,) = saved_chats()

    log = FakeLog(tmp_path / "device.jsonl")  # this run's alone
    term = repl([["About", " coffee."], ["More", " tea."]], HAILO_FAKE_LOG=str(log.path))
    term.expect(PROMPT)
    term.exchange("And coffee?", "About coffee.")
    term.exchange("/history tea", f"{tea.stem} .*Tell me about tea")
    term.send(f"/resume {tea.stem[:3]}\t")
    term.expect(tea.stem[3:])  # Tab completed the id
    term.send("\r")
    term.expect(f"Continuing chat {tea.stem}")
    term.expect("You: Tell me about tea")
    term.expect(PROMPT)
    term.exchange("Go on", "More tea.")
    assert term.quit() == 0

    tea_chat = [m["content"] for m in json.loads(tea.read_text())["messages"]]
    assert tea_chat[1:] == ["Tell me about tea", "About tea.", "Go on", "More tea."]
    assert len(saved_chats()) == 2  # the coffee chat stays saved on its own
    # The device loaded the tea chat's context, kept by the first run, and read only "Go on".
    go_on = log.named("generate")[-1]
    assert log.names().count("load_context") == 2  # the system prompt's, then the chat's
    assert [content for _, content in device_messages(go_on["held"])][1:] == ["Tell me about tea", "About tea."]
    assert device_messages(go_on["inserted"]) == [("user", "Go on")]


def reply_lines(term: Terminal, start: str) -> list[str]:
    """The terminal's rows from the last that begins with `start` up to the next prompt."""
    rows = term.screen.scrollback()
    first = max(index for index, row in enumerate(rows) if row.startswith(start))
    end = next(index for index in range(first, len(rows)) if rows[index].startswith(PROMPT.strip()))
    return [row for row in rows[first:end] if row.strip()]


def cells(line: str) -> int:
    return sum(get_cwidth(c) for c in line)


def test_a_streamed_reply_with_cjk_wraps_at_40_columns_and_word_wrap_off_leaves_it(repl):
    english = "Python is a programming language used for many things including web servers."
    chinese = "中文文本没有空格所以每个字都可以换行不会被切成两半。"
    tokens = [piece for word in english.split(" ") for piece in (word, " ")] + list(chinese)
    term = repl([tokens, tokens], cols=40)
    term.expect(PROMPT)
    term.exchange("hi", "半。\r\n\r\n")  # the reply's end as written to the scrollback (a 40-column toolbar is cut)
    lines = reply_lines(term, "Assistant: ")
    assert all(cells(line) <= 40 for line in lines), lines
    words = " ".join(lines).split()
    for word in english.split():  # no word cut at the edge ("i" / "ncluding")
        assert word in words, lines
    assert "".join("".join(lines).split()) == "Assistant:" + "".join(english.split()) + chinese

    term.exchange("/set word-wrap off", "word-wrap = false")
    term.exchange("again", "半。\r\n\r\n")
    raw = term.transcript.getvalue()
    last = ANSI_SEQUENCE.sub("", raw[raw.rindex("Assistant: ") :])
    assert "Assistant: " + english + " " + chinese in last.replace("\r", "")  # one line: the terminal folds it
    assert term.quit() == 0


def test_own_lines_wrap_at_word_boundaries_at_60_columns(repl):
    term = repl([["ok"]], cols=60)
    term.expect(PROMPT)
    term.send("/help\r")
    term.expect("Commands:\r\n")  # /help's first line (the welcome's has commands after it)
    term.expect("Ctrl\\+D")
    term.expect(PROMPT)
    raw = ANSI_SEQUENCE.sub("", term.transcript.getvalue()).replace("\r", "")
    # The welcome (before the first prompt) and /help's text (after its "Commands:" line);
    # not the prompt and toolbar, whose redraws run together once escapes are removed.
    welcome = raw[: raw.index(PROMPT)]
    help_text = raw[raw.rindex("Commands:\n") : raw.rindex(PROMPT)]
    lines = (welcome + help_text).split("\n")
    assert all(cells(line) <= 60 for line in lines), lines
    assert any(line.startswith("Commands: /help") for line in lines)
    shown = " ".join(lines)  # a word cut at the edge would read "Alt+En ter" here
    for word in ("(Alt+Enter", "Ctrl+C", "/history", "/resume", "conversation"):
        assert f" {word} " in shown
    assert term.quit() == 0


def test_p_on_a_terminal_wraps_too(repl):
    words = "Python is a programming language used for many things including web servers and data."
    tokens = [piece for word in words.split(" ") for piece in (" " + word,)]
    term = repl([tokens], "-p", "hi", cols=40)
    assert term.wait_for_exit() == 0
    lines = ANSI_SEQUENCE.sub("", term.transcript.getvalue()).replace("\r", "").split("\n")
    reply = [line for line in lines if line.strip() and "Continuing" not in line]
    assert all(cells(line) <= 40 for line in reply) and len(reply) >= 3, reply
    assert " ".join(reply).split() == words.split()


@pytest.mark.parametrize("tmux", [False, True])
def test_copy_writes_osc52_to_the_terminal(repl, tmux):
    reply = ["Use", " this:\n", "```sh\n", "echo", " 'héllo 世界'\n", "```\n", "Done."]
    more = {"TMUX": "/tmp/tmux-1000/default,99,0"} if tmux else {}
    for variable in ("DISPLAY", "WAYLAND_DISPLAY", "STY"):
        more[variable] = ""
    term = repl([reply], **more)
    term.expect(PROMPT)
    term.send("give me code\r")
    term.expect(r"```sh .*\[1\]")  # the block's number on its fence line
    term.expect(PROMPT)
    term.exchange("/copy 1", r"Copied code block 1 of the last reply \(15 characters\)")
    assert term.quit() == 0

    raw = term.transcript.getvalue()
    encoded = base64.b64encode("echo 'héllo 世界'".encode()).decode()
    plain = f"\x1b]52;c;{encoded}\x07"
    assert plain in raw
    if tmux:
        assert f"\x1bPtmux;\x1b{plain}\x1b\\" in raw
        assert "(OSC 52 through tmux)" in raw
    else:
        assert "\x1bPtmux;" not in raw and "(OSC 52)" in raw


def test_file_and_continue_in_the_repl(repl, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("The meeting is on Tuesday.\n")
    replies = [["One", " two", " three", " four", " five", " six"], ["seven", " eight."]]
    term = repl(replies, "--max-tokens", "4")
    term.expect(PROMPT)
    term.exchange("/continue", "No reply to continue yet.")
    term.send(f"/file {tmp_path}/no\t")
    term.expect("tes.txt")  # Tab completed the path
    term.exchange("", r"notes.txt: 27 characters, about \d+ tokens")  # Enter sends the completed /file
    term.exchange("When is it?", "One two three four")
    term.exchange("/continue", "seven eight.")
    assert term.quit() == 0
    (chat,) = saved_chats()
    messages = json.loads(chat.read_text())["messages"]
    assert messages[1]["content"].startswith("[File notes.txt]\nThe meeting is on Tuesday.\n[End of file notes.txt]")
    assert messages[1]["content"].endswith("When is it?")
    assert messages[2] == {"role": "assistant", "content": "One two three four", "truncated": True}
    assert messages[3]["role"] == "user" and "Continue" in messages[3]["content"]
