"""The engine in this process (engine.local.LocalEngine), with no terminal: its events, the turn
in flight kept for a terminal that arrives in the middle of it, and an interrupt that keeps
exactly the text the terminal had shown."""

import asyncio
import threading

from scripted import ScriptedBackend

from hailo_repl.backends.base import BackendError, GenerationParams
from hailo_repl.chat import Chat
from hailo_repl.engine.api import (
    ChatChange,
    ChatChanged,
    EngineState,
    ModelState,
    TurnCompleted,
    TurnEnd,
    TurnNotice,
    TurnStarted,
    TurnText,
    UsageChanged,
)
from hailo_repl.engine.local import LocalEngine


class GatedBackend(ScriptedBackend):
    """Yields a piece each time the test lets one go (`allow`), so a test knows where the reply is."""

    def __init__(self, pieces):
        super().__init__(pieces)
        self.gate = threading.Semaphore(0)

    def allow(self, count=1):
        for _ in range(count):
            self.gate.release()

    def stream(self, messages, params, cancel):
        self.prompts.append([m["content"] for m in messages])
        for piece in self.replies.pop(0):
            while not self.gate.acquire(timeout=0.01):
                if cancel.is_set():
                    return
            if cancel.is_set():
                return
            self.produced += 1
            yield piece


def engine_with(backend, max_tokens=512):
    engine = LocalEngine(Chat(backend, "sys", GenerationParams(max_tokens=max_tokens)))
    engine.load()
    return engine


def wait_for(condition, timeout=10.0):
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("timed out")


def test_each_event_has_a_larger_seq_and_says_what_happened():
    engine = LocalEngine(Chat(ScriptedBackend(["Hel", "lo"], ["x"]), "sys", GenerationParams()))
    seen = []
    engine.subscribe(seen.append)
    engine.load()
    turn_events = []
    completed = engine.run_turn("hi", turn_events.append)
    chat_id = engine.status().chat
    engine.clear()
    engine.system("be brief")

    assert [type(event) for event in seen[:2]] == [EngineState, UsageChanged]
    assert seen[0].state is ModelState.READY and seen[0].model == "scripted-model"
    assert [event.text for event in turn_events if isinstance(event, TurnText)] == ["Hel", "lo"]
    assert completed.reason is TurnEnd.DONE and completed.stats.generated_tokens == 2
    assert completed.usage.capacity == 4096 and completed.chat == chat_id
    assert [event.why for event in seen if isinstance(event, ChatChanged)] == [ChatChange.CLEARED, ChatChange.SYSTEM]
    assert any(isinstance(event, TurnStarted) and event.question == "hi" for event in seen)
    everything = sorted({id(event): event for event in seen + turn_events}.values(), key=lambda event: event.seq)
    seqs = [event.seq for event in everything]
    assert seqs == sorted(set(seqs)) and seqs[0] >= 1  # one order, no number twice


def test_how_a_turn_ended_truncated_empty_or_failed():
    backend = ScriptedBackend(["a ", "b ", "c "], [], ["par", BackendError("device went away")])
    engine = engine_with(backend, max_tokens=2)
    assert engine.run_turn("one", lambda event: None).reason is TurnEnd.TRUNCATED
    assert engine.run_turn("two", lambda event: None).reason is TurnEnd.EMPTY
    failed = engine.run_turn("three", lambda event: None)
    assert failed.reason is TurnEnd.ERROR and failed.error == "device went away"
    assert engine.messages()[-1] == {"role": "assistant", "content": "par", "interrupted": True}


def test_a_terminal_arriving_mid_turn_gets_the_recent_turns_and_the_turn_so_far():
    backend = GatedBackend([])
    backend.replies = [["q1a"], ["q2a"], ["q3a"], ["q4a"], ["one ", "two ", "three ", "four"]]
    engine = engine_with(backend)
    backend.allow(4)
    for question in ("q1", "q2", "q3", "q4"):
        engine.run_turn(question, lambda event: None)

    async def main():
        turn = engine.start_turn("tell me")
        backend.allow(3)
        shown = []
        while len(shown) < 3:
            event = await asyncio.wait_for(turn.next_event(), 10)
            if isinstance(event, TurnText):
                shown += [event] * event.pieces  # (a frame may carry several pieces)
        snapshot = engine.snapshot()
        backend.allow(1)
        await asyncio.wait_for(turn.finished, 10)
        return shown, snapshot

    shown, snapshot = asyncio.run(main())
    assert [m["content"] for m in snapshot.recent] == ["q2", "q2a", "q3", "q3a", "q4", "q4a"]  # the last 3 turns
    assert snapshot.question == "tell me" and snapshot.turn is not None
    (text,) = snapshot.events  # the turn so far, its text events as one
    assert isinstance(text, TurnText) and (text.text, text.pieces) == ("one two three ", 3)
    assert text.seq == shown[-1].seq  # nothing missed, nothing ahead
    after = engine.snapshot()
    assert after.turn is None and after.events == ()
    assert [m["content"] for m in after.recent][-2:] == ["tell me", "one two three four"]


