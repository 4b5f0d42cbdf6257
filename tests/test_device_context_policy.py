"""Which Hailo device contexts are kept, and where one is loaded: measured, then decided, within a
budget on disk. The real hailo backend against the double; the double's call log shows what
reached the device and in which order."""

import os
import threading
import time

import pytest
from conftest import remember_device

from hailo_repl.backends import hailo_keeping
from hailo_repl.backends.base import GenerationParams
from hailo_repl.backends.hailo_keeping import KeepingPolicy, make_room
from hailo_repl.backends.hailo_selfcheck import DeviceFacts
from hailo_repl.chat import KEEPING_DEVICE_CONTEXT, NOT_KEPT, Chat
from hailo_repl.sessions import SessionStore

QWEN = "Qwen2.5-1.5B-Instruct"
SYSTEM = "You are a helpful assistant."
CONTEXT_BYTES = 200_000
# A long message: a chat holding it is worth loading at a prefill of 1 ms a token (the double's
# own timings make the break-even ~100 tokens), the system prompt alone (~10 tokens) never is.
LONG = " ".join(f"point {n} of the plan is agreed" for n in range(40))


def reply(chat, text, **options):
    return "".join(chat.reply(text, threading.Event(), **options))


def names(fake_log):
    return [e["event"] for e in fake_log()]


def before_each_generate(fake_log):
    """For each generate: the device calls since the previous one (what ran between Enter and it)."""
    runs, calls = [], []
    for event in names(fake_log):
        if event == "generate":
            runs.append(calls)
            calls = []
        else:
            calls.append(event)
    return runs


@pytest.fixture
def keeping(tmp_path):
    def policy(budget: int = 512 << 20, keep_chats: bool = True) -> KeepingPolicy:
        return KeepingPolicy(keep_chats, budget, tmp_path / "sessions", tmp_path / "contexts")

    return policy


# ---- bounded on disk ------------------------------------------------------------------------------


def test_ten_chats_keep_their_contexts_within_the_budget_the_oldest_going_first(
    loaded_hailo_backend, keeping, fake_log, tmp_path, log_lines
):
    budget = 3 * CONTEXT_BYTES + CONTEXT_BYTES // 2  # room for three whole contexts
    policy = keeping(budget)
    store = SessionStore(tmp_path / "sessions")
    backend = loaded_hailo_backend(
        {"replies": [["Yes."]], "context_bytes": CONTEXT_BYTES}, tmp_path / "contexts", keeping=policy
    )
    ids = []
    for number in range(10):
        chat = Chat(backend, SYSTEM, GenerationParams(), store)
        reply(chat, f"Question {number}?")
        chat.keep_device_context()
        ids.append(chat.session_id)
        backend.clear()
        time.sleep(0.002)  # distinct modification times
    kept = sorted((tmp_path / "sessions").glob("*.ctx"))
    assert sum(path.stat().st_size for path in kept) <= budget
    assert {path.stem for path in kept} == set(ids[-3:])  # the newest three
    assert names(fake_log).count("save_context") == 10
    assert any("device-context budget is full" in line for line in log_lines)


def test_an_orphaned_context_goes_before_older_ones(tmp_path):
    sessions, contexts = tmp_path / "sessions", tmp_path / "contexts"
    sessions.mkdir()
    contexts.mkdir()
    old_chat = sessions / "aaaa.ctx"
    old_chat.write_bytes(b"x" * 100)
    (sessions / "aaaa.json").write_text("{}")
    system_prompt = contexts / "Qwen-1234.ctx"
    system_prompt.write_bytes(b"x" * 100)
    orphan = sessions / "bbbb.ctx"  # its chat was saved under a new id (or deleted): no bbbb.json
    orphan.write_bytes(b"x" * 100)
    now = time.time()
    for age, path in ((30, old_chat), (20, system_prompt), (10, orphan)):
        os.utime(path, (now - age, now - age))
    policy = KeepingPolicy(True, 300, sessions, contexts)
    assert make_room(policy, incoming=100)
    assert not orphan.exists() and old_chat.exists() and system_prompt.exists()
    assert make_room(policy, incoming=200)
    assert not old_chat.exists() and system_prompt.exists()  # then the oldest
    assert not make_room(policy, incoming=301)  # a context larger than the budget is not kept at all
    assert system_prompt.exists()


def test_with_no_budget_nothing_is_kept_and_the_chat_does_not_try_again(
    loaded_hailo_backend, keeping, fake_log, tmp_path
):
    store = SessionStore(tmp_path / "sessions")
    backend = loaded_hailo_backend({"replies": [["Yes."]]}, keeping=keeping(budget=0))
    chat = Chat(backend, SYSTEM, GenerationParams(), store)
    reply(chat, "Hi")
    chat.keep_device_context()
    assert list(tmp_path.rglob("*.ctx")) == []
    assert not chat.device_context_unsaved()  # it never fits: not a save to retry at quit


