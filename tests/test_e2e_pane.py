"""The output pane in a real terminal (the installed hailo-repl in a pty, read through a
pyte screen): while a reply streams the toolbar is the bottom line and changes, typed text
shows and is sent after the reply, and the scrollback holds the reply once, whatever ends it."""

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from conftest import remember_qwen_where_keeping_pays
from terminal import CPR_REQUEST, Terminal, exit_code_of

pytestmark = pytest.mark.e2e

TOOLBAR = "Qwen2.5-1.5B-Instruct · Hailo-10H │ ctx"
FRAME_START = "\x1b[?25l"  # prompt_toolkit hides the cursor at the start of every frame it draws


def words(count: int, start: int = 0) -> list[str]:
    return [f"w{i} " for i in range(start, start + count)]


def reply_text(tokens: list[str]) -> str:
    return "".join(tokens).strip()


@pytest.fixture
def pane(double_terminal):
    """hailo-repl on the double with `replies` (and per-token `delay_ms`), at its first prompt;
    `pane.log` reads what the double did."""

    def start(replies, delay_ms: int, cols: int = 100, args: tuple[str, ...] = ()) -> Terminal:
        term = double_terminal({"replies": replies, "delay_ms": delay_ms}, *args, rows=30, cols=cols)
        term.expect_screen(TOOLBAR)
        return term

    start.log = double_terminal.log
    return start


def joined_reply(term: Terminal, first_words: str) -> str:
    """The reply as the scrollback holds it: its rows from 'Assistant: <first_words>' to the
    blank row after it (or an [Info] or [Error] line), joined with spaces (word-wrap broke it into rows)."""
    rows = term.screen.scrollback()
    starts = [i for i, row in enumerate(rows) if row.startswith("Assistant: " + first_words)]
    assert len(starts) == 1, f"the reply starts {len(starts)} times in the scrollback:\n" + "\n".join(rows)
    end = next(i for i in range(starts[0] + 1, len(rows)) if not rows[i] or rows[i].startswith(("You:", "[I", "[E")))
    return " ".join(rows[starts[0] : end])


def frames_left_behind(term: Terminal) -> list[str]:
    """Toolbar rows and queued rows anywhere but the bottom frame."""
    rows = term.screen.scrollback()
    last = max(i for i, row in enumerate(rows) if row.strip())
    return [row for row in rows[:last] if TOOLBAR in row or row.startswith("queued: ")]


