"""The engine process's server, in this process: an EngineServer on a socket under tmp_path (its
loop in a thread), chats made on the scripted backend, and clients that are either a SocketEngine
(as the REPL holds) or the protocol by hand (tests/engine_server.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time

import pytest
from engine_server import Engines, RawClient, ServerThread, engine_server, is_event, open_params, socket_engine

from hailo_repl import __version__
from hailo_repl.daemon import protocol
from hailo_repl.engine import socket_client, socket_turn
from hailo_repl.engine.api import EngineError, EngineGone, TurnCompleted, TurnEnd, TurnNotice, TurnText

WORDS = [f"w{i} " for i in range(60)]


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def events_of(turn_events):
    return [event for event in turn_events if not isinstance(event, TurnCompleted)]


async def take_turn(engine, text, until=None):
    """Start a turn and take its events to its end (or until `until(events)` is true)."""
    turn = engine.start_turn(text)
    events = []
    while True:
        event = await asyncio.wait_for(turn.next_event(), 10)
        events.append(event)
        if isinstance(event, TurnCompleted) or (until is not None and until(events)):
            return turn, events


def test_a_whole_turn_over_the_socket_comes_in_order_and_is_kept(tmp_path):
    with engine_server(tmp_path, ["Hello", ",", " world", "!"], delay=0.02) as server:
        engine = socket_engine(server)
        heard = []
        engine.subscribe(heard.append)
        engine.load()
        assert engine.status().model == "scripted-model" and engine.status().state.value == "ready"

        async def turn():
            turn, events = await take_turn(engine, "hi")
            return events, await asyncio.wait_for(turn.finished, 10)

        events, finished = asyncio.run(turn())
        texts = [event for event in events if isinstance(event, TurnText)]
        assert "".join(event.text for event in texts) == "Hello, world!"
        assert [event.seq for event in texts] == sorted(event.seq for event in texts)
        assert sum(event.pieces for event in texts) == 4  # the pieces behind the paced text, counted
        end = events[-1]
        assert isinstance(end, TurnCompleted) and end.reason is TurnEnd.DONE and end.seq > texts[-1].seq
        assert end.stats.generated_tokens == 4 and end.usage.capacity == 4096
        assert finished.reason is TurnEnd.DONE
        assert any(isinstance(event, TurnCompleted) for event in heard)  # the toolbar hears the end too
        assert engine.messages()[-2:] == [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello, world!"},
        ]
        saved = server.engines.engines[0].chat.store.load(engine.status().chat)
        assert saved.messages[-1]["content"] == "Hello, world!"  # autosaved in the engine process
        engine.stop_engine()
        wait_for(server.server.stop_requested.is_set)


def test_an_interrupt_keeps_exactly_what_was_shown(tmp_path):
    with engine_server(tmp_path, WORDS, delay=0.03) as server:
        engine = socket_engine(server)
        engine.load()

        async def interrupted():
            turn, events = await take_turn(engine, "count", until=lambda events: len(events_of(events)) >= 3)
            shown = [event for event in events if isinstance(event, TurnText)]
            engine.interrupt(turn.id, shown[-1].seq)
            turn.stop_showing()
            end = await asyncio.wait_for(turn.next_event(), 1)  # at once, from this side
            finished = await asyncio.wait_for(turn.finished, 10)
            return "".join(event.text for event in shown), end, finished

        shown_text, end, finished = asyncio.run(interrupted())
        assert end.reason is TurnEnd.INTERRUPTED and end.seq == 0
        assert finished.reason is TurnEnd.INTERRUPTED
        last = engine.messages()[-1]
        assert last["content"] == shown_text.strip() and last["interrupted"] is True
        assert len(shown_text.split()) < len(WORDS)
        engine.stop_engine()


def test_a_plain_open_never_takes_another_terminals_chat_and_an_explicit_one_takes_it_over(tmp_path):
    with engine_server(tmp_path, ["ok"]) as server:
        first = RawClient(server.path, tty="pts/1")
        opened = first.call("chat/open", open_params())["result"]
        chat = opened["snapshot"]["chat"]
        first.until(is_event("engine/state", state="ready"))

        second = RawClient(server.path, tty="pts/2")
        refused = second.call("chat/open", open_params())["error"]
        assert refused["code"] == "held_elsewhere"
        assert refused["line"] == f"Chat {chat} is open in pts/1 (0 min idle); `hailo-repl -c` takes it over here"
        other = second.call("chat/open", open_params(chat="someotherchat", take_over=True))["error"]
        assert other["code"] == "busy"  # one chat per engine: the device is in use

        taken = second.call("chat/open", open_params(chat="latest", take_over=True))
        assert taken["result"]["snapshot"]["chat"] == chat and taken["result"]["status"]["state"] == "ready"
        detached = first.until(lambda message: message.get("method") == "client/detached")
        assert detached["params"] == {"reason": "taken_over", "by": {"pid": 1, "tty": "pts/2"}}
        assert first.read() is None  # then its socket closes
        assert server.on_loop(lambda: server.server.controller.tty) == "pts/2"
        turn = second.call("turn/start", {"text": "still here?"})
        assert "result" in turn
        second.until(is_event("turn/completed"))
        assert len(server.engines.engines) == 1  # the same chat, the same model: nothing opened again


def test_a_terminal_taken_over_says_so_in_one_line_and_ends(tmp_path):
    with engine_server(tmp_path, ["ok"]) as server:
        engine = socket_engine(server)
        heard = []
        engine.subscribe(heard.append)
        engine.load()
        chat = engine.status().chat
        other = RawClient(server.path, tty="pts/9")
        other.call("chat/open", open_params(chat=chat, take_over=True))
        wait_for(lambda: any(isinstance(event, EngineGone) for event in heard))
        (gone,) = [event for event in heard if isinstance(event, EngineGone)]
        assert gone.line.startswith(f"[Info] Chat {chat} was taken over by pts/9") and gone.exit_code == 0
        engine.stop_engine()  # nothing to do: it is not this terminal's any more
        assert not server.server.stop_requested.is_set()


def test_attaching_mid_turn_replays_it_then_goes_on_live_with_no_gap_and_no_repeat(tmp_path):
    with engine_server(tmp_path, WORDS, delay=0.02) as server:
        first = RawClient(server.path, tty="pts/1")
        first.call("chat/open", open_params())
        first.until(is_event("engine/state", state="ready"))
        first.call("turn/start", {"text": "count slowly"})
        first.until(is_event("turn/text"))
        first.call("chat/detach")  # the reply goes on (a detach is not an abort)
        time.sleep(0.3)

        second = RawClient(server.path, tty="pts/2")
        opened = second.call("chat/open", open_params())["result"]  # a plain open: the chat with a reply unseen
        assert opened["unseen"] is True
        snapshot = protocol.snapshot_from_wire(opened["snapshot"])
        assert snapshot.question == "count slowly" and snapshot.turn == 1
        replayed = "".join(event.text for event in snapshot.events if isinstance(event, TurnText))
        assert replayed and [message["content"] for message in snapshot.recent] == []  # the question once
        live = []
        while True:
            message = second.read()
            if message["method"] == "turn/completed":
                break
            if message["method"] == "turn/text":
                live.append(message["params"])
        assert live and live[0]["seq"] > snapshot.events[-1].seq  # the live events start after the replay's
        assert replayed + "".join(event["text"] for event in live) == "".join(WORDS)  # no gap, no repeat
        assert server.on_loop(lambda: server.engines.engines[0].messages()[-1]["content"]) == "".join(WORDS).strip()


def test_a_reply_that_ended_while_nobody_watched_is_shown_whole_with_a_flag(tmp_path):
    with engine_server(tmp_path, ["all ", "of ", "it"], delay=0.02) as server:
        first = RawClient(server.path)
        first.call("chat/open", open_params())
        first.until(is_event("engine/state", state="ready"))
        first.call("turn/start", {"text": "tell me"})
        first.close()  # EOF: the terminal is gone; the reply is not stopped
        wait_for(lambda: server.on_loop(lambda: server.server.idle_seconds()) is not None)

        second = RawClient(server.path)
        opened = second.call("chat/open", open_params())["result"]
        snapshot = opened["snapshot"]
        assert opened["unseen"] is True and snapshot["turn"] is None
        assert snapshot["recent"][-2:] == [
            {"role": "user", "content": "tell me"},
            {"role": "assistant", "content": "all of it"},  # whole, not interrupted
        ]
        opened_again = RawClient(server.path).call("chat/open", open_params(take_over=True, chat="latest"))
        assert opened_again["result"]["unseen"] is False  # said once


def test_a_client_that_stops_reading_is_dropped_and_the_reply_runs_on_to_its_end(tmp_path):
    big = ["x" * 20_000 + " " for _ in range(200)]  # 4 MB of reply: far more than the socket buffers
    with engine_server(tmp_path, big, delay=0.005) as server:
        server.server.backlog_limit = 64 * 1024
        stalled = RawClient(server.path)
        stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.call("chat/open", open_params())
        stalled.until(is_event("engine/state", state="ready"))
        stalled.send("turn/start", {"text": "a long one"})  # and then it reads nothing (SIGSTOP)
        engine = server.engines.engines[0]
        wait_for(lambda: server.on_loop(lambda: len(engine.messages())) == 3, timeout=30)
        assert engine.messages()[-1]["content"] == "".join(big).strip()  # the whole reply, kept
        assert not engine.messages()[-1].get("interrupted")
        assert server.on_loop(lambda: server.server.controller) is None  # dropped: the chat is free
        last = None
        while (message := stalled.read()) is not None:
            last = message
        assert last == {"method": "client/detached", "params": {"reason": "too_far_behind"}}
        # and another terminal takes the chat (a plain open: nobody holds it now)
        assert "result" in RawClient(server.path).call("chat/open", open_params())


def test_a_peer_of_another_user_is_dropped_before_it_can_ask_anything(tmp_path):
    with engine_server(tmp_path, ["ok"], expected_uid=os.getuid() + 1) as server:
        client = RawClient(server.path, initialize=False)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # (closed as soon as it came)
            client.send("initialize", {"v": protocol.PROTOCOL_VERSION})
        assert client.read() is None
        assert server.on_loop(lambda: len(server.server.clients)) == 0
        assert server.engines.requests == []


def test_another_protocol_version_gets_one_line_saying_how_to_stop_the_engine(tmp_path):
    with engine_server(tmp_path, ["ok"]) as server:
        client = RawClient(server.path, initialize=False)
        reply = client.call("initialize", {"v": protocol.PROTOCOL_VERSION + 1, "client": {"pid": 5, "tty": "pts/5"}})
        assert reply["error"] == {
            "code": "version",
            "line": f"a hailo-repl engine of version {__version__} runs (pid {os.getpid()}): "
            "`hailo-repl daemon stop`, then start again",
        }
        assert client.read() is None
        assert "error" in RawClient(server.path, initialize=False).call("chat/open", open_params())  # initialize first


def test_an_engine_that_dies_ends_the_chat_with_one_line(tmp_path):
    with engine_server(tmp_path, ["ok"]) as server:
        engine = socket_engine(server)
        heard = []
        engine.subscribe(heard.append)
        engine.load()
        chat = engine.status().chat
        server.on_loop(lambda: [client.writer.transport.abort() for client in server.server.clients])  # SIGKILL
        wait_for(lambda: any(isinstance(event, EngineGone) for event in heard))
        (gone,) = [event for event in heard if isinstance(event, EngineGone)]
        assert gone.exit_code == 1
        assert gone.line == (
            f"[Error] the hailo-repl engine (pid {os.getpid()}) ended; chat {chat} is saved up to its last "
            "finished turn; `hailo-repl -c` continues it"
        )
        with pytest.raises(EngineError, match="engine .* ended"):
            engine.clear()


def test_stop_engine_stops_the_reply_keeps_it_interrupted_releases_and_asks_the_process_to_exit(tmp_path):
    with engine_server(tmp_path, WORDS, delay=0.05) as server:
        watcher = RawClient(server.path)  # `hailo-repl daemon status` meanwhile, say
        engine = socket_engine(server)
        engine.load()

        async def some():
            return await take_turn(engine, "go", until=lambda events: len(events_of(events)) >= 1)

        asyncio.run(some())
        released = []
        backend = server.engines.engines[0].chat.backend
        backend.release = lambda: released.append(True)
        engine.stop_engine()
        assert server.server.stop_requested.is_set() or wait_for(server.server.stop_requested.is_set) is None
        assert released == [True]
        assert server.engines.engines[0].messages()[-1]["interrupted"] is True
        assert watcher.until(lambda message: message.get("method") == "client/detached")["params"]["reason"] == "quit"


def test_status_and_idle_time_for_the_process_that_owns_the_server(tmp_path):
    with engine_server(tmp_path, ["ok"]) as server:
        engine = socket_engine(server)
        engine.load()
        status = server.on_loop(server.server.status)
        assert status["attached"] not in (None, "") and status["idle_seconds"] is None
        assert status["model"] == "scripted-model" and status["state"] == "ready" and status["pid"] == os.getpid()
        asked = RawClient(server.path).call("daemon/status")["result"]
        assert asked["chat"] == engine.status().chat
        engine.detach()
        wait_for(lambda: server.on_loop(server.server.idle_seconds) is not None)
        assert server.on_loop(lambda: server.server.last_save_failed) is False


def test_notices_about_a_turn_reach_the_terminal_in_its_place(tmp_path):
    from hailo_repl.backends.base import Notice

    with engine_server(tmp_path, ["one ", Notice("waiting for the server"), "two"]) as server:
        engine = socket_engine(server)
        engine.load()
        _, events = asyncio.run(take_turn(engine, "hi"))
        kinds = [(type(event).__name__, getattr(event, "text", getattr(event, "line", ""))) for event in events]
        assert ("TurnNotice", "[Info] waiting for the server") in kinds
        notice = next(event for event in events if isinstance(event, TurnNotice))
        assert notice.turn == 1


def test_a_chat_opened_from_the_command_lines_settings_runs_on_the_hailo_backend_in_the_engine(
    tmp_path, isolated_home, hailo_resources, fake_script, fake_log
):
    """The real opening (daemon.opening) and the real hailo backend code against the double: the
    client's settings and backend choice go over the wire; the engine opens, loads, answers,
    keeps and releases the device."""
    from conftest import remember_device

    from hailo_repl.cli_chat import backend_choice
    from hailo_repl.cli_parser import build_parser
    from hailo_repl.cli_settings import settings_in_effect
    from hailo_repl.daemon.opening import open_local_engine
    from hailo_repl.engine.socket_client import connect, open_request

    fake_script({"replies": [["Bonjour", " !"]]})
    hef = hailo_resources("Qwen2.5-1.5B-Instruct") / "Qwen2.5-1.5B-Instruct.hef"
    remember_device(hef, hailo_resources.facts)
    args = build_parser().parse_args(["--backend", "hailo", "--hef-path", str(hef), "--temperature", "0.2"])
    settings, _ = settings_in_effect(args)
    request = open_request(backend_choice(settings, None), settings)
    assert request.hef_path == str(hef) and request.params["temperature"] == 0.2 and request.history

    server = ServerThread(tmp_path / "engine.sock", open_local_engine)
    try:
        engine = connect(server.path, request)
        engine.load()
        assert engine.status().backend == "hailo" and engine.status().model == "Qwen2.5-1.5B-Instruct"
        _, events = asyncio.run(take_turn(engine, "Salut"))
        assert "".join(event.text for event in events if isinstance(event, TurnText)) == "Bonjour !"
        assert fake_log.user_messages_sent() == ["Salut"]
        engine.stop_engine()
        wait_for(server.server.stop_requested.is_set)
        assert fake_log.names().count("vdevice_release") == 1  # the engine released the device at quit
    finally:
        server.stop()


def test_daemon_stop_from_anyone_ends_the_engine_and_the_terminal_in_the_chat_is_told(tmp_path):
    with engine_server(tmp_path, ["ok"]) as server:
        engine = socket_engine(server)
        heard = []
        engine.subscribe(heard.append)
        engine.load()
        chat = engine.status().chat
        outsider = RawClient(server.path, tty="pts/3")
        assert outsider.call("chat/quit")["error"]["code"] == "not_open"  # /quit is the chat's terminal's
        assert not server.server.stop_requested.is_set()
        assert outsider.call("daemon/stop")["result"] == {}
        wait_for(server.server.stop_requested.is_set)
        wait_for(lambda: any(isinstance(event, EngineGone) for event in heard))
        (gone,) = [event for event in heard if isinstance(event, EngineGone)]
        assert gone.exit_code == 0  # (the user stopped it)
        assert gone.line == f"[Info] The hailo-repl engine (pid {os.getpid()}) was stopped; chat {chat} is saved."


def test_one_message_through_the_engine_process_as_p_sends_it(tmp_path):
    """-p and pipes on a running engine: the turn on the caller's thread, each event as it comes."""
    with engine_server(tmp_path, ["Quick", " answer."]) as server:
        engine = socket_engine(server, interactive=False)
        engine.load()
        shown = []
        completed = engine.run_turn("question", shown.append)
        assert completed.reason is TurnEnd.DONE
        assert "".join(event.text for event in shown if isinstance(event, TurnText)) == "Quick answer."
        assert isinstance(shown[-1], TurnCompleted)
        completed = engine.run_turn("another", shown.append)  # a second one on the same connection
        assert completed.reason is TurnEnd.DONE and len(engine.messages()) == 5
        engine.stop_engine()