@pytest.mark.parametrize("why", ["a reply runs", "the save fails", "memory is short"])
def test_a_save_that_did_not_happen_is_not_counted_and_is_tried_again(
    loaded_hailo_backend, keeping, fake_log, tmp_path, monkeypatch, log_lines, why
):
    import hailo_platform.genai

    store = SessionStore(tmp_path / "sessions")
    backend = loaded_hailo_backend({"replies": [["Yes."]]}, keeping=keeping())
    chat = Chat(backend, SYSTEM, GenerationParams(), store)
    reply(chat, "Hi")
    with monkeypatch.context() as once:
        if why == "a reply runs":
            backend._busy.acquire()
        elif why == "the save fails":

            def disk_full(self):
                raise OSError(28, "No space left on device")

            once.setattr(hailo_platform.genai.LLM, "save_context", disk_full)
        else:
            once.setattr(hailo_keeping, "available_memory", lambda: 1000)
        said = []
        chat.keep_device_context(said.append)  # as /save asks for it
        if why == "a reply runs":
            backend._busy.release()
    assert said == [KEEPING_DEVICE_CONTEXT, NOT_KEPT]  # the user asked: one line says it was not
    assert not store.context_path(chat.session_id).exists()
    assert chat.device_context_unsaved()  # so quit (or the next idle moment) tries again
    if why == "memory is short":
        assert any(line.startswith("not saving the device context: it would take about") for line in log_lines)
    chat.keep_device_context()
    assert store.context_path(chat.session_id).exists()
    assert not chat.device_context_unsaved()


# ---- measure, then decide ---------------------------------------------------------------------------


def test_until_the_device_is_measured_nothing_is_kept_or_loaded(loaded_hailo_backend, keeping, fake_log, tmp_path):
    """A HEF that passed its self-check long ago, before figures were kept: no load, no save."""
    store = SessionStore(tmp_path / "sessions")
    backend = loaded_hailo_backend({"replies": [["Yes."]]}, tmp_path / "contexts", loads_pay=False, keeping=keeping())
    chat = Chat(backend, SYSTEM, GenerationParams(), store)
    reply(chat, LONG)
    assert not chat.device_context_unsaved()
    chat.keep_device_context()
    backend.release()
    assert "save_context" not in names(fake_log) and "prefill" not in names(fake_log)
    assert list(tmp_path.rglob("*.ctx")) == []


def test_the_first_use_measures_and_a_fresh_context_then_never_loads_before_its_first_token(
    loaded_hailo_backend, keeping, fake_log, hailo_resources, tmp_path
):
    """The self-check measures the device (prefill 1 ms a token here, a load in no time): loading
    pays for a long chat, never for the system prompt alone. So a new chat, /clear, /retry, a
    reply after a Ctrl+C: nothing but the prompt between Enter and the first token."""
    store = SessionStore(tmp_path / "sessions")
    script = {
        "replies": [["Yes."], ["No."], ["Maybe."], {"tokens": ["Long"] + [" reply"] * 30, "delay_ms": 5}, ["Sure."]],
        "prefill_ms_per_token": 1.0,
        "context_bytes": CONTEXT_BYTES,
    }
    backend = loaded_hailo_backend(script, tmp_path / "contexts", passed_self_check=False, keeping=keeping())
    (entry,) = DeviceFacts(hailo_resources.facts).entries().values()
    assert {"save", "load", "prefill", "text_path"} <= set(entry)
    checked = len(names(fake_log))

    chat = Chat(backend, SYSTEM, GenerationParams(), store)
    reply(chat, "Hi")  # a new chat
    chat.clear()
    reply(chat, "Hello")  # after /clear
    reply(chat, "Hello", replace_last=True)  # /retry
    cancel = threading.Event()
    for _ in chat.reply("Tell me more", cancel):
        cancel.set()  # Ctrl+C at the first piece
    reply(chat, "Go on")  # the reply after a Ctrl+C
    runs = before_each_generate(lambda: fake_log()[checked:])
    assert len(runs) == 5
    for calls in runs:
        assert not {"load_context", "save_context", "llm_open"} & set(calls), runs  # no GIL-held call
    backend.release()
    assert list((tmp_path / "contexts").glob("*.ctx")) == []  # the system prompt's is not worth keeping


def test_a_long_chat_is_kept_and_resumed_from_its_context_where_the_figures_say_so(
    loaded_hailo_backend, keeping, fake_log, hailo_resources, tmp_path
):
    store = SessionStore(tmp_path / "sessions")
    script = {"replies": [["Yes."], ["Agreed."]], "prefill_ms_per_token": 1.0, "context_bytes": CONTEXT_BYTES}
    backend = loaded_hailo_backend(script, tmp_path / "contexts", passed_self_check=False, keeping=keeping())
    short = Chat(backend, SYSTEM, GenerationParams(), store)
    reply(short, "Hi")
    assert not short.device_context_unsaved()  # a few tokens: reading them again is quicker
    backend.clear()
    long = Chat(backend, SYSTEM, GenerationParams(), store)
    reply(long, LONG)
    assert long.device_context_unsaved()
    long.keep_device_context()
    assert store.context_path(long.session_id).exists()
    backend.release()

    resumed = Chat(
        loaded_hailo_backend(script, tmp_path / "contexts", passed_self_check=False, keeping=keeping()),
        SYSTEM,
        GenerationParams(),
        store,
    )
    resumed.resume(long.session_id)
    said = []
    reply(resumed, "And then?", notify=said.append)
    assert before_each_generate(fake_log)[-1][-1] == "load_context"  # loaded: it beat reading ~300 tokens
    assert said == ["[Info] Loading the kept device context…"]  # said before the GIL is held for it


