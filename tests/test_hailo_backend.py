"""The real hailo backend against the hailo_platform double (tests/fakes)."""

import threading

import pytest

from hailo_repl.backends.base import BackendError, GenerationParams
from hailo_repl.backends.hailo import HailoBackend
from hailo_repl.chat import Chat
from hailo_repl.context import ContextOverflowError

SYSTEM = "You are a helpful assistant."


@pytest.fixture
def scripted_backend(hailo_resources, fake_script, fake_log):
    """A loaded HailoBackend whose device replies as `script` says; released afterwards."""
    directory = hailo_resources("Qwen2.5-1.5B-Instruct")
    opened = []

    def open_with(script) -> HailoBackend:
        fake_script(script)
        backend = HailoBackend(directory / "Qwen2.5-1.5B-Instruct.hef")
        backend.load()
        opened.append(backend)
        return backend

    yield open_with
    for backend in opened:
        backend.release()


@pytest.fixture
def backend(scripted_backend):
    return scripted_backend([["<text>", "One", " two", "</text>", "<|im_end|>"], ["Three", " four"], ["Five"]])


def prompts_sent(events):
    return [e["prompt"] for e in events() if e["event"] == "generate"]


def reply(chat, text, cancel=None):
    return "".join(chat.reply(text, cancel or threading.Event()))


def test_later_turns_send_the_device_only_the_new_message(backend, fake_log):
    chat = Chat(backend, SYSTEM, GenerationParams())
    assert reply(chat, "Hi") == "One two"
    assert reply(chat, "And then?") == "Three four"
    first, second = prompts_sent(fake_log)
    assert first == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}]
    assert second == [{"role": "user", "content": "And then?"}]
    assert [e["event"] for e in fake_log()].count("clear_context") == 0
    assert chat.messages[-2:] == [
        {"role": "user", "content": "And then?"},
        {"role": "assistant", "content": "Three four"},
    ]


def test_context_usage_is_read_from_the_device_and_grows(backend):
    chat = Chat(backend, SYSTEM, GenerationParams())
    assert chat.usage().used == 0 and chat.usage().capacity == 4096
    reply(chat, "Hi")
    after_one = chat.usage().used
    reply(chat, "Again")
    assert 0 < after_one < chat.usage().used


def test_history_the_device_lost_is_sent_again_after_a_clear(backend, fake_log):
    chat = Chat(backend, SYSTEM, GenerationParams())
    reply(chat, "Hi")
    reply(chat, "More")
    chat.messages = chat.messages[:-2]  # as /undo does: the device still holds the dropped exchange
    reply(chat, "Instead")
    events = [e["event"] for e in fake_log()]
    assert events[-2:] == ["clear_context", "generate"]
    last = prompts_sent(fake_log)[-1]
    assert last[0]["role"] == "system" and [m["content"] for m in last[1:]] == ["Hi", "One two", "Instead"]


def test_cancel_stops_generation_within_one_token_and_the_backend_is_usable_at_once(scripted_backend, fake_log):
    backend = scripted_backend({"replies": [["a", "b", "c", "d", "e", "f"], ["next"]], "delay_ms": 20})
    chat = Chat(backend, SYSTEM, GenerationParams())
    cancel = threading.Event()
    shown = []
    for piece in chat.reply("go", cancel):
        shown.append(piece)
        if len(shown) == 2:
            cancel.set()
    assert shown == ["a", "b"]
    assert any(e["event"] == "abort" and e["produced"] <= 3 for e in fake_log())
    assert chat.messages[-1] == {"role": "assistant", "content": "ab", "interrupted": True}
    assert reply(chat, "again") == "next"
    # the device kept the partial reply, so only the new message was sent
    assert prompts_sent(fake_log)[-1] == [{"role": "user", "content": "again"}]


def test_the_recovery_sequence_is_not_shown(scripted_backend):
    backend = scripted_backend({"replies": [["w"] * 10], "recovery_sequence": "<|im_end|>"})
    pieces = list(backend.stream([{"role": "user", "content": "x"}], GenerationParams(max_tokens=3), threading.Event()))
    assert pieces == ["w", "w", "w"]


def test_temperature_zero_means_greedy_decoding(backend, fake_log):
    list(backend.stream([{"role": "user", "content": "x"}], GenerationParams(temperature=0.0), threading.Event()))
    event = [e for e in fake_log() if e["event"] == "generate"][-1]
    assert event["do_sample"] is False and event["temperature"] is None


