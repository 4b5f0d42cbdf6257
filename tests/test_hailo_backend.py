"""The real hailo backend against the hailo_platform double (tests/fakes)."""

import threading
import time

import pytest

from hailo_repl.backends.base import BackendError, GenerationParams
from hailo_repl.backends.hailo import HailoBackend
from hailo_repl.chat import Chat
from hailo_repl.context import ContextOverflowError

SYSTEM = "You are a helpful assistant."


@pytest.fixture
def scripted_backend(loaded_hailo_backend, fake_log):
    """A loaded HailoBackend whose device replies as `script` says; released afterwards."""
    return loaded_hailo_backend


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


def test_after_a_cancel_the_model_remembers_only_what_the_user_saw(scripted_backend, fake_log):
    backend = scripted_backend({"replies": [["a", "b", "c", "d", "e", "f"], ["next"]], "delay_ms": 20})
    chat = Chat(backend, SYSTEM, GenerationParams())
    cancel = threading.Event()
    shown = []
    for piece in chat.reply("go", cancel):
        shown.append(piece)
        if len(shown) == 2:
            cancel.set()
    assert shown == ["a", "b"]
    (abort,) = [e for e in fake_log() if e["event"] == "abort"]
    assert abort["generated"] > 2  # the device went on: tokens read but not shown, and the abort's own
    assert chat.messages[-1] == {"role": "assistant", "content": "ab", "interrupted": True}
    assert backend.context_used > 0  # what the device reported after the abort
    assert reply(chat, "again") == "next"
    # What the device held after the abort is unknown here: it starts afresh, with the reply as shown.
    assert [e["event"] for e in fake_log()][-2:] == ["clear_context", "generate"]
    last = [e for e in fake_log() if e["event"] == "generate"][-1]
    assert last["held"] == ""
    assert [m["content"] for m in last["prompt"]] == [SYSTEM, "go", "ab", "again"]


def test_the_recovery_sequence_is_not_shown(scripted_backend):
    backend = scripted_backend({"replies": [["w"] * 10], "recovery_sequence": "<|im_end|>"})
    pieces = list(backend.stream([{"role": "user", "content": "x"}], GenerationParams(max_tokens=3), threading.Event()))
    assert pieces == ["w", "w", "w"]


@pytest.mark.parametrize("recovery", ["\n\n<|im_end|>", "<|endoftext|><|im_end|>"])
def test_a_recovery_sequence_of_several_tokens_is_not_shown_either(scripted_backend, recovery):
    """HailoRT sends it one token a read (llm_server.cpp `handle_read_request`)."""
    backend = scripted_backend({"replies": [["Hi", "\n", "w"] * 5], "recovery_sequence": recovery})
    pieces = list(backend.stream([{"role": "user", "content": "x"}], GenerationParams(max_tokens=7), threading.Event()))
    assert "".join(pieces) == "Hi\nwHi\nwHi"  # a newline of the reply itself still shows


def test_a_reply_ending_like_the_start_of_the_recovery_sequence_keeps_its_end(scripted_backend):
    backend = scripted_backend({"replies": [["Hi", "\n\n"]], "recovery_sequence": "\n\n<|im_end|>"})
    pieces = list(backend.stream([{"role": "user", "content": "x"}], GenerationParams(max_tokens=9), threading.Event()))
    assert "".join(pieces) == "Hi\n\n"


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
    pieces.close()  # a reader that stops without a cancel: the generation is aborted
    reply(chat, "Next")
    last = [e for e in fake_log() if e["event"] == "generate"][-1]
    assert last["held"] == ""  # not the tokens the reader never took
    assert [m["content"] for m in last["prompt"]] == [SYSTEM, "Hi", "One", "Next"]


