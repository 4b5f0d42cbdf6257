"""Instant resume on the Hailo: the device's context saved beside a chat and loaded on resume,
and the system prompt's context kept per HEF; the real hailo backend against the double."""

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from hailo_platform.genai import _tokenize

from hailo_repl.backends.base import GenerationParams
from hailo_repl.backends.hailo import HailoBackend
from hailo_repl.chat import Chat
from hailo_repl.sessions import SessionStore

QWEN = "Qwen2.5-1.5B-Instruct"
SYSTEM = "You are a helpful assistant."
# Like Qwen2.5's, it adds a default system prompt to a first prompt without one: a templated
# prompt sent after a load on a fresh LLM would put it in the middle of the context.
QWEN_LIKE_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<sys>default</sys>{% endif %}"
    "{% for m in messages %}{% if m['role'] in ['system', 'user', 'assistant'] %}"
    "<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture
def open_device(loaded_hailo_backend):
    """Each call: a new hailo-repl process's backend, loaded (a fresh LLM on the double)."""
    script = {"replies": [["Paris."], ["Berlin."], ["Rome."]], "prompt_template": QWEN_LIKE_TEMPLATE}

    def open_backend(cache=None) -> HailoBackend:
        return loaded_hailo_backend(script, cache)

    return open_backend


def reply(chat, text):
    return "".join(chat.reply(text, threading.Event()))


def generations(fake_log):
    return [e for e in fake_log() if e["event"] == "generate"]


def saved_chat(open_device, fake_log, store):
    """Two turns in one process, which then ends; returns the chat and the device's text at its end."""
    chat = Chat(open_device(), SYSTEM, GenerationParams(), store)
    assert reply(chat, "Capital of France?") == "Paris."
    assert reply(chat, "Of Germany?") == "Berlin."
    assert "save_context" not in [e["event"] for e in fake_log()]  # not between turns
    chat.keep_device_context()  # as the process does when it ends
    chat.backend.release()
    last = generations(fake_log)[-1]
    return chat, last["held"] + last["inserted"] + "Berlin."


def test_a_resumed_chat_loads_the_device_context_and_reads_only_the_new_message(open_device, fake_log, tmp_path):
    store = SessionStore(tmp_path / "sessions")
    first, device_text = saved_chat(open_device, fake_log, store)
    context_file = store.context_path(first.session_id)
    assert stat.S_IMODE(context_file.stat().st_mode) == 0o600

    resumed = Chat(open_device(), SYSTEM, GenerationParams(), store)
    resumed.resume(first.session_id)
    assert reply(resumed, "And Italy?") == "Paris."

    last = generations(fake_log)[-1]
    assert last["held"] == device_text  # the context as the first process left it
    # Sent as the template renders a later prompt: no default system prompt mid-context.
    assert last["inserted"] == "<user>And Italy?</user><assistant>"
    assert resumed.last_stats.prompt_tokens == len(_tokenize(last["inserted"]))
    assert "clear_context" not in [e["event"] for e in fake_log()][-3:]
    # The next turn goes on from there, the context saved again for the next resume.
    reply(resumed, "And Spain?")
    assert generations(fake_log)[-1]["inserted"] == "<user>And Spain?</user><assistant>"
    assert json.loads(store.path_of(first.session_id).read_text())["messages"][-1]["content"] == "Berlin."


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("no context file", "no saved device context"),
        ("damaged file", "is damaged"),
        ("another HailoRT", "it was saved by HailoRT 5.2.0, this is 5.3.0"),
        ("chat edited", "it holds other messages than the chat has now"),
        ("another HEF, same name, size and time", "HailoRT refused it"),
    ],
)
def test_a_context_that_does_not_fit_is_not_loaded_and_the_history_is_sent(
    open_device, fake_log, tmp_path, log_lines, monkeypatch, hailo_resources, change, reason
):
    store = SessionStore(tmp_path / "sessions")
    first, _ = saved_chat(open_device, fake_log, store)
    context_file = store.context_path(first.session_id)
    if change == "no context file":
        context_file.unlink()
    elif change == "damaged file":
        context_file.write_bytes(b"hailo-repl device context 1\n{not json\n")
    elif change == "another HailoRT":
        monkeypatch.setattr("hailo_platform.__version__", "5.3.0")
    elif change == "chat edited":
        saved = json.loads(store.path_of(first.session_id).read_text())
        saved["messages"][-1]["content"] = "Bonn."
        store.path_of(first.session_id).write_text(json.dumps(saved))
    else:  # the device's own check of the HEF's hash is what stops it
        hef = hailo_resources.directory / f"{QWEN}.hef"
        times = hef.stat()
        hef.write_bytes(b"fake heF")
        os.utime(hef, ns=(times.st_atime_ns, times.st_mtime_ns))

    resumed = Chat(open_device(), SYSTEM, GenerationParams(), store)
    resumed.resume(first.session_id)
    assert reply(resumed, "And Italy?") == "Paris."

    last = generations(fake_log)[-1]
    assert last["held"] == ""  # the whole history read again, as before this feature
    assert [m["content"] for m in last["prompt"]] == [
        SYSTEM,
        "Capital of France?",
        "Paris.",
        "Of Germany?",
        "Bonn." if change == "chat edited" else "Berlin.",
        "And Italy?",
    ]
    assert any(line.startswith("not loading") and reason in line for line in log_lines), log_lines