def test_a_new_chat_on_an_idle_engine_takes_the_new_terminals_settings_and_keeps_the_old_chat(tmp_path):
    with engine_server(tmp_path, ["first"], ["second"]) as server:
        first = socket_engine(server, system_prompt="be brief", params={"temperature": 0.2})
        first.load()
        asyncio.run(take_turn(first, "hello"))
        old_chat = first.status().chat
        first.detach()
        wait_for(lambda: server.on_loop(server.server.idle_seconds) is not None)

        second = socket_engine(server, system_prompt="be thorough", params={"temperature": 0.9})
        opened = second.open()
        assert opened.status.chat != old_chat and opened.snapshot.recent == [] and not opened.unseen
        engine = server.engines.engines[0]
        assert len(server.engines.engines) == 1  # the same model, warm: nothing loaded again
        assert engine.chat.system_prompt == "be thorough" and engine.chat.params.temperature == 0.9
        assert engine.chat.store.load(old_chat).messages[-1]["content"] == "first"  # the old chat stays saved
        second.stop_engine()


def test_each_chat_on_a_warm_engine_is_saved_as_its_own_terminal_asked_no_history_or_not(tmp_path):
    """--no-history after a saved chat writes nothing; a normal chat after a --no-history one is
    saved; neither loads the model again (a backend that keeps no device context)."""
    sessions = tmp_path / "sessions"

    def saved():
        return sorted(path.name for path in sessions.glob("*.json")) if sessions.exists() else []

    def one_chat(history):
        engine = socket_engine(server, history=history, interactive=False)
        engine.load()
        assert engine.run_turn("hi", lambda event: None).reason is TurnEnd.DONE
        engine.detach()
        wait_for(lambda: server.on_loop(server.server.idle_seconds) is not None)

    with engine_server(tmp_path, ["one"], ["two"], ["three"], ["four"]) as server:
        one_chat(history=True)
        assert len(saved()) == 1
        one_chat(history=False)
        assert len(saved()) == 1  # nothing written for the --no-history chat
        one_chat(history=True)
        assert len(saved()) == 2
        assert len(server.engines.engines) == 1