def test_a_reply_that_ended_by_itself_is_kept_on_the_device(backend, fake_log):
    chat = Chat(backend, SYSTEM, GenerationParams())
    cancel = threading.Event()
    assert "".join(chat.reply("Hi", cancel)) == "One two"
    cancel.set()  # too late to matter: the device had finished
    reply(chat, "Next")
    assert prompts_sent(fake_log)[-1] == [{"role": "user", "content": "Next"}]


def test_retry_cancelled_before_any_token_keeps_the_old_exchange(scripted_backend):
    backend = scripted_backend({"replies": [["first"], {"tokens": ["second"], "prefill_ms": 150}]})
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


# ---- a device that stalls or whose token thread dies ----------------------------------


def test_a_stalled_device_is_announced_and_its_late_reply_still_shown(scripted_backend):
    backend = scripted_backend({"replies": [{"tokens": ["late", " reply"], "stall_ms": 300, "stall_at": 0}]})
    backend.reader.stall_notice_seconds = 0.1
    notices = []
    chat = Chat(backend, SYSTEM, GenerationParams())
    assert "".join(chat.reply("hello?", threading.Event(), notices.append)) == "late reply"
    (notice,) = notices
    assert "no token for" in notice and "Ctrl+C" in notice


def test_a_token_thread_that_dies_is_reported_and_the_next_turn_starts_afresh(scripted_backend, fake_log):
    # HailoRT gives up a request after its timeout (2 minutes; here 0.15 s), and its token thread ends.
    backend = scripted_backend(
        {"replies": [{"tokens": ["never"], "stall_ms": 60_000}, ["fine"]], "request_timeout_ms": 150}
    )
    chat = Chat(backend, SYSTEM, GenerationParams())
    with pytest.raises(BackendError, match="stopped generating"):
        reply(chat, "hello?")
    assert chat.messages == [{"role": "system", "content": SYSTEM}]  # nothing half-kept
    assert reply(chat, "again") == "fine"
    assert [e["event"] for e in fake_log()][-2:] == ["clear_context", "generate"]


def test_a_thread_that_died_with_tokens_queued_is_given_up_after_hailorts_timeout(scripted_backend):
    # read() then times out for ever (llm.cpp signals no shutdown while tokens are queued).
    backend = scripted_backend({"replies": [{"tokens": ["a", "b", "c"], "fail_after": 2, "queued_at_death": True}]})
    backend.reader.stall_notice_seconds = 0.05
    backend.reader.stall_give_up_seconds = 0.15
    notices = []
    chat = Chat(backend, SYSTEM, GenerationParams())
    shown = []
    with pytest.raises(BackendError, match="gave no token"):
        for piece in chat.reply("x", threading.Event(), notices.append):
            shown.append(piece)
    assert shown == ["a", "b"] and len(notices) == 1


def test_a_cancel_during_a_stall_waits_for_the_token_instead_of_aborting_mid_request(scripted_backend, fake_log):
    # An abort during a stalled request would wait for it with the GIL held, freezing the UI.
    backend = scripted_backend({"replies": [{"tokens": ["late", " reply"], "stall_ms": 200, "stall_at": 0}]})
    cancel = threading.Event()
    cancel.set()
    assert list(backend.stream([{"role": "user", "content": "x"}], GenerationParams(), cancel)) == []
    (abort,) = [e for e in fake_log() if e["event"] == "abort"]
    assert abort["during_stall"] is False


# ---- the UI comes before the abort ----------------------------------------------------


class NoticedCancel(threading.Event):
    """A cancel event that records when the backend first sees it set."""

    def __init__(self) -> None:
        super().__init__()
        self.noticed_at: float | None = None

    def is_set(self) -> bool:
        result = super().is_set()
        if result and self.noticed_at is None:
            self.noticed_at = time.monotonic()
        return result


