"""Slash commands: one registry entry gives dispatch, /help text and completion."""

from __future__ import annotations

import datetime
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter, WordCompleter
from prompt_toolkit.document import Document

from hailo_repl.conversation import ConversationFileError, load_conversation, save_conversation


class Quit(Exception):
    """A command ended the chat."""


@dataclass
class Resend:
    """A command's answer: send `text` again, in place of the last exchange (/retry)."""

    text: str


@dataclass
class Command:
    name: str
    help: str
    handler: Callable  # handler(repl, argument: str) -> None | Resend
    usage: str = ""
    aliases: tuple[str, ...] = ()
    arguments: Completer | None = None


@dataclass
class CommandRegistry:
    commands: dict[str, Command] = field(default_factory=dict)

    def command(self, name: str, help: str, usage: str = "", aliases: tuple[str, ...] = (), arguments: Completer | None = None):
        def register(handler: Callable) -> Callable:
            entry = Command(name, help, handler, usage, aliases, arguments)
            for key in (name, *aliases):
                self.commands[key] = entry
            return handler

        return register

    def unique(self) -> list[Command]:
        seen: dict[str, Command] = {}
        for entry in self.commands.values():
            seen.setdefault(entry.name, entry)
        return list(seen.values())

    def parse(self, text: str) -> tuple[Command | None, str, str]:
        """'/set temperature 0.2' → (the /set command, 'temperature 0.2', '/set')."""
        word, _, argument = text.strip().partition(" ")
        return self.commands.get(word.lower()), argument.strip(), word

    def suggestion(self, word: str) -> str | None:
        close = difflib.get_close_matches(word.lower(), list(self.commands), n=1, cutoff=0.5)
        return close[0] if close else None

    def unknown_message(self, word: str) -> str:
        guess = self.suggestion(word)
        hint = f" — did you mean {guess}?" if guess else " — /help lists the commands"
        return f"Unknown command {word}{hint}"

    def help_text(self) -> str:
        rows = []
        for entry in self.unique():
            names = ", ".join([f"{entry.name} {entry.usage}".strip(), *entry.aliases])
            rows.append(f"  {names:<34} {entry.help}")
        return "\n".join(rows)


def is_command(text: str) -> bool:
    return text.lstrip().startswith("/")


class CommandCompleter(Completer):
    """Completes command names (with their help) and then each command's arguments."""

    def __init__(self, registry: CommandRegistry):
        self.registry = registry

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        if not text.startswith("/"):
            return
        word, space, argument = text.partition(" ")
        if not space:
            for entry in self.registry.unique():
                for name in (entry.name, *entry.aliases):
                    if name.startswith(word.lower()):
                        yield Completion(name, start_position=-len(word), display_meta=entry.help)
            return
        entry = self.registry.commands.get(word.lower())
        if entry is None or entry.arguments is None:
            return
        yield from entry.arguments.get_completions(Document(argument, len(argument)), complete_event)


def words(*choices: str) -> Completer:
    return WordCompleter(list(choices), sentence=True)


def paths() -> Completer:
    return PathCompleter(expanduser=True)


# ---- the built-in commands -------------------------------------------------------------
# A handler gets the REPL (its `chat`, `say(text)` and `sessions_dir`) and the text after
# the command name; it returns None, or a Resend for the REPL to send.

BUILTINS = CommandRegistry()
command = BUILTINS.command

SETTINGS = {
    # name: (parse, check, range text, GenerationParams attribute)
    "temperature": (float, lambda v: 0.0 <= v <= 2.0, "a number from 0.0 to 2.0", "temperature"),
    "max-tokens": (int, lambda v: v > 0, "a whole number above 0", "max_tokens"),
    "top-p": (float, lambda v: 0.0 < v <= 1.0, "a number above 0.0 up to 1.0", "top_p"),
}


@command("/help", "show the commands and keys")
def show_help(repl, argument):
    repl.say("Commands:\n" + BUILTINS.help_text() + "\n" + KEYS_HELP)


KEYS_HELP = (
    "Keys:\n"
    "  Enter                              send the message\n"
    "  Alt+Enter, Ctrl+J                  new line in the message\n"
    "  Up, Down                           earlier messages (kept across runs)\n"
    "  Tab                                complete a command or its argument\n"
    "  Ctrl+C                             stop the reply / clear the line / quit on an empty line\n"
    "  Ctrl+D                             quit"
)


@command("/clear", "erase the conversation and reset the model's context")
def clear(repl, argument):
    repl.chat.clear()
    repl.say("[Info] Conversation cleared.")


@command("/context", "show how full the context window is")
def context(repl, argument):
    repl.say(repl.chat.usage().bar())


@command("/quit", "end the chat and release the device", aliases=("/exit",))
def quit_chat(repl, argument):
    raise Quit


@command("/system", "show the system prompt, or replace it", usage="[text]")
def system(repl, argument):
    if not argument:
        repl.say(f"System prompt: {repl.chat.system_prompt}")
        return
    repl.chat.set_system_prompt(argument)
    repl.say("[Info] System prompt replaced; it applies from the next message.")


@command("/set", "change a generation setting", usage="temperature|max-tokens|top-p <value>", arguments=words(*SETTINGS))
def set_parameter(repl, argument):
    name, _, value = argument.partition(" ")
    if name not in SETTINGS:
        repl.say(f"Usage: /set {'|'.join(SETTINGS)} <value>")
        return
    parse, check, valid, attribute = SETTINGS[name]
    try:
        number = parse(value.strip())
        if not check(number):
            raise ValueError
    except ValueError:
        repl.say(f"[Error] {name} must be {valid}, not '{value.strip()}'")
        return
    setattr(repl.chat.params, attribute, number)
    repl.say(f"[Info] {name} = {number}")


@command("/retry", "generate the last reply again")
def retry(repl, argument):
    question = repl.chat.last_question()
    if question is None:
        repl.say("Nothing to retry yet.")
        return None
    return Resend(question)


@command("/undo", "remove the last question and its reply")
def undo(repl, argument):
    if repl.chat.undo() is None:
        repl.say("Nothing to undo.")
    else:
        repl.say("[Info] Removed the last exchange.")


@command("/stats", "time to first token and speed of the last reply and the session")
def stats(repl, argument):
    repl.say(repl.chat.stats_text())


@command("/save", "save the conversation as JSON", usage="[file]", arguments=paths())
def save(repl, argument):
    if argument:
        path = Path(argument).expanduser()
    else:
        path = repl.sessions_dir / f"chat-{datetime.datetime.now():%Y%m%d-%H%M%S}.json"
    try:
        save_conversation(path, repl.chat.messages, repl.chat.backend.model_name)
    except ConversationFileError as error:
        repl.say(f"[Error] {error}")
        return
    repl.say(f"[Info] Saved {len(repl.chat.messages)} messages to {path}")


@command("/load", "continue a saved conversation", usage="<file>", arguments=paths())
def load(repl, argument):
    if not argument:
        repl.say("Usage: /load <file>")
        return
    try:
        messages = load_conversation(Path(argument).expanduser())
    except ConversationFileError as error:
        repl.say(f"[Error] {error}")
        return
    repl.chat.replace_messages(messages)
    repl.say(f"[Info] Loaded {len(messages)} messages from {argument}")