def test_the_engines_log_gets_no_system_prompt_from_a_chat_open(tmp_path):
    request = protocol.OpenRequest(system_prompt="my secret plans", api_key="k")
    assert "my secret plans" not in str(request.loggable()) and "'k'" not in str(request.loggable())


def test_ctrl_c_as_turn_start_is_answered_still_reaches_the_engine(tmp_path, monkeypatch):
    """The interrupt finds no engine turn number yet while the reply to turn/start comes in on
    the reader thread: whichever side is second sends turn/interrupt, never neither."""
    loop_thread = threading.get_ident()
    answered = threading.Event()  # the reader thread has taken the turn number and looked for an interrupt

    class RacingTurn(socket_turn.SocketTurn):
        """Holds interrupt() between its look at `remote` and its note of the interrupt until the
        reader thread has done its part (or 1 s has passed: a lock keeps the reader out)."""

        @property
        def remote(self):
            value = self.__dict__.get("_remote")
            if threading.get_ident() == loop_thread and value is None and self.__dict__.get("_looking"):
                answered.wait(1)
            return value

        @remote.setter
        def remote(self, value):
            self.__dict__["_remote"] = value

        @property
        def interrupt_at(self):
            value = self.__dict__.get("_interrupt_at")
            if threading.get_ident() != loop_thread:
                answered.set()
            return value

        @interrupt_at.setter
        def interrupt_at(self, value):
            self.__dict__["_interrupt_at"] = value

    monkeypatch.setattr(socket_client, "SocketTurn", RacingTurn)
    with engine_server(tmp_path, WORDS, delay=0.05) as server:
        engine = socket_engine(server)
        engine.load()

        async def race():
            turn = engine.start_turn("go on")
            turn.__dict__["_looking"] = True
            engine.interrupt(turn.id, None)
            return await asyncio.wait_for(turn.finished, 20)

        completed = asyncio.run(race())
        assert completed.reason is TurnEnd.INTERRUPTED
        kept = server.engines.engines[0].messages()[-1]["content"]
        assert kept != "".join(WORDS)  # the engine stopped it: not run to its end and saved whole
        engine.stop_engine()