def test_after_a_cancel_the_abort_that_holds_the_gil_waits_for_the_ui_thread(scripted_backend, fake_log):
    """The abort holds the GIL (as HailoRT's does): it waits ABORT_AFTER_PROMPT_SECONDS after the
    cancel is seen, the time the UI thread needs to draw the prompt. The delay is the backend's,
    measured between two of its own moments, so a busy machine cannot make it fail."""
    from hailo_repl.backends.hailo_stream import ABORT_AFTER_PROMPT_SECONDS

    backend = scripted_backend({"replies": [["w"] * 40], "delay_ms": 30})
    cancel = NoticedCancel()
    for count, _ in enumerate(backend.stream([{"role": "user", "content": "x"}], GenerationParams(), cancel)):
        if count == 2:
            cancel.set()  # Ctrl+C
    (abort,) = fake_log.named("abort")
    assert cancel.noticed_at is not None
    assert abort["at"] - cancel.noticed_at >= 0.9 * ABORT_AFTER_PROMPT_SECONDS


# ---- clear() and release() while a reply runs -----------------------------------------


def start_reply(chat: Chat) -> tuple[threading.Thread, list[str], threading.Event]:
    """A reply streaming on its own thread, as the REPL's worker runs it; returns once a token came."""
    shown: list[str] = []
    first = threading.Event()

    def run() -> None:
        for piece in chat.reply("tell me everything", threading.Event()):
            shown.append(piece)
            first.set()

    worker = threading.Thread(target=run)
    worker.start()
    first.wait()
    return worker, shown, first


def test_clear_during_a_reply_stops_it_before_clearing(scripted_backend, fake_log):
    backend = scripted_backend({"replies": [["w "] * 100, ["fresh"]], "delay_ms": 20})
    chat = Chat(backend, SYSTEM, GenerationParams())
    worker, shown, _ = start_reply(chat)
    chat.clear()  # /clear
    worker.join()
    events = [e["event"] for e in fake_log()]
    assert len(shown) < 100
    assert events.index("abort") < events.index("clear_context")
    assert not [e for e in fake_log() if e["event"] == "waited"]  # the clear never reached the device mid-reply
    assert backend.context_used == 0
    assert reply(chat, "hi") == "fresh"
    last = [e for e in fake_log() if e["event"] == "generate"][-1]
    assert last["held"] == "" and [m["content"] for m in last["prompt"]] == [SYSTEM, "hi"]


def test_release_during_a_reply_stops_it_then_releases_in_order(scripted_backend, fake_log):
    backend = scripted_backend({"replies": [["w "] * 100], "delay_ms": 20})
    chat = Chat(backend, SYSTEM, GenerationParams())
    worker, shown, _ = start_reply(chat)
    backend.release()  # SIGTERM or SIGHUP during a reply
    worker.join()
    events = [e["event"] for e in fake_log()]
    assert events[events.index("abort") :] == ["abort", "clear_context", "llm_release", "vdevice_release"]
    assert chat.messages[-1]["interrupted"] is True


def test_load_after_release_opens_a_new_vdevice(scripted_backend, fake_log):
    backend = scripted_backend([["a"]])
    backend.release()
    backend.load()  # LLM() on the released VDevice would pass HailoRT a null pointer
    assert [e["event"] for e in fake_log()].count("vdevice_open") == 2
    assert "".join(backend.stream([{"role": "user", "content": "x"}], GenerationParams(), threading.Event())) == "a"


# ---- load errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "script", "words"),
    [
        (b"HEF", {}, "could not be read whole"),  # truncated before the header's end
        (bytes(64), {}, "HEF format this HailoRT does not support (use a HEF built for HailoRT 5.2.0"),
        (b"fake hef" * 8, {"load_status": 26}, "not a valid HEF"),
        (b"fake hef" * 8, {"load_status": 93}, "compiled for another Hailo device (use a Hailo-10H HEF)"),
    ],
)
def test_a_hef_the_device_refuses_is_explained(hailo_resources, fake_script, content, script, words):
    directory = hailo_resources()
    (directory / "bad.hef").write_bytes(content)
    fake_script({"replies": [["x"]], **script})
    backend = HailoBackend(directory / "bad.hef")
    with pytest.raises(BackendError) as raised:
        backend.load()
    backend.release()
    assert str(raised.value).startswith(f"Failed to load {directory / 'bad.hef'} on the Hailo device: ")
    assert words in str(raised.value)


