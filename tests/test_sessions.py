"""Saved chats: autosave after each turn, the list and its index, search, resume, old /save files."""

import json
import os
import threading

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from scripted import CommandHarness, ScriptedBackend

from hailo_repl.backends.base import GenerationParams, cut_off
from hailo_repl.chat import Chat
from hailo_repl.commands import BUILTINS, CommandCompleter
from hailo_repl.conversation import save_conversation
from hailo_repl.sessions import INDEX_NAME, SessionNotFoundError, SessionStore


def talk(chat, *questions):
    for question in questions:
        list(chat.reply(question, threading.Event()))


def new_chat(store, *replies, **backend_options):
    return Chat(ScriptedBackend(*replies, **backend_options), "Be brief.", GenerationParams(), store)


@pytest.fixture
def store(tmp_path):
    return SessionStore(tmp_path / "sessions")


def test_every_turn_is_saved_with_its_model_backend_and_settings(store):
    chat = new_chat(store, ["Paris."], ["Berlin."])
    chat.params.temperature = 0.2

    talk(chat, "Capital of France?")
    saved = json.loads(store.path_of(chat.session_id).read_text())
    assert [m["content"] for m in saved["messages"]] == ["Be brief.", "Capital of France?", "Paris."]
    assert saved["model"] == "scripted-model" and saved["backend"] == "llama"
    assert saved["settings"]["temperature"] == 0.2
    assert saved["created"] and saved["updated"]
    assert oct(store.path_of(chat.session_id).stat().st_mode & 0o777) == "0o600"

    talk(chat, "And of Germany?")
    saved = json.loads(store.path_of(chat.session_id).read_text())
    assert saved["messages"][-1]["content"] == "Berlin."


def test_an_interrupted_reply_is_saved_with_its_flag(store):
    chat = new_chat(store, ["Once", " upon", " a time"])
    cancel = threading.Event()
    for _ in chat.reply("Tell a story", cancel):
        cancel.set()

    saved = json.loads(store.path_of(chat.session_id).read_text())
    assert saved["messages"][-1] == {"role": "assistant", "content": "Once", "interrupted": True}


def test_a_chat_with_nothing_said_writes_no_file(store):
    new_chat(store).clear()
    assert store.chats() == []
    assert not store.directory.exists()


def test_clear_starts_a_new_saved_chat_and_keeps_the_old_one(store):
    chat = new_chat(store)
    talk(chat, "first chat")
    chat.clear()
    talk(chat, "second chat")

    assert sorted(c.first_words for c in store.chats()) == ["first chat", "second chat"]


def test_undo_is_saved(store):
    chat = new_chat(store)
    talk(chat, "one", "two")
    chat.undo()

    messages = store.load(chat.session_id).messages
    assert [m["content"] for m in messages if m["role"] == "user"] == ["one"]


def test_the_list_is_newest_first_with_turns_and_first_words(store):
    older = new_chat(store)
    talk(older, "an older   question\nover two lines")
    newer = new_chat(store)
    talk(newer, "a newer one", "and more")
    # Timestamps have one-second resolution: make the order certain.
    path = store.path_of(older.session_id)
    data = json.loads(path.read_text())
    data["updated"] = "2000-01-01T00:00:00+00:00"
    path.write_text(json.dumps(data))

    chats = store.chats()
    assert [c.id for c in chats] == [newer.session_id, older.session_id]
    assert (chats[0].turns, chats[0].first_words) == (2, "a newer one")
    assert chats[1].first_words == "an older question over two lines"
    assert chats[1].id in chats[1].line() and "2000-01-01" in chats[1].line()


def test_the_index_follows_files_changed_or_removed_by_another_process(store):
    chat = new_chat(store)
    talk(chat, "first")
    assert store.chats()[0].turns == 1
    assert (store.directory / INDEX_NAME).exists()

    other = Chat(ScriptedBackend(), "Be brief.", GenerationParams(), SessionStore(store.directory))
    other.resume(chat.session_id)
    talk(other, "second")  # another hailo-repl appends a turn
    assert store.chats()[0].turns == 2

    store.path_of(chat.session_id).unlink()
    assert store.chats() == []


def test_a_broken_index_or_a_foreign_file_does_not_break_the_list(store):
    chat = new_chat(store)
    talk(chat, "kept")
    (store.directory / INDEX_NAME).write_text("{not json")
    (store.directory / "notes.json").write_text('{"something": "else"}')
    (store.directory / "garbage.json").write_bytes(b"\xff\xfe")

    assert [c.id for c in store.chats()] == [chat.session_id]


def test_search_finds_text_in_any_message_ignoring_case(store):
    about_cats = new_chat(store, ["Cats purr when CONTENT."])
    talk(about_cats, "Tell me about cats")
    about_dogs = new_chat(store, ["Dogs bark."])
    talk(about_dogs, "And dogs?")

    assert [c.id for c in store.search("content")] == [about_cats.session_id]
    assert [c.id for c in store.search("DOGS")] == [about_dogs.session_id]
    assert store.search("Be brief") == []  # the system prompt is not what a user looks for


def test_find_takes_a_unique_prefix(store):
    chat = new_chat(store)
    talk(chat, "hello")
    assert store.find(chat.session_id[:3]).id == chat.session_id
    with pytest.raises(SessionNotFoundError, match="No saved chat"):
        store.find("zzzz")


def test_an_ambiguous_prefix_names_the_matches(store):
    for name in ("abc1", "abc2"):
        save_conversation(store.path_of(name), [{"role": "user", "content": name}], "m")
    with pytest.raises(SessionNotFoundError, match="matches 2 chats"):
        store.find("abc")
    assert store.find("abc1").id == "abc1"