def test_a_save_that_failed_while_nobody_watched_is_said_to_the_next_terminal_and_holds_the_engine(tmp_path):
    from test_app import UnwritableStore

    with engine_server(tmp_path, ["all ", "of ", "it"], delay=0.05, store=UnwritableStore()) as server:
        first = RawClient(server.path)
        first.call("chat/open", open_params())
        first.until(is_event("engine/state", state="ready"))
        first.call("turn/start", {"text": "tell me"})
        first.close()  # gone before the reply ends and its save fails
        wait_for(lambda: server.on_loop(server.server.idle_seconds) is not None)
        assert server.on_loop(lambda: server.server.last_save_failed) is True  # the keep-alive must wait

        second = RawClient(server.path)
        opened = second.call("chat/open", open_params())["result"]
        assert opened["unseen"] is True
        assert opened["lines"] == ["[Error] cannot write the chat: No space left on device"]


class SlowToOpen:
    """open_engine that takes a while (a device being opened), over the scripted engines."""

    def __init__(self, engines, seconds):
        self.engines, self.seconds = engines, seconds
        self.started = threading.Event()

    def __call__(self, request, say):
        self.started.set()
        time.sleep(self.seconds)
        return self.engines(request, say)


def test_a_terminal_closed_during_its_open_leaves_the_engine_it_made_held_by_the_engine_process(tmp_path):
    """The open runs to its end without its asker: the engine made is the server's (warm, idle,
    released at the end), never one held by nobody with the device open."""
    engines = Engines(tmp_path / "sessions", ["ok"])
    opening = SlowToOpen(engines, 0.5)
    server = ServerThread(tmp_path / "engine.sock", opening)
    try:
        leaving = RawClient(server.path)
        leaving.send("chat/open", open_params())
        assert opening.started.wait(10)
        leaving.close()  # the terminal closed (Ctrl+C, its window) while the engine opened
        wait_for(lambda: server.on_loop(lambda: server.server.engine) is not None)
        wait_for(lambda: server.on_loop(server.server.idle_seconds) is not None)
        assert server.on_loop(lambda: server.server.controller) is None
        released = []
        engines.engines[0].chat.backend.release = lambda: released.append(True)
        again = RawClient(server.path).call("chat/open", open_params())["result"]  # the warm one, no second open
        assert again["status"]["state"] == "ready" and len(engines.requests) == 1
    finally:
        server.stop()
    assert released == [True]  # and released when the engine ended