# ---- token estimates from the model's own template ------------------------------------

LLAMA3_TEMPLATE = (
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


@pytest.mark.parametrize("template", [None, LLAMA3_TEMPLATE], ids=["chatml", "llama3"])
def test_prompt_tokens_are_counted_as_the_device_templates_them(scripted_backend, fake_log, template):
    script = {"replies": [["One", " two"], ["Three"]]}
    if template:
        script["prompt_template"] = template
    backend = scripted_backend(script)
    chat = Chat(backend, SYSTEM, GenerationParams())
    expected_first = backend.count_tokens([*chat.messages, {"role": "user", "content": "Hi there"}])
    reply(chat, "Hi there")
    after_first = backend.context_used
    expected_second = backend.count_tokens([*chat.messages, {"role": "user", "content": "And then, what?"}])
    reply(chat, "And then, what?")
    first, second = [e for e in fake_log() if e["event"] == "generate"]
    assert first["usage_before_reply"] == expected_first  # the prompt as the device templated it
    assert second["usage_before_reply"] == expected_second
    assert backend.last_prompt_tokens == second["usage_before_reply"] - after_first


def test_a_template_that_does_not_render_falls_back_to_chatml(scripted_backend):
    from hailo_repl.backends.hailo_device import render_chatml

    backend = scripted_backend({"replies": [["x"]], "prompt_template": "{% for message in %}"})
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi"}]
    assert backend.count_tokens(messages) == len(backend._model.tokenize(render_chatml(messages)))


def test_the_abort_is_timed_just_before_the_next_token_and_after_the_prompt():
    from hailo_repl.backends.hailo_stream import ABORT_AFTER_PROMPT_SECONDS, TokenPace

    pace = TokenPace()
    assert pace.seconds_until_abort(now=5.0) == pytest.approx(ABORT_AFTER_PROMPT_SECONDS)  # no pace known yet
    for moment in (0.0, 0.1, 0.2):  # a token every 100 ms
        pace.arrived(moment)
    # the next token is due at 0.3: abort a fifth of a token-time before it
    assert pace.seconds_until_abort(now=0.2) == pytest.approx(0.08)
    # too soon for the prompt to be drawn: the moment before the token after
    assert pace.seconds_until_abort(now=0.25) == pytest.approx(0.13)


def test_a_users_literal_think_on_a_reasoning_hef_makes_the_next_turn_start_afresh(scripted_backend, fake_log):
    """The device splits the prompt at the first reasoning token, the user's own included, and once
    the reply ends keeps only what came before it: the rest of that message is gone from it."""
    from pathlib import Path

    deepseek = (Path(__file__).parent / "data" / "chat_templates" / "DeepSeek-R1-Distill-Qwen.jinja").read_text()
    backend = scripted_backend(
        {"replies": [["Fine."], ["A tag."], ["Sure."]], "prompt_template": deepseek, "reasoning_start": "<think>"}
    )
    chat = Chat(backend, "Be brief.", GenerationParams())
    reply(chat, "How are you?")
    reply(chat, "What does <think> do in a prompt?")
    reply(chat, "Thanks")
    events = fake_log()
    generations = [e for e in events if e["event"] == "generate"]
    assert generations[1]["held"] != ""  # an ordinary turn goes on from what the device holds
    assert [e["event"] for e in events][-2:] == ["clear_context", "generate"]  # after the literal one: afresh
    assert generations[2]["held"] == ""
    sent = [m["content"] for m in generations[2]["prompt"]]
    assert sent[-3:] == ["What does <think> do in a prompt?", "A tag.", "Thanks"]
