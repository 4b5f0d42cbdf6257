"""The REPL on a SocketEngine: the real prompt_toolkit application (pipe input, as test_app.py
runs it) talking to an EngineServer in this process over its socket, the chat on the scripted
backend there. What the user sees and what the engine keeps are the same as in one process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time

import pytest
from engine_server import RawClient, engine_server, is_event, open_params, socket_engine
from scripted import ScriptedBackend, type_into_repl
from test_app import UnwritableStore

from hailo_repl.engine import ops
from hailo_repl.engine.api import TurnEnd


@pytest.fixture(autouse=True)
def home(isolated_home):
    return isolated_home


def run_repl(server, keys):
    """Type `keys` into a Repl on a SocketEngine to `server` (its chat opened as the command line
    opens it, before the REPL); then stop the engine. Returns (exit code, the Repl)."""
    engine = socket_engine(server)
    engine.open()
    try:
        return type_into_repl(engine, keys)
    finally:
        engine.stop_engine()


def kept(server):
    """The conversation the engine kept (its process has ended: the loop is done)."""
    return server.engines.engines[0].messages()


def test_a_message_gets_its_reply_through_the_engine_process_and_quit_exits_zero(tmp_path, capsys):
    with engine_server(tmp_path, ["Hello", " there"]) as server:
        code, repl = run_repl(server, ["hi\r", "/quit\r"])
        out = capsys.readouterr().out
        assert code == 0
        assert "chat with scripted-model on llama" in out and "Assistant: Hello there" in out
        assert kept(server)[-2:] == [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello there"},
        ]
        toolbar = "".join(fragment[1] for fragment in repl.toolbar())
        assert "scripted-model" in toolbar and "/4096" in toolbar  # the usage the turn's end carried


def test_quit_in_a_terminal_leaves_the_engine_running_with_its_model_for_the_next_chat(tmp_path, capsys):
    with engine_server(tmp_path, ["Hello"], ["again"]) as server:
        engine = socket_engine(server)
        engine.open()
        code, _ = type_into_repl(engine, ["hi\r", "/quit\r"])
        engine.quit()  # (as cli_chat ends a chat)
        assert code == 0
        deadline = time.monotonic() + 10
        while server.on_loop(server.server.idle_seconds) is None:  # the terminal has left
            assert time.monotonic() < deadline and not server.server.stop_requested.is_set()
            time.sleep(0.01)
        assert not server.server.stop_requested.is_set()
        following = socket_engine(server, interactive=False)
        following.load()
        assert following.run_turn("more", lambda event: None).reason is TurnEnd.DONE
        assert len(server.engines.engines) == 1  # the same model, not loaded again
        following.stop_engine()


def test_ctrl_c_over_the_socket_keeps_what_the_screen_showed(tmp_path, capsys):
    backend = ScriptedBackend([f"w{i} " for i in range(200)], ["next answer"], delay=0.02)
    with engine_server(tmp_path, backend=backend) as server:

        async def interrupt_after_a_few_tokens(repl):
            while backend.produced < 15:
                await asyncio.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(0.2)

        code, _ = run_repl(server, ["long\r", interrupt_after_a_few_tokens, "again\r", "/quit\r"])
        out = capsys.readouterr().out
        assert code == 0
        assert "[interrupted]" in out and "next answer" in out
        assert backend.produced < 60  # the generation stopped in the engine, not just the printing
        interrupted = kept(server)[2]
        shown = re.search(r"Assistant: (.*) \[interrupted\]", out).group(1)
        assert shown.startswith("w0 w1")
        assert interrupted["content"] == shown.strip() and interrupted["interrupted"] is True
        assert backend.prompts[1][-1] == "again"


def test_commands_go_to_the_engine_process_and_print_its_answers(tmp_path, capsys):
    with engine_server(tmp_path, ["one"], ["two"]) as server:
        saved = tmp_path / "saved.json"
        keys = [
            "hi\r",
            "/system be brief\r",
            "/set temperature 0.3\r",
            "/set max-tokens 99999\r",
            "/context\r",
            f"/save {saved}\r",
            "/undo\r",
            "/stats\r",
            f"/load {saved}\r",
            "/quit\r",
        ]
        code, repl = run_repl(server, keys)
        out = capsys.readouterr().out
        assert code == 0
        for line in [
            "[Info] System prompt replaced",
            "[Info] temperature = 0.3",
            "[Error] max-tokens must leave room for your message",
            "[Info] Context: [",
            "[Info] Saved 3 messages to",
            "[Info] Removed the last exchange.",
            "[Info] Loaded 3 messages from",
        ]:
            assert line in out, line
        engine = server.engines.engines[0]
        assert engine.chat.system_prompt == "be brief" and engine.chat.params.temperature == 0.3
        assert saved.exists() and repl.settings["temperature"] == 0.3


def test_the_terminal_stays_live_while_a_save_waits_for_the_engine_and_ctrl_c_stops_the_wait(
    tmp_path, capsys, monkeypatch
):
    """/save while the engine is slow to answer (it holds its GIL keeping a device context):
    the REPL's loop goes on meanwhile (keys, Ctrl+C); a Ctrl+C gives the prompt back at once."""
    saving, may_end, saved = threading.Event(), threading.Event(), threading.Event()
    real_save = ops.save

    def slow_save(*args, **kwargs):
        saving.set()
        may_end.wait(5)
        saved.set()
        return real_save(*args, **kwargs)

    monkeypatch.setattr(ops, "save", slow_save)
    with engine_server(tmp_path, ["one"], ["two"]) as server:
        seen = {}

        async def during_the_save(repl):
            while not saving.is_set():
                await asyncio.sleep(0.01)
            seen["loop ran during the save"] = not saved.is_set()
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(0.2)
            seen["prompt back before the save ended"] = repl.session.app.is_running and not saved.is_set()
            may_end.set()

        code, _ = run_repl(server, ["hi\r", f"/save {tmp_path / 'chat.json'}\r", during_the_save, "again\r", "/quit\r"])
        out = capsys.readouterr().out
        assert code == 0
        assert seen == {"loop ran during the save": True, "prompt back before the save ended": True}
        assert "Not waiting for /save" in out and "Assistant: two" in out  # it went once the engine could
        assert "Saved 3 messages" in out and "[Error]" not in out
        assert (tmp_path / "chat.json").exists()