def test_latest_with_no_chats_says_so(store):
    with pytest.raises(SessionNotFoundError, match="No saved chats"):
        store.latest()


def test_resume_goes_on_in_the_same_file_and_the_gauge_counts_the_history_at_once(store):
    first = new_chat(store, ["Paris."])
    talk(first, "Capital of France?")

    backend = ScriptedBackend(["Lyon."])
    resumed = Chat(backend, "another prompt", GenerationParams(), store)
    resumed.resume(first.session_id)
    # ScriptedBackend counts words; nothing was sent to it yet.
    assert backend.prompts == []
    assert resumed.usage().used == backend.count_tokens(resumed.messages) == 6
    talk(resumed, "Second city?")

    assert backend.prompts[0] == ["Be brief.", "Capital of France?", "Paris.", "Second city?"]
    assert resumed.usage().used == backend.context_used  # the backend's own count again
    messages = store.load(first.session_id).messages
    assert [m["content"] for m in messages][-2:] == ["Second city?", "Lyon."]
    assert len(store.chats()) == 1


def test_an_old_save_file_is_listed_resumed_and_keeps_its_name(store):
    old = store.directory / "chat-20260101-120000.json"
    old.parent.mkdir(parents=True)
    # As /save wrote them before sessions existed: model and messages only.
    old.write_text(
        json.dumps(
            {"model": "Qwen2.5-1.5B-Instruct", "messages": [{"role": "user", "content": "old question"}]}, indent=2
        )
    )
    (summary,) = store.chats()
    assert (summary.id, summary.turns, summary.model) == ("chat-20260101-120000", 1, "Qwen2.5-1.5B-Instruct")

    chat = new_chat(store, ["new answer"])
    chat.resume(summary.id)
    talk(chat, "new question")
    data = json.loads(old.read_text())
    assert [m["content"] for m in data["messages"]] == ["Be brief.", "old question", "new question", "new answer"]


def test_a_read_only_store_writes_nothing(tmp_path):
    writable = SessionStore(tmp_path / "sessions")
    talk(new_chat(writable), "saved earlier")
    before = sorted(os.listdir(writable.directory))  # no index yet: listing read-only must not write one

    reading = SessionStore(tmp_path / "sessions", writable=False)
    chat = new_chat(reading)
    chat.resume(reading.latest().id)
    talk(chat, "not saved")

    assert sorted(os.listdir(writable.directory)) == before
    assert reading.chats()[0].turns == 1


def harness(chat) -> CommandHarness:
    return CommandHarness(chat, sessions_dir=chat.store.directory)


def test_history_lists_and_searches_and_resume_switches(store):
    first = new_chat(store, ["About tea."])
    talk(first, "tea please")
    context = harness(new_chat(store, ["About coffee."]))
    talk(context.chat, "coffee please")

    listing = context.run("/history")
    assert first.session_id in listing and context.chat.session_id in listing and "tea please" in listing
    assert "resumes instantly" not in listing
    store.context_path(first.session_id).write_bytes(b"a kept device context")
    (tea,) = [row for row in context.run("/history").splitlines() if first.session_id in row]
    assert tea.endswith("(resumes instantly)")
    found = context.run("/history TEA")
    assert first.session_id in found and context.chat.session_id not in found
    assert "No saved chat contains" in context.run("/history nothing-like-this")

    context.run(f"/resume {first.session_id[:4]}")
    assert context.chat.session_id == first.session_id
    assert context.shown == [first.session_id]
    assert context.chat.messages[-1]["content"] == "About tea."
    assert "No saved chat" in context.run("/resume zzzz")


def test_tab_completes_saved_chat_ids_with_their_first_words(store):
    chat = new_chat(store)
    talk(chat, "what is a transformer")
    context = harness(new_chat(store))

    completer = CommandCompleter(BUILTINS, context)
    found = list(completer.get_completions(Document("/resume "), CompleteEvent(completion_requested=True)))
    assert [c.text for c in found] == [chat.session_id]
    assert "what is a transformer" in found[0].display_meta_text
    typed = f"/resume {chat.session_id[:2]}"
    assert [c.text for c in completer.get_completions(Document(typed), CompleteEvent())] == [chat.session_id]


def test_load_of_a_file_continues_as_a_new_chat_and_leaves_the_current_one_saved(store, tmp_path):
    chat = new_chat(store, ["current answer"], ["loaded answer"])
    talk(chat, "current question")
    current = chat.session_id
    elsewhere = tmp_path / "shared.json"
    save_conversation(elsewhere, [{"role": "user", "content": "from a file"}], "m")

    context = harness(chat)
    context.run(f"/load {elsewhere}")
    talk(chat, "after the load")

    kept = store.load(current).messages
    assert [m["content"] for m in kept][1:] == ["current question", "current answer"]
    loaded = store.load(chat.session_id).messages
    assert chat.session_id != current
    assert [m["content"] for m in loaded if m["role"] == "user"] == ["from a file", "after the load"]


def test_a_reply_cut_by_max_tokens_can_be_continued_after_a_resume(store):
    chat = Chat(ScriptedBackend(["a", " b", " c"]), "Be brief.", GenerationParams(max_tokens=3), store)
    talk(chat, "Count")
    resumed = new_chat(store)
    resumed.resume(chat.session_id)
    assert resumed.messages[-1] == {"role": "assistant", "content": "a b c", "truncated": True}
    assert cut_off(resumed.messages[-1])