def test_release_happens_in_hailorts_order_and_only_once(backend, fake_log):
    backend.release()
    backend.release()
    assert [e["event"] for e in fake_log()][-3:] == ["clear_context", "llm_release", "vdevice_release"]
    assert [e["event"] for e in fake_log()].count("vdevice_release") == 1


def test_a_second_generation_while_one_runs_is_refused(backend):
    first = backend.stream([{"role": "user", "content": "x"}], GenerationParams(), threading.Event())
    next(first)
    with pytest.raises(BackendError, match="already"):
        next(backend.stream([{"role": "user", "content": "y"}], GenerationParams(), threading.Event()))
    first.close()


def test_a_full_context_drops_the_oldest_turns_instead_of_overflowing(scripted_backend, fake_log):
    backend = scripted_backend({"replies": [["word "] * 30], "context_capacity": 220})
    notices = []
    chat = Chat(backend, SYSTEM, GenerationParams(max_tokens=40))
    for turn in range(6):
        "".join(chat.reply(f"question number {turn} please", threading.Event(), notices.append))
        assert backend.context_used <= backend.context_capacity
    assert any("Dropped" in line for line in notices)
    assert chat.messages[0]["role"] == "system"
    assert "clear_context" in [e["event"] for e in fake_log()]


def test_a_loaded_conversation_with_other_replies_is_sent_whole(backend, fake_log):
    chat = Chat(backend, SYSTEM, GenerationParams())
    reply(chat, "Hi")  # the device now holds: system, Hi, One two
    saved = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Bonjour, I only speak French."},
    ]
    chat.replace_messages(saved)
    reply(chat, "Why?")
    last = prompts_sent(fake_log)[-1]
    assert [m["content"] for m in last] == [SYSTEM, "Hi", "Bonjour, I only speak French.", "Why?"]
    assert [e["event"] for e in fake_log()][-2:] == ["clear_context", "generate"]


def test_a_reader_that_stops_early_leaves_the_device_history_usable(backend, fake_log):
    chat = Chat(backend, SYSTEM, GenerationParams())
    pieces = chat.reply("Hi", threading.Event())
    next(pieces)
    pieces.close()  # what the REPL does when Ctrl+C wins the race with the backend
    reply(chat, "Next")
    assert prompts_sent(fake_log)[-1] == [{"role": "user", "content": "Next"}]
    assert "clear_context" not in [e["event"] for e in fake_log()]


def test_retry_cancelled_before_any_token_keeps_the_old_exchange(scripted_backend):
    backend = scripted_backend({"replies": [["first"], {"tokens": ["second"], "prefill_ms": 300}]})
    chat = Chat(backend, SYSTEM, GenerationParams())
    reply(chat, "Q")
    cancel = threading.Event()
    cancel.set()
    assert "".join(chat.reply(chat.last_question(), cancel, replace_last=True)) == ""
    assert [m["content"] for m in chat.messages] == [SYSTEM, "Q", "first"]


def test_retry_that_cannot_fit_keeps_the_old_exchange(backend):
    chat = Chat(backend, SYSTEM, GenerationParams())
    reply(chat, "Q")
    chat.params.max_tokens = 5000  # more than the whole context
    with pytest.raises(ContextOverflowError):
        "".join(chat.reply(chat.last_question(), threading.Event(), replace_last=True))
    assert [m["content"] for m in chat.messages] == [SYSTEM, "Q", "One two"]


def test_the_toolbar_never_asks_the_device_during_a_generation(scripted_backend):
    backend = scripted_backend({"replies": [["a", "b", "c"]], "delay_ms": 50})
    chat = Chat(backend, SYSTEM, GenerationParams())
    seen = []
    worker = threading.Thread(target=lambda: seen.append("".join(chat.reply("x", threading.Event()))))
    worker.start()
    while worker.is_alive():
        chat.usage()  # the toolbar's call, from another thread; the double refuses device calls
    worker.join()
    assert seen == ["abc"] and chat.usage().used > 0


def test_a_hef_the_device_cannot_open_is_explained(hailo_resources):
    directory = hailo_resources()
    backend = HailoBackend(directory / "missing.hef")
    with pytest.raises(BackendError, match="Failed to load .*missing.hef on the Hailo device: cannot open the file"):
        backend.load()
    backend.release()


def test_a_device_that_stops_answering_is_reported(scripted_backend):
    backend = scripted_backend({"replies": [{"tokens": ["never"], "prefill_ms": 3000}]})
    backend.stall_seconds = 0.3
    chat = Chat(backend, SYSTEM, GenerationParams())
    with pytest.raises(BackendError, match="gave no token"):
        reply(chat, "hello?")
    assert chat.messages == [{"role": "system", "content": SYSTEM}]  # nothing half-kept