def test_a_turn_of_p_or_a_pipe_is_numbered_but_not_kept_for_a_terminal():
    """No terminal arrives in the middle of -p's turn: its events are not kept, but numbered on
    from the chat's, so they still say in which order things happened."""
    backend = GatedBackend([])
    backend.replies = [["one ", "two"]]
    engine = engine_with(backend)
    before = engine.turns.next_seq()
    shown = []
    worker = threading.Thread(target=engine.run_turn, args=("count", shown.append))
    worker.start()
    backend.allow(1)
    wait_for(lambda: any(isinstance(event, TurnText) for event in shown))
    during = engine.snapshot()
    backend.allow(1)
    worker.join(10)
    assert during.turn is None and during.events == ()
    assert before < shown[0].seq < shown[-1].seq < engine.turns.next_seq()


def test_an_interrupt_keeps_the_text_shown_not_the_tokens_decoded_after_it():
    """The terminal took "one two " from the turn, then "three " and "four " were decoded (waiting
    for the next frame) before Ctrl+C: the kept reply is what the screen showed."""
    backend = GatedBackend([])
    backend.replies = [["one ", "two ", "three ", "four ", "five"]]
    engine = engine_with(backend)

    async def main():
        turn = engine.start_turn("count")
        backend.allow(2)
        shown_text, shown_seq = "", 0
        while shown_text != "one two ":
            event = await asyncio.wait_for(turn.next_event(), 10)
            if isinstance(event, TurnText):
                shown_text, shown_seq = shown_text + event.text, event.seq
        backend.allow(2)
        while backend.produced < 4 or engine.snapshot().events[-1].seq <= shown_seq:
            await asyncio.sleep(0.01)  # decoded, not shown
        engine.interrupt(turn.id, shown_seq)
        turn.stop_showing()
        end = await asyncio.wait_for(turn.next_event(), 10)
        completed = await asyncio.wait_for(turn.finished, 10)
        return end, completed

    end, completed = asyncio.run(main())
    assert isinstance(end, TurnCompleted) and end.reason is TurnEnd.INTERRUPTED  # the display ends at once
    assert completed.reason is TurnEnd.INTERRUPTED
    assert engine.messages()[-1] == {"role": "assistant", "content": "one two", "interrupted": True}
    assert completed.stats.generated_tokens == 4  # decoded, counted, not kept


def test_an_interrupt_before_any_text_was_shown_keeps_nothing_of_the_turn():
    backend = GatedBackend([])
    backend.replies = [["one ", "two "]]
    engine = engine_with(backend)
    before = engine.messages()

    async def main():
        turn = engine.start_turn("count")
        backend.allow(1)
        while backend.produced < 1:
            await asyncio.sleep(0.01)
        engine.interrupt(turn.id, 0)
        turn.stop_showing()
        return await asyncio.wait_for(turn.finished, 10)

    completed = asyncio.run(main())
    assert completed.reason is TurnEnd.INTERRUPTED and engine.messages() == before


def test_notices_of_a_turn_reach_the_terminal_in_their_place():
    backend = ScriptedBackend(["a"])
    engine = engine_with(backend)
    events = []
    engine.run_turn("bad \udcff byte", events.append)
    notices = [event for event in events if isinstance(event, TurnNotice)]
    assert notices and "not UTF-8" in notices[0].line
    assert events.index(notices[0]) < next(i for i, e in enumerate(events) if isinstance(e, TurnText))


class ThreadNotingBackend(ScriptedBackend):
    """Notes the thread each reply is generated on (llama.cpp's decode, on a real backend)."""

    def __init__(self, *replies):
        super().__init__(*replies)
        self.threads = []

    def stream(self, messages, params, cancel):
        self.threads.append(threading.get_ident())
        yield from super().stream(messages, params, cancel)


def test_every_turn_is_generated_on_one_thread_though_the_loops_executor_is_busy():
    """llama.cpp's OpenMP keeps a team of threads for each thread that decodes; more teams than
    cores and its threads stop spinning between steps (0.6x raw decode in the engine process,
    whose other requests kept the loop's executor making threads)."""
    backend = ThreadNotingBackend(["one"], ["two"], ["three"])
    engine = engine_with(backend)

    async def main():
        loop = asyncio.get_running_loop()
        for text in ("a", "b", "c"):
            held = threading.Event()
            busy = loop.run_in_executor(None, held.wait)  # the executor's threads taken meanwhile
            await engine.start_turn(text).finished
            held.set()
            await busy

    asyncio.run(main())
    assert len(backend.threads) == 3 and len(set(backend.threads)) == 1