def test_daemon_stop_whose_asker_goes_meanwhile_still_releases_the_engine_and_ends_it(tmp_path):
    with engine_server(tmp_path, ["ok"]) as server:
        engine = socket_engine(server)
        engine.load()
        local = server.engines.engines[0]
        released, saving = [], threading.Event()
        local.chat.backend.release = lambda: released.append(True)

        async def slow_save():
            saving.set()
            await asyncio.sleep(0.3)  # a Hailo's device context being kept

        server.on_loop(lambda: setattr(local, "context_saved", slow_save))
        stopper = RawClient(server.path)
        stopper.send("daemon/stop")
        assert saving.wait(10)
        stopper.close()  # Ctrl+C on `hailo-repl daemon stop` while it waits
        wait_for(server.server.stop_requested.is_set)
        server.thread.join(10)  # (the engine process exits)
        assert released == [True] and server.server.engine is None


def test_a_chat_opened_while_the_engine_stops_waits_for_the_next_engine_instead_of_opening_this_one(tmp_path):
    """daemon/stop keeps the device context for seconds: a terminal opening a chat then must not
    open the device a second time in the ending engine; it is told the engine ends (its client
    then waits for the lock and starts the next one: daemon.spawn)."""
    from hailo_repl.engine.socket_client import connect

    with engine_server(tmp_path, ["ok"]) as server:
        engine = socket_engine(server)
        engine.load()
        local = server.engines.engines[0]
        saving, go_on = threading.Event(), threading.Event()

        async def slow_save():
            saving.set()
            while not go_on.is_set():
                await asyncio.sleep(0.01)

        server.on_loop(lambda: setattr(local, "context_saved", slow_save))
        late = RawClient(server.path, tty="pts/4")  # connected before the stop; its open comes during it
        arriving = connect(server.path)  # a terminal's SocketEngine, likewise
        RawClient(server.path).send("daemon/stop")
        assert saving.wait(10)
        assert not server.path.exists()  # nobody new reaches the ending engine
        refused = late.call("chat/open", open_params())["error"]
        assert refused["code"] == "ending"
        with pytest.raises(ConnectionRefusedError):  # as if no engine listened: daemon.spawn waits for the next
            arriving.open()
        go_on.set()
        wait_for(server.server.stop_requested.is_set)
        assert len(server.engines.requests) == 1  # the device was opened once


