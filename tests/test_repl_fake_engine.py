"""The terminal side alone: the REPL against a fake Engine (tests/fake_engine.py), no chat and no
backend. What it shows comes from the engine's events, what it does goes to the engine's requests."""

import asyncio
import io
import os
import signal
from pathlib import Path

from fake_engine import FakeEngine
from prompt_toolkit.data_structures import Size
from prompt_toolkit.output.vt100 import Vt100_Output
from scripted import type_into_repl

from hailo_repl.engine.api import EngineError, ErrorCode, Switched, TurnMode
from hailo_repl.pane import SYNC_BEGIN, SYNC_END


def run_repl(engine, keys):
    """Type `keys` (strings, or coroutine functions given the Repl) into a Repl on `engine`."""
    return type_into_repl(engine, keys)


def toolbar_text(repl):
    return "".join(fragment[1] for fragment in repl.toolbar())


def test_a_reply_is_shown_from_the_engines_text_events_and_the_toolbar_from_its_events(isolated_home, capsys):
    engine = FakeEngine(["Hello", " there"])
    toolbars = []

    async def after_the_reply(repl):
        while not engine.turns or not engine.turns[0].is_finished():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        toolbars.append(toolbar_text(repl))

    code, repl = run_repl(engine, ["hi\r", after_the_reply, "/quit\r"])
    out = capsys.readouterr().out
    assert code == 0
    assert "chat with fake-model on llama" in out and "Assistant: Hello there" in out
    assert ("start_turn", "hi", TurnMode.MESSAGE) in engine.calls
    # the usage and the speed the engine reported with the turn's end, read from no chat
    assert "fake-model" in toolbars[0] and "120/1000" in toolbars[0] and "tok/s" in toolbars[0]


def test_the_frame_that_ends_a_reply_shows_the_engines_count_though_its_event_comes_later(isolated_home):
    """The turn's end reaches the screen by the turn's own events, the toolbar's figures by the
    engine's events; across threads either may come first (this fake engine: the turn's end).
    The frame that ends the reply is drawn whole; a later change redraws only the cells that
    differ, so an estimate drawn there would stay what the terminal received whole."""
    engine = FakeEngine(["Hello", " there"])
    terminal = io.StringIO()
    output = Vt100_Output(terminal, lambda: Size(rows=30, columns=110), term="xterm-256color")
    code, _ = type_into_repl(engine, ["hi\r", "/quit\r"], output=output)
    assert code == 0
    frames = [frame.split(SYNC_END)[0] for frame in terminal.getvalue().split(SYNC_BEGIN)[1:]]
    ending = next(frame for frame in frames if "Assistant: Hello there" in frame)  # the reply's end, drawn whole
    assert "ctx 120/1000 (12%)" in ending  # the engine's count (120), not the estimate (~22: 20 before + 2 pieces)


def test_ctrl_c_names_the_turn_and_the_last_text_shown_and_the_prompt_is_back_at_once(isolated_home, capsys):
    engine = FakeEngine([f"w{i} " for i in range(100)], ["next"], delay=0.02, finish_late=0.5)
    shown = {"out": "", "turn finished then": None}

    async def interrupt_after_a_few_words(repl):
        while not engine.turns or len(engine.turns[0].taken) < 3:
            await asyncio.sleep(0.005)
        os.kill(os.getpid(), signal.SIGINT)
        while "[interrupted]" not in shown["out"]:
            shown["out"] += capsys.readouterr().out
            await asyncio.sleep(0.005)
        shown["turn finished then"] = engine.turns[0].is_finished()

    code, repl = run_repl(engine, ["count\r", interrupt_after_a_few_words, "again\r", "/quit\r"])
    out = shown["out"] + capsys.readouterr().out
    (interrupt,) = [call for call in engine.calls if call[0] == "interrupt"]
    _, turn, shown_seq = interrupt
    shown_words = out.split("Assistant: ")[1].split(" [interrupted]")[0].split()
    assert len(shown_words) >= 3
    assert turn == 1 and shown_seq == 100 + len(shown_words)  # the seq of the last word on the screen
    assert shown["turn finished then"] is False  # the screen did not wait for the engine's end of the turn
    assert "Waiting for the previous reply to end on the device" in out  # the next message did
    assert "Assistant: next" in out
    assert ("start_turn", "again", TurnMode.MESSAGE) in engine.calls