@pytest.mark.parametrize("tokens_per_second", [5, 20, 100])
def test_while_a_reply_streams_the_toolbar_is_live_and_typed_text_shows_then_is_sent(pane, tokens_per_second):
    count = {5: 25, 20: 80, 100: 300}[tokens_per_second]
    first = words(count)
    # The last word comes 2 s late: the reply is still streaming while the test looks, however slow the test.
    streaming = {"tokens": ["<text>", *first, "</text>"], "stall_at": count, "stall_ms": 2000}
    term = pane([streaming, ["Second", " answer"]], delay_ms=1000 // tokens_per_second)
    term.send("tell me\r")
    term.expect_screen(r"w2 ")
    bottom = term.screen.last_row()
    assert TOOLBAR in bottom and "generating" in bottom
    term.send("and then")
    term.expect_screen(r"You: and then")  # typed text on screen while the reply streams
    term.pump(0.6)
    later = term.screen.last_row()
    assert TOOLBAR in later and later != bottom  # the toolbar changed during the stream (ctx, tok/s, time)
    assert "generating" in later and f"w{count - 1}" not in term.screen_rows()  # still streaming
    term.send("\r")
    term.expect_screen(r"queued: and then")
    term.expect_screen(r"│ 1 queued")
    term.expect_screen(r"Assistant: Second answer")
    term.expect_reply_end()
    assert pane.log.user_messages_sent() == ["tell me", "and then"]
    assert joined_reply(term, "w0 w1") == "Assistant: " + reply_text(first)
    assert frames_left_behind(term) == []
    assert term.quit() == 0


def test_a_resize_during_a_reply_leaves_no_frame_behind(pane):
    first = words(200)
    term = pane([["<text>", *first, "</text>"]], delay_ms=10, cols=80)
    term.send("tell me\r")
    term.expect_screen(r"w30 ")
    term.resize(30, 100)
    term.expect_screen(r"w90 ")
    term.expect_reply_end()
    assert frames_left_behind(term) == []
    assert joined_reply(term, "w0 w1").split() == ("Assistant: " + reply_text(first)).split()
    assert term.quit() == 0


def test_ctrl_c_retry_and_continue_leave_the_scrollback_clean(pane):
    first, second = words(400), words(6, start=1000)
    term = pane(
        [["<text>", *first, "</text>"], ["Goes", " on"], ["<text>", *second, "</text>"]],
        delay_ms=10,
    )
    term.send("tell me\r")
    term.expect_screen(r"w40 ")
    term.send("draft")
    term.expect_screen("You: draft")
    term.send("\x03")  # Ctrl+C: the reply stops, the typed text stays
    term.expect_reply_end()
    assert "[interrupted]" in term.screen_rows()  # (word-wrapped: whole, on the reply's last row or the next)
    assert "You: draft" in term.screen_rows()
    term.send(" more")
    term.expect_screen("You: draft more")  # typing goes on showing after the stop
    interrupted = joined_reply(term, "w0 w1")
    assert "".join(interrupted.split()).endswith("[interrupted]") and "w40" in interrupted
    term.send("\x03")  # Ctrl+C again: the line is cleared
    term.send("/continue\r")
    term.expect_screen(r"Assistant: Goes on")
    term.expect_reply_end()
    term.send("/retry\r")
    term.expect_screen(r"Assistant: w1000")
    term.expect_reply_end()
    assert frames_left_behind(term) == []
    assert joined_reply(term, "w1000") == "Assistant: " + reply_text(second)
    assert joined_reply(term, "Goes") == "Assistant: Goes on"
    assert term.quit() == 0


def test_ctrl_c_keeps_exactly_the_words_the_screen_showed(pane, isolated_home):
    """At 100 tokens a second the screen is drawn 5 times a second, so ~20 words are decoded but
    not shown when Ctrl+C comes: the chat keeps what the screen showed, not them."""
    term = pane([["<text>", *words(400), "</text>"]], delay_ms=10)
    term.send("tell me\r")
    term.expect_screen(r"w40 ")
    term.send("\x03")
    term.expect_reply_end()
    shown = [word for word in joined_reply(term, "w0 w1").split() if re.fullmatch(r"w\d+", word)]
    assert term.quit() == 0
    [saved] = (Path(os.environ["XDG_DATA_HOME"]) / "hailo-repl" / "sessions").glob("*.json")
    reply = json.loads(saved.read_text())["messages"][-1]
    assert reply["interrupted"] and len(shown) >= 40
    assert reply["content"].split() == shown


def test_an_error_mid_stream_leaves_the_scrollback_clean(pane):
    failing = {"tokens": ["<text>", *words(60)], "fail_after": 30}
    term = pane([failing, ["Fine"]], delay_ms=10)
    term.send("tell me\r")
    term.expect_screen(r"\[Error\]")
    term.expect_reply_end()
    reply = joined_reply(term, "w0 w1")
    assert "w28" in reply and "w30" not in reply  # (the 30 tokens include <text>)
    assert frames_left_behind(term) == []
    term.send("again\r")
    term.expect_screen(r"Assistant: Fine")
    assert term.quit() == 0


def test_a_save_error_comes_after_the_replys_last_word(pane):
    sessions = Path(os.environ["XDG_DATA_HOME"]) / "hailo-repl" / "sessions"
    sessions.parent.mkdir(parents=True, exist_ok=True)
    sessions.write_text("not a folder")  # every save of the chat fails
    term = pane([["<text>", *words(30), "</text>"]], delay_ms=10)
    term.send("tell me\r")
    term.expect_screen(r"\[Error\] Cannot save the chat")
    term.expect_reply_end()
    rows = term.screen.scrollback()
    error = next(i for i, row in enumerate(rows) if row.startswith("[Error] Cannot save"))
    # The reply ended (with the word the word-wrap held, and its blank line) before the save.
    assert rows[error - 2].endswith("w29") and rows[error - 1] == ""
    assert joined_reply(term, "w0 w1") == "Assistant: " + reply_text(words(30))
    assert term.quit() == 0


def test_a_paste_taller_than_the_terminal_during_a_reply_leaves_no_frame_behind(pane):
    first = words(200)
    term = pane([["<text>", *first, "</text>"]], delay_ms=20)
    term.send("tell me\r")
    term.expect_screen(r"w20 ")
    pasted = "".join(f"pasted {i}\r" for i in range(40))  # more lines than the terminal's 30 rows (as tmux pastes)
    term.send("\x1b[200~" + pasted + "\x1b[201~")
    term.expect_screen(r"pasted 39")
    term.expect_reply_end()
    assert frames_left_behind(term) == []
    assert joined_reply(term, "w0 w1") == "Assistant: " + reply_text(first)  # each line once
    term.send("\x03")  # the pasted text is cleared, unsent
    assert term.quit() == 0


def test_at_100_tokens_a_second_the_pane_draws_a_few_frames_a_second_not_one_per_token(pane):
    """Every frame is CPU taken from llama.cpp's decoding (reply_channel): text comes a frame at a time."""
    first = words(300)  # ~3 s at 100 tok/s, ~15 lines in 100 columns
    term = pane([first], delay_ms=10)
    start = len(term.transcript.getvalue())
    sent = time.monotonic()
    term.send("tell me\r")
    term.expect_screen(r"w299")
    term.expect_reply_end()
    seconds = time.monotonic() - sent
    frames = term.transcript.getvalue()[start:].count(FRAME_START)
    # 5 frames a second at most, and a few around the reply (the Enter, its end, the next prompt)
    assert frames <= 5 * seconds + 12, f"{frames} frames in {seconds:.1f} s"
    assert joined_reply(term, "w0 w1") == "Assistant: " + reply_text(first)
    assert term.quit() == 0


def test_a_terminal_closed_during_a_reply_lets_it_finish_saves_it_whole_then_releases(pane, hailo_resources):
    remember_qwen_where_keeping_pays(hailo_resources)  # so that there is a device context to keep
    tokens = words(60)  # 3 s at 20 tokens a second
    term = pane([tokens], delay_ms=50)
    term.send("tell me\r")
    term.expect_screen(r"w5 ")
    term.close_window()  # the window closes: the terminal is gone, SIGHUP comes
    assert exit_code_of(term.child.pid, timeout=30) == 128 + signal.SIGHUP
    log = (Path(os.environ["XDG_STATE_HOME"]) / "hailo-repl" / "hailo-repl.log").read_text()
    assert "unexpected" not in log and "Traceback" not in log
    [saved] = (Path(os.environ["XDG_DATA_HOME"]) / "hailo-repl" / "sessions").glob("*.json")
    reply = json.loads(saved.read_text())["messages"][-1]
    assert reply == {"role": "assistant", "content": reply_text(tokens)}  # whole, not flagged interrupted
    recorded = pane.log.names()
    after = recorded[recorded.index("generate") :]
    # Never aborted, nor released while generating: the device context is kept, then released, as at a quit.
    assert "abort" not in after and "llm_release_during_generation" not in after
    assert "save_context" in after and after[-3:] == ["clear_context", "llm_release", "vdevice_release"]


def test_after_a_stopped_reply_the_toolbar_shows_its_speed_not_the_previous_ones(pane):
    fast = {"tokens": ["<text>", *words(40), "</text>"], "delay_ms": 2}
    slow = {"tokens": ["<text>", *words(300, start=100), "</text>"], "delay_ms": 60}
    term = pane([fast, slow], delay_ms=2)
    term.send("first\r")
    term.expect_screen(r"w39")
    term.expect_reply_end()
    previous = re.search(r"│ [\d.]+ tok/s", term.screen.last_row())[0]
    term.send("second\r")
    term.expect_screen(r"w108 ")
    term.send("\x03")
    term.expect_reply_end()
    toolbars = [term.screen.last_row()]  # each toolbar the screen shows, until one has a speed again
    term.wait_until(lambda: toolbars.append(term.screen.last_row()) or "tok/s" in toolbars[-1], "a speed")
    term.send("/stats\r")
    last = term.expect_screen(r"Last reply: +(\d+) tokens, .* ([\d.]+) tok/s")
    assert 5 < int(last[1]) < 300  # the stopped reply's
    assert not [row for row in toolbars if previous in row]
    assert f"│ {last[2]} tok/s" in toolbars[-1], toolbars[-1]
    assert term.quit() == 0


def test_ctrl_c_gives_each_queued_message_back_on_its_own_and_a_command_stays_a_command(pane):
    term = pane([["<text>", *words(300), "</text>"], ["Fresh", " start"]], delay_ms=30)
    term.send("tell me\r")
    term.expect_screen(r"w5 ")
    term.send("/clear\r")
    term.expect_screen(r"queued: /clear")
    term.send("hello after\x1b\rclear\r")  # (two lines: one message)
    term.expect_screen(r"queued: hello after")
    term.send("draft")
    term.expect_screen(r"You: draft")
    term.send("\x03")
    term.expect_reply_end()
    # Nothing more is sent: the first queued message is in the input line, the others wait their turn.
    term.expect_screen(r"next: hello after\nnext: draft\nYou: /clear\n")
    term.send("\r")
    term.expect_screen(r"\[Info\] Conversation cleared\.")
    term.expect_screen(r"next: draft\nYou: hello after\n +clear\n")
    term.send("\r")
    term.expect_screen(r"Assistant: Fresh start")
    term.expect_reply_end()
    term.expect_screen(r"\nYou: draft\n")
    shown = "\n".join(term.screen.scrollback())
    assert "Unknown command" not in shown and "next: " not in shown.rsplit("Assistant: Fresh start", 1)[1]
    generations = pane.log.named("generate")
    assert pane.log.user_messages_sent() == ["tell me", "hello after\nclear"]
    assert "tell me" not in generations[-1]["held"] + generations[-1]["inserted"]  # /clear ran before it
    term.send("\x03")
    assert term.quit() == 0


def test_without_word_wrap_the_live_rows_show_the_newest_wide_characters(pane):
    groups = [f"{i:03d}漢字かな交じり文" for i in range(120)]  # 19 cells each, no space: one line
    stalled = {"tokens": ["<text>", *groups, "</text>"], "stall_at": 61, "stall_ms": 6000}
    term = pane([stalled], delay_ms=5, args=("--no-word-wrap",))
    term.send("tell me\r")
    term.expect_screen(r"Assistant: 000漢字")
    term.expect_screen(r"059漢字かな交じり文\n", timeout=20)  # the newest text, at the end of the last live row
    above_the_input = term.screen.rows()[term.screen.rows().index("You:") - 1]
    assert above_the_input.endswith("059漢字かな交じり文")
    term.send("\x03")
    term.expect_reply_end()
    assert term.quit() == 0


def test_long_queued_messages_take_a_row_each_and_none_is_cut_off(pane):
    term = pane([["<text>", *words(400), "</text>"], ["a"], ["b"], ["c"]], delay_ms=50)
    term.send("tell me\r")
    term.expect_screen(r"w3 ")
    for name in ("ONE", "TWO", "END"):
        term.send(f"{name} " + "long message " * 19 + f"{name}-end\r")  # 270 characters: 3 rows at 100 columns
    term.expect_screen(r"│ 3 queued")  # (the rows above the input line come in the same frame)
    rows = term.screen.rows()
    prompt = rows.index("You:")
    assert [row[:12] for row in rows[prompt - 3 : prompt]] == ["queued: ONE ", "queued: TWO ", "queued: END "]
    assert all(row.endswith("…") and len(row) == 100 for row in rows[prompt - 3 : prompt])
    term.send("\x03")
    term.expect_reply_end()
    term.send("\x03")  # (the first queued message, given back to the input line)
    assert term.quit() == 0


def test_a_queued_quit_leaves_no_cursor_report_and_no_empty_prompt_on_the_screen(pane):
    term = pane([["<text>", *words(40), "</text>"]], delay_ms=20)
    term.send("tell me\r")
    term.expect_screen(r"w3 ")
    term.send("/quit\r")
    term.expect_screen(r"queued: /quit")
    # The reply's end asks where the cursor is; a terminal answers soon, but not always before
    # the chat has ended (here: 0.3 s later, as over a slow link).
    term.child.expect(CPR_REQUEST)
    asked = len(term.transcript.getvalue())
    time.sleep(0.3)
    term.send(f"\x1b[{term.rows};1R")
    assert term.wait_for_exit() == 0
    after = term.transcript.getvalue()[asked:]
    assert "^[[" not in after and not re.search(r"\d;1R", after), repr(after)  # the answer, echoed
    rows = [row for row in term.screen.scrollback() if row.strip()]
    end = rows.index("You: /quit")
    assert [row for row in rows[end + 1 :] if not row.startswith("[Info] ")] == [], rows[end:]  # no "You:" left
