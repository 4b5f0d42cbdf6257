"""Slash-command registry: parsing, dispatch, /help text, completion, suggestions."""

import re
import threading

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from scripted import CommandHarness, ScriptedBackend

from hailo_repl.backends.base import GenerationParams
from hailo_repl.chat import Chat
from hailo_repl.commands import BUILTINS, CommandCompleter, Quit


def completions(text):
    return [
        c.text
        for c in CommandCompleter(BUILTINS).get_completions(Document(text), CompleteEvent(completion_requested=True))
    ]


def test_slash_lists_every_command_with_its_help():
    found = CommandCompleter(BUILTINS).get_completions(Document("/"), CompleteEvent(completion_requested=True))
    metas = {c.text: c.display_meta_text for c in found}
    for name in (
        "/help",
        "/clear",
        "/context",
        "/quit",
        "/exit",
        "/system",
        "/set",
        "/retry",
        "/undo",
        "/stats",
        "/save",
        "/load",
    ):
        assert name in metas
    assert metas["/context"] == "show how full the context window is"


def test_a_prefix_completes_to_the_command():
    assert completions("/he") == ["/help"]
    assert completions("hello") == []


def test_set_completes_the_live_settings_and_save_completes_every_setting():
    assert completions("/set ") == ["temperature", "max-tokens", "top-p", "vi-mode", "word-wrap", "--save"]
    assert completions("/set te") == ["temperature"]
    assert completions("/set --save ba") == ["backend"]


def test_save_and_load_complete_file_paths(tmp_path, monkeypatch):
    (tmp_path / "chat-one.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert "chat-one.json" in completions("/load ch") or "at-one.json" in completions("/load ch")
    assert completions("/save ch")


def test_unknown_commands_get_a_suggestion():
    assert BUILTINS.unknown_message("/hlep") == "Unknown command /hlep — did you mean /help?"
    assert BUILTINS.unknown_message("/zzzzzz").startswith("Unknown command /zzzzzz")


def test_parse_splits_command_and_argument():
    entry, argument, word = BUILTINS.parse("/set  temperature 0.2")
    assert entry.name == "/set" and argument == "temperature 0.2" and word == "/set"
    assert BUILTINS.parse("/EXIT")[0].name == "/quit"


@pytest.fixture
def repl(tmp_path):
    """What a command may use (commands.CommandContext)."""
    chat = Chat(ScriptedBackend(default=["fine ", "thanks"], capacity=1000), "be kind", GenerationParams())
    return CommandHarness(chat, sessions_dir=tmp_path / "sessions", config_file=tmp_path / "config" / "config.yaml")


def talk(repl, text):
    return "".join(repl.chat.reply(text, threading.Event()))


def test_set_validates_and_names_the_range(repl):
    repl.run("/set temperature hot")
    assert "0.0 to 2.0" in repl.said[-1]
    repl.run("/set temperature 3")
    assert repl.chat.params.temperature == 0.7
    repl.run("/set temperature 0.2")
    repl.run("/set max-tokens 64")
    repl.run("/set top-p 0.9")
    assert (repl.chat.params.temperature, repl.chat.params.max_tokens, repl.chat.params.top_p) == (0.2, 64, 0.9)
    repl.run("/set max-tokens -1")
    assert "above 0" in repl.said[-1]


def test_undo_and_retry(repl):
    repl.run("/retry")
    assert repl.outcome is None and repl.said[-1] == "Nothing to retry yet."
    talk(repl, "hi")
    talk(repl, "how are you")
    repl.run("/retry")
    resend = repl.outcome
    assert resend.text == "how are you"
    # /retry changes nothing until the new reply arrives, which then takes the old one's place
    assert [m["content"] for m in repl.chat.messages] == ["be kind", "hi", "fine thanks", "how are you", "fine thanks"]
    "".join(repl.chat.reply(resend.text, threading.Event(), replace_last=True))
    assert [m["content"] for m in repl.chat.messages] == ["be kind", "hi", "fine thanks", "how are you", "fine thanks"]
    assert len(repl.chat.messages) == 5
    repl.run("/undo")
    assert [m["content"] for m in repl.chat.messages] == ["be kind", "hi", "fine thanks"]
    repl.run("/undo")
    repl.run("/undo")
    assert repl.said[-1] == "Nothing to undo."


def test_clear_context_and_system(repl):
    talk(repl, "hi")
    repl.run("/clear")
    assert len(repl.chat.messages) == 1 and repl.chat.backend.cleared == 1
    repl.run("/context")
    assert repl.said[-1] == "[Info] Context: [███░░░░░░░░░░░░░░░░░░░░░░░░░░░] 100/1000 (10%)"
    repl.run("/system")
    assert repl.said[-1] == "System prompt: be kind"
    repl.run("/system talk like a pirate")
    assert repl.chat.messages[0] == {"role": "system", "content": "talk like a pirate"}


def test_save_and_load_round_trip(repl, tmp_path):
    talk(repl, "remember 42")
    repl.run(f"/save {tmp_path / 'c.json'}")
    repl.run("/clear")
    repl.run(f"/load {tmp_path / 'c.json'}")
    assert [m["content"] for m in repl.chat.messages] == ["be kind", "remember 42", "fine thanks"]
    (tmp_path / "bad.json").write_text("{not json")
    repl.run(f"/load {tmp_path / 'bad.json'}")
    assert repl.said[-1].startswith("[Error]") and "not a saved conversation" in repl.said[-1]


def test_save_without_a_name_goes_to_the_sessions_dir(repl):
    repl.run("/save")
    assert len(list(repl.sessions_dir.glob("chat-*.json"))) == 1


def test_stats_and_quit(repl):
    repl.run("/stats")
    assert repl.said[-1] == "No replies yet."
    talk(repl, "hi")
    repl.run("/stats")
    assert "time to first token" in repl.said[-1] and "tok/s" in repl.said[-1]
    with pytest.raises(Quit):
        repl.run("/exit")


def test_help_lists_commands_and_keys(repl):
    repl.run("/help")
    assert "/retry" in repl.said[-1] and "Alt+Enter" in repl.said[-1]
    assert re.search(r"^  temperature +0.7 +a number from 0.0 to 2.0$", repl.said[-1], re.M)


def test_dropping_old_turns_keeps_every_system_message(repl):
    repl.chat.replace_messages(
        [
            {"role": "system", "content": "s1"},
            {"role": "system", "content": "s2"},
            {"role": "user", "content": "u1 " * 600},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "u2"},
            {"role": "assistant", "content": "a2"},
        ]
    )
    notices = []
    "".join(repl.chat.reply("u3", threading.Event(), notices.append))
    assert [m["content"] for m in repl.chat.messages] == ["s1", "s2", "u2", "a2", "u3", "fine thanks"]
    assert notices and "Dropped the 1 oldest turn" in notices[0]