def test_commands_are_requests_to_the_engine_and_print_its_answers(isolated_home, capsys, tmp_path):
    engine = FakeEngine()
    keys = [
        "/clear\r",
        "/system be brief\r",
        "/set temperature 0.3\r",
        "/set max-tokens 9999\r",
        f"/load {tmp_path / 'old.json'}\r",
        "/save\r",
        "/undo\r",
        "/retry\r",
        "/model nope\r",
        "/quit\r",
    ]
    code, repl = run_repl(engine, keys)
    out = capsys.readouterr().out
    assert code == 0
    asked = [call for call in engine.calls if call[0] not in ("load",)]
    assert asked[:6] == [
        ("clear",),
        ("system", "be brief"),
        ("set", "temperature", 0.3),
        ("set", "max-tokens", 9999),
        ("load_file", Path(tmp_path / "old.json")),
        ("save", None, False),
    ]
    assert ("keep_context",) in asked  # after /save: the device context beside the chat
    assert ("start_turn", "the question", TurnMode.RETRY) in asked
    assert ("prepare_switch", "nope") in asked and not any(call[0] == "switch_model" for call in asked)
    assert repl.settings["temperature"] == 0.3 and repl.settings["max-tokens"] != 9999
    for line in [
        "[Info] Conversation cleared.",
        "[Info] System prompt replaced",
        "[Info] temperature = 0.3",
        "[Error] max-tokens must leave room for your message: at most 500",
        "[Info] Loaded 3 messages from",
        "[Info] Saved 5 messages to",
        "[Error] Cannot save the chat: disk full",
        "[Info] Removed the last exchange.",
        "[Error] nope is not among the models; /model lists them",
    ]:
        assert line in out, line


def test_a_model_switch_that_fails_twice_ends_the_chat_with_1(isolated_home, capsys):
    engine = FakeEngine(switch=Switched("no such file", "fake-model failed to load again (gone); ending the chat"))
    code, _ = run_repl(engine, ["/model other-model\r"])
    out = capsys.readouterr().out
    assert code == 1
    assert "[Info] Releasing fake-model and loading other-model…" in out
    assert "[Error] no such file — going on with fake-model" in out
    assert "[Error] fake-model failed to load again (gone); ending the chat" in out


def test_a_model_that_fails_to_load_ends_the_chat_with_its_line(isolated_home, capsys):
    engine = FakeEngine(load_error=EngineError(ErrorCode.LOAD_FAILED, "no model at /nowhere.gguf"))
    code, _ = run_repl(engine, ["hi\r"])
    out = capsys.readouterr().out
    assert code == 1 and "[Error] no model at /nowhere.gguf" in out
    assert not any(call[0] == "start_turn" for call in engine.calls)
    assert ("quit",) not in engine.calls  # releasing is the command line's, after the REPL


def test_messages_typed_during_a_reply_go_after_it_one_turn_each_in_order(isolated_home, capsys):
    engine = FakeEngine(["one ", "two ", "three"], ["second answer"], ["third answer"], delay=0.05)

    async def typed_during_the_first_reply(repl):
        while not engine.turns:
            await asyncio.sleep(0.005)
        assert not engine.turns[0].is_finished()

    code, _ = run_repl(
        engine, ["first\r", typed_during_the_first_reply, "second\r", "third\r", "/context\r", "/quit\r"]
    )
    out = capsys.readouterr().out
    turns = [call[1] for call in engine.calls if call[0] == "start_turn"]
    assert code == 0 and turns == ["first", "second", "third"]
    assert out.index("one two three") < out.index("second answer") < out.index("third answer")
    assert "120/1000 (12%)" in out  # /context: the engine's count


def test_lines_about_a_turn_after_its_end_come_once_it_is_finished(isolated_home, capsys):
    """A save's line (it may wait seconds for a lock) comes after the reply's end, not inside it."""
    engine = FakeEngine(["Hello", " there"], late_notices=["[Error] Cannot save the chat: disk full"])
    code, _ = run_repl(engine, ["hi\r", "/quit\r"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Assistant: Hello there\n\n[Error] Cannot save the chat: disk full\n" in out