def test_a_stalled_terminal_never_holds_back_a_take_over_or_the_next_turn(tmp_path, monkeypatch):
    """A terminal that stopped reading (SIGSTOP, a stalled SSH link) with much unread, and a
    `daemon status` connection that reads nothing: the take-over's snapshot comes while the
    stalled one still has its lines unread (not after its grace to read them), and the next
    turn starts without waiting for either."""
    from hailo_repl.daemon import connection
    from hailo_repl.daemon import server as server_module

    monkeypatch.setattr(connection, "DROP_GRACE_SECONDS", 600.0)  # waited for, the test would time out
    monkeypatch.setattr(server_module, "DRAIN_WAIT_SECONDS", 600.0)
    big = ["x" * 20_000 + " " for _ in range(100)]  # 2 MB of reply: far more than the sockets buffer
    with engine_server(tmp_path, big, ["short"], delay=0.002) as server:
        watcher = RawClient(server.path, tty="pts/8")  # connected, initialized, never reading
        watcher.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled, unread = a_terminal_that_stopped_reading(server)

        second = RawClient(server.path, tty="pts/2")
        taken = second.call("chat/open", open_params(chat="latest", take_over=True))["result"]
        snapshot = taken["snapshot"]  # the reply, in flight or ended
        assert snapshot["question"] == "a long one" or snapshot["recent"][0]["content"] == "a long one"
        assert server.on_loop(unread) > 256 * 1024  # the snapshot came while the stalled one still had it all unread
        wait_for(lambda: server.on_loop(lambda: server.server._turn is None and not server.server._pumps))
        started = second.call("turn/start", {"text": "and now?"})["result"]
        second.until(is_event("turn/finished", turn=started["turn"]))
        assert server.on_loop(lambda: server.engines.engines[0].messages()[-1]["content"]) == "short"

        # the stalled one reads, at last: all it was sent, then the line saying why it was let go
        last = None
        while (message := stalled.read()) is not None:
            last = message
        taken_over = {"reason": "taken_over", "by": {"pid": 1, "tty": "pts/2"}}
        assert last == {"method": "client/detached", "params": taken_over}
        # the status connection was sent no turn: only what it asks
        assert watcher.call("daemon/status")["result"]["attached"] == "pts/2"
        assert [message.get("method") for message in watcher.seen] == []