def test_a_prefill_sample_from_a_reply_widens_the_measured_range(loaded_hailo_backend, hailo_resources, tmp_path):
    script = {"replies": [["Yes."]], "prefill_ms_per_token": 1.0}
    backend = loaded_hailo_backend(script, loads_pay=False)
    chat = Chat(backend, SYSTEM, GenerationParams())
    reply(chat, "Hi")
    short_prompt = backend.last_prompt_tokens
    reply(chat, LONG + " " + LONG)
    (entry,) = DeviceFacts(hailo_resources.facts).entries().values()
    short, long = entry["prefill"]["short"], entry["prefill"]["long"]
    assert short[0] == short_prompt and long[0] == backend.last_prompt_tokens and long[0] - short[0] > 64
    assert long[1] >= long[0] * 1.0  # at least the device's prefill of it


def test_a_terminals_chat_after_a_scripts_on_the_same_model_runs_the_self_check_then(
    loaded_hailo_backend, keeping, fake_log, hailo_resources, tmp_path
):
    """In the engine process a model a script loaded (-p: no self-check, nothing kept) is the one a
    terminal's chat uses next: the check runs as that chat comes, the model is not loaded again."""
    script = {"replies": [["Yes."], ["No."]], "prefill_ms_per_token": 1.0, "context_bytes": CONTEXT_BYTES}
    backend = loaded_hailo_backend(
        script, tmp_path / "contexts", passed_self_check=False, keeping=keeping(keep_chats=False)
    )
    reply(Chat(backend, SYSTEM, GenerationParams()), "Hi")
    assert not any("text_path" in entry for entry in DeviceFacts(hailo_resources.facts).entries().values())
    backend.keep_as(keeping())
    (entry,) = DeviceFacts(hailo_resources.facts).entries().values()
    assert "text_path" in entry and backend.keeping.keep_chats
    assert reply(Chat(backend, SYSTEM, GenerationParams()), "Hello") == "No."
    assert names(fake_log).count("llm_open") == 1


def test_remember_device_makes_loads_pay(tmp_path):
    """The tests' shortcut (conftest.remember_device) gives figures the rule reads as 'load'."""
    from hailo_repl.backends.hailo_device import installed_hailort_version
    from hailo_repl.backends.hailo_keeping import DeviceFigures
    from hailo_repl.backends.hailo_selfcheck import device_key

    hef = tmp_path / "model.hef"
    hef.write_bytes(b"hef")
    remember_device(hef, tmp_path / "facts.json")
    figures = DeviceFigures.from_facts(
        DeviceFacts(tmp_path / "facts.json").entry(device_key(hef, installed_hailort_version()))
    )
    assert figures.measured and figures.load_wins(1) and not DeviceFigures().load_wins(10_000)


# ---- memory ------------------------------------------------------------------------------------------


def test_a_context_file_is_read_into_one_buffer_and_handed_on_as_a_view_of_it(tmp_path):
    from hailo_repl.backends.hailo_context import ContextTags, read_context, write_context

    tags = ContextTags("hef", "5.2.0", "digest")
    data = bytes(range(256)) * 1000
    write_context(tmp_path / "a.ctx", tags, data)
    read_tags, view = read_context(tmp_path / "a.ctx")
    assert read_tags == tags and view == data
    assert isinstance(view, memoryview) and isinstance(view.obj, bytes) and len(view.obj) > len(data)  # no copy


def test_a_resume_with_too_little_memory_for_the_load_reads_the_chat_again(
    loaded_hailo_backend, keeping, fake_log, tmp_path, monkeypatch, log_lines
):
    store = SessionStore(tmp_path / "sessions")
    script = {"replies": [["Yes."], ["Again."]], "context_bytes": CONTEXT_BYTES}
    chat = Chat(loaded_hailo_backend(script, keeping=keeping()), SYSTEM, GenerationParams(), store)
    reply(chat, LONG)
    chat.keep_device_context()
    chat.backend.release()
    monkeypatch.setattr(hailo_keeping, "available_memory", lambda: 5 * CONTEXT_BYTES)  # below 11x the context
    resumed = Chat(loaded_hailo_backend(script, keeping=keeping()), SYSTEM, GenerationParams(), store)
    resumed.resume(chat.session_id)
    reply(resumed, "And then?")
    assert "load_context" not in names(fake_log)
    assert any(line.startswith("not loading the device context: it would take about") for line in log_lines)
    assert [m["content"] for m in [e for e in fake_log() if e["event"] == "generate"][-1]["prompt"]][-1] == "And then?"