def test_set_changes_the_chat_only_and_save_also_writes_the_file(repl):
    repl.config_file.parent.mkdir()
    repl.config_file.write_text("# mine\nmax-tokens: 100  # short\n")
    repl.run("/set temperature 0.2")
    assert repl.chat.params.temperature == 0.2
    assert repl.config_file.read_text() == "# mine\nmax-tokens: 100  # short\n"
    repl.run("/set --save max-tokens 64")
    assert repl.chat.params.max_tokens == 64
    assert repl.config_file.read_text() == "# mine\nmax-tokens: 64  # short\n"
    assert repl.said[-1] == f"[Info] max-tokens = 64, saved to {repl.config_file}"


def test_set_save_of_a_start_setting_writes_it_for_the_next_start(repl):
    repl.run("/set backend llama")
    assert "applies when hailo-repl starts" in repl.said[-1]
    repl.run("/set --save backend llama")
    assert repl.config_file.read_text() == "backend: llama\n"
    assert repl.said[-1].endswith("(from the next start)")
    repl.run("/set --save backend gpu")
    assert repl.said[-1] == "[Error] backend must be one of auto, hailo, llama, ollama, hailo-ollama, openai, not 'gpu'"
    assert repl.config_file.read_text() == "backend: llama\n"


def test_set_save_into_a_broken_file_says_so_and_leaves_it(repl):
    repl.config_file.parent.mkdir()
    repl.config_file.write_text("temperature: [\n")
    repl.run("/set --save temperature 0.5")
    assert repl.said[-1].startswith(f"[Error] {repl.config_file}:2:1: not valid YAML")
    assert repl.chat.params.temperature == 0.5  # the chat has it; the file is as it was
    assert repl.config_file.read_text() == "temperature: [\n"


def test_set_alone_lists_the_live_settings_with_their_values(repl):
    repl.run("/set vi-mode on")
    repl.run("/set")
    listing = repl.said[-1]
    assert "--save" in listing and str(repl.config_file) in listing
    assert re.search(r"^  vi-mode +true +true or false$", listing, re.M)
    assert re.search(r"^  top-p +\(the backend's\) +a number above 0.0 up to 1.0$", listing, re.M)