def a_terminal_that_stopped_reading(server):
    """A terminal (pts/1) with the chat open that asked for a long reply and reads nothing of it
    (SIGSTOP, a stalled link), and what it has not read yet, once that is far past what the
    sockets buffer."""
    stalled = RawClient(server.path, tty="pts/1")
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.call("chat/open", open_params())
    stalled.until(is_event("engine/state", state="ready"))
    stalled.send("turn/start", {"text": "a long one"})  # and then it reads nothing
    old = server.on_loop(lambda: server.server.controller)

    def unread() -> int:
        return old._queued + old.writer.transport.get_write_buffer_size()

    wait_for(lambda: server.on_loop(unread) > 256 * 1024)
    return stalled, unread


def test_daemon_status_shows_how_long_the_chat_has_been_left_alone(tmp_path):
    """Asking is not work: `hailo-repl daemon status` after the last terminal left says the
    idle time, and asking again does not start it over."""
    from hailo_repl.daemon.cli import status_lines

    with engine_server(tmp_path, ["ok"]) as server:
        engine = socket_engine(server)
        engine.load()
        engine.detach()
        wait_for(lambda: server.on_loop(server.server.idle_seconds) is not None)
        first = RawClient(server.path).call("daemon/status")["result"]
        assert first["attached"] is None and first["idle_seconds"] is not None
        assert f"chat: {first['chat']}, no terminal attached, idle " in "\n".join(status_lines(os.getpid(), first))
        time.sleep(0.4)
        again = RawClient(server.path).call("daemon/status")["result"]
        assert again["idle_seconds"] >= 0.3  # counted from the detach, not from the last look


def test_a_stalled_terminal_does_not_hold_back_the_engines_end(tmp_path, monkeypatch):
    """The engine's lock (which the next engine waits for) goes when the engine ends, and the end
    does not wait out a terminal that stopped reading: it gets what fits, then its socket goes."""
    from hailo_repl.daemon import connection

    monkeypatch.setattr(connection, "DROP_GRACE_SECONDS", 600.0)  # waited for, the test would time out
    big = ["x" * 20_000 + " " for _ in range(100)]
    with engine_server(tmp_path, big, delay=0.002) as server:
        stalled, _ = a_terminal_that_stopped_reading(server)
        assert "result" in RawClient(server.path).call("daemon/stop")
        wait_for(server.server.stop_requested.is_set)