def test_a_save_that_fails_in_the_engine_is_said_after_the_replys_last_word(tmp_path, capsys):
    with engine_server(tmp_path, ["Hello", " there"], store=UnwritableStore()) as server:
        code, _ = run_repl(server, ["hi\r", "/quit\r"])
        out = capsys.readouterr().out
        assert "Assistant: Hello there\n\n[Error] cannot write the chat: No space left on device\n" in out


def test_an_engine_killed_mid_chat_ends_the_repl_with_one_line_and_1(tmp_path, capsys):
    backend = ScriptedBackend([f"w{i} " for i in range(300)], delay=0.02)
    with engine_server(tmp_path, backend=backend) as server:

        async def kill_the_engine(repl):
            while backend.produced < 10:
                await asyncio.sleep(0.01)
            server.on_loop(lambda: [client.writer.transport.abort() for client in server.server.clients])
            await asyncio.sleep(0.3)

        code, repl = run_repl(server, ["long\r", kill_the_engine])
        out = capsys.readouterr().out
        chat = repl.engine.status().chat
        line = (
            f"[Error] the hailo-repl engine (pid {os.getpid()}) ended; chat {chat} is saved up to its last "
            "finished turn; `hailo-repl -c` continues it"
        )
        assert code == 1 and " ".join(out.split()).count(line) == 1  # (wrapped at the terminal's width)
        assert "Traceback" not in out


def test_a_terminal_whose_chat_another_takes_over_says_so_and_ends(tmp_path, capsys):
    with engine_server(tmp_path, ["ok"]) as server:

        async def taken_over_from_pts_7(repl):
            await asyncio.sleep(0.2)
            other = RawClient(server.path, tty="pts/7")
            chat = repl.engine.status().chat
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: other.call("chat/open", open_params(chat=chat, take_over=True))
            )
            await asyncio.sleep(0.3)

        code, repl = run_repl(server, ["hi\r", taken_over_from_pts_7])
        out = capsys.readouterr().out
        assert code == 0
        assert f"[Info] Chat {repl.engine.status().chat} was taken over by pts/7" in out
        assert not server.server.stop_requested.is_set()  # its quit did not end the engine the other holds


def test_a_terminal_arriving_mid_reply_shows_the_last_turns_the_question_once_and_the_reply_once(tmp_path, capsys):
    words = [f"w{i} " for i in range(80)]
    with engine_server(tmp_path, ["Earlier answer."], words, delay=0.02) as server:
        first = RawClient(server.path, tty="pts/1")  # the terminal of an SSH link that dropped
        first.call("chat/open", open_params())
        first.until(is_event("engine/state", state="ready"))
        first.call("turn/start", {"text": "earlier question"})
        first.until(is_event("turn/completed"))
        first.until(lambda message: message.get("method") == "turn/finished")
        first.call("turn/start", {"text": "count slowly"})
        first.until(is_event("turn/text"))
        first.close()

        engine = socket_engine(server)  # `hailo-repl` in a new login: a plain open attaches the unseen reply
        engine.open()
        try:
            code, _ = type_into_repl(engine, [wait_for_the_reply(server), "/quit\r"])
        finally:
            engine.stop_engine()
        out = capsys.readouterr().out
        flat = " ".join(out.split())
        assert code == 0
        assert "reply went on while you were away; /clear starts a new chat." in flat
        assert flat.count("You: earlier question") == 1 and flat.count("Earlier answer.") == 1
        assert flat.count("You: count slowly") == 1
        assert flat.count("w0 w1 w2") == 1 and flat.count("w79") == 1
        assert "".join(words).strip() in flat  # whole and in order: the replay and the live text meet exactly
        assert flat.index("Earlier answer.") < flat.index("You: count slowly") < flat.index("w0 w1")
        assert kept(server)[-1] == {"role": "assistant", "content": "".join(words).strip()}


def wait_for_the_reply(server):
    async def step(repl):
        while repl.turns.turn is None or not repl.turns.turn.is_finished():
            await asyncio.sleep(0.02)

    return step