def test_a_new_chat_loads_the_system_prompt_kept_per_hef(open_device, fake_log, tmp_path):
    cache = tmp_path / "contexts"
    first = Chat(open_device(cache), SYSTEM, GenerationParams())
    reply(first, "Hi")
    hi = generations(fake_log)[-1]
    assert hi["held"] == "" and hi["inserted"] == f"<system>{SYSTEM}</system><user>Hi</user><assistant>"
    assert [e for e in fake_log() if e["event"] in ("prefill", "save_context")] == []  # nothing before the reply
    first.backend.release()  # the system prompt is read alone and kept as the model is released
    (prefill,) = [e for e in fake_log() if e["event"] == "prefill"]
    assert prefill["inserted"] == f"<system>{SYSTEM}</system>"
    (kept,) = cache.iterdir()
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and stat.S_IMODE(cache.stat().st_mode) == 0o700

    second = Chat(open_device(cache), SYSTEM, GenerationParams())
    reply(second, "Hello")
    hello = generations(fake_log)[-1]
    assert hello["held"] == f"<system>{SYSTEM}</system>"
    assert second.last_stats.prompt_tokens == len(_tokenize("<user>Hello</user><assistant>"))

    # /clear: a new chat on the same device starts from the kept context as well.
    second.clear()
    reply(second, "Again")
    again = generations(fake_log)[-1]
    assert again["held"] == f"<system>{SYSTEM}</system>" and again["inserted"] == "<user>Again</user><assistant>"

    other = Chat(second.backend, "Be brief.", GenerationParams())
    other.backend.clear()
    reply(other, "Hi")
    other.backend.release()
    assert [e["inserted"] for e in fake_log() if e["event"] == "prefill"][-1] == "<system>Be brief.</system>"
    assert len(list(cache.iterdir())) == 2


def test_without_a_saved_chat_nothing_is_written(open_device, tmp_path):
    store = SessionStore(tmp_path / "sessions", writable=False)  # --no-history
    chat = Chat(open_device(), SYSTEM, GenerationParams(), store)
    reply(chat, "Hi")
    assert not (tmp_path / "sessions").exists()


def test_a_system_prompt_kept_on_another_day_is_not_loaded_where_the_template_dates_it(
    loaded_hailo_backend, fake_log, tmp_path, monkeypatch
):
    """Llama 3.x's system block holds today's date (strftime_now): a context kept yesterday holds
    yesterday's, and a new chat today must read the system prompt as HailoRT renders it today."""
    llama = (Path(__file__).parent / "data" / "chat_templates" / "Llama-3.2-Instruct.jinja").read_text()
    script = {"replies": [["Paris."]], "prompt_template": llama}
    cache = tmp_path / "contexts"

    def new_chat_on(day):
        monkeypatch.setattr(time, "localtime", lambda *when: time.strptime(day, "%Y-%m-%d"))
        chat = Chat(loaded_hailo_backend(script, cache), SYSTEM, GenerationParams())
        reply(chat, "Hi")
        chat.backend.release()  # keeps the system prompt's context if it was not loaded
        return generations(fake_log)[-1]

    new_chat_on("2025-02-03")
    same_day = new_chat_on("2025-02-03")
    assert "Today Date: 03 Feb 2025" in same_day["held"]  # loaded
    next_day = new_chat_on("2025-02-04")
    assert next_day["held"] == "" and "Today Date: 04 Feb 2025" in next_day["inserted"]  # read again, today's date
    assert "Today Date: 04 Feb 2025" in new_chat_on("2025-02-04")["held"]  # and kept again
    assert len(list(cache.iterdir())) == 1  # in the same file
