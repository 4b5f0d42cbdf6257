"""Slash commands: one registry entry gives dispatch, /help text and completion."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter, WordCompleter
from prompt_toolkit.document import Document

from hailo_repl.backends import backend_for_model, model_names
from hailo_repl.backends.base import Backend, BackendError
from hailo_repl.chat import Chat
from hailo_repl.config_file import ConfigFileError, save_setting
from hailo_repl.console import Console
from hailo_repl.conversation import (
    ConversationFileError,
    load_conversation,
    save_conversation,
    save_new_conversation,
)
from hailo_repl.keys import keys_help_text
from hailo_repl.models import ModelNotFoundError
from hailo_repl.settings import GENERATION_SETTINGS, LIVE_SETTINGS, SETTINGS, Setting, SettingError


class CommandContext(Protocol):
    """What a command may use of the running chat."""

    chat: Chat  # the conversation, its backend and its settings
    console: Console  # where the command's lines go
    sessions_dir: Path  # where /save puts a chat that has no name
    settings: dict[str, Any]  # the value in effect of each setting, by name; the REPL reads the live ones here
    config_file: Path  # where /set --save writes


class Quit(Exception):
    """A command ended the chat."""


@dataclass
class Resend:
    """A command's answer: send `text` again, in place of the last exchange (/retry)."""

    text: str


@dataclass
class SwitchModel:
    """A command's answer: go on with the conversation on `backend`, not loaded yet (/model)."""

    backend: Backend


# handler(context, the text after the command's name) -> None, or what the REPL must do next
Handler = Callable[[CommandContext, str], Resend | SwitchModel | None]
# The words a command's argument may be, asked for as the user presses Tab.
Choices = Callable[[CommandContext], list[str]]


@dataclass
class Command:
    name: str
    help: str
    handler: Handler
    usage: str = ""
    aliases: tuple[str, ...] = ()
    arguments: Completer | None = None
    choices: Choices | None = None


@dataclass
class CommandRegistry:
    commands: dict[str, Command] = field(default_factory=dict)

    def command(
        self,
        name: str,
        help: str,
        usage: str = "",
        aliases: tuple[str, ...] = (),
        arguments: Completer | None = None,
        choices: Choices | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            entry = Command(name, help, handler, usage, aliases, arguments, choices)
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
    """Completes command names (with their help) and then each command's arguments.

    A command's `choices` may ask a server: give the REPL this completer inside a
    ThreadedCompleter, so that Tab never freezes the screen."""

    def __init__(self, registry: CommandRegistry, context: CommandContext | None = None):
        self.registry = registry
        self.context = context

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
        command = self.registry.commands.get(word.lower())
        if command is None:
            return
        arguments = command.arguments
        if command.choices is not None and self.context is not None:
            try:
                arguments = words(*command.choices(self.context))
            except (BackendError, ModelNotFoundError):
                return  # a server that does not answer has nothing to offer
        if arguments is not None:
            yield from arguments.get_completions(Document(argument, len(argument)), complete_event)


def words(*choices: str) -> Completer:
    return WordCompleter(list(choices), sentence=True)


def paths() -> Completer:
    return PathCompleter(expanduser=True)


# ---- the built-in commands -------------------------------------------------------------

BUILTINS = CommandRegistry()
command = BUILTINS.command


@command("/help", "show the commands and keys")
def show_help(context: CommandContext, argument: str) -> None:
    context.console.say("Commands:\n" + BUILTINS.help_text() + "\n" + settings_list(context) + "\n" + keys_help_text())


@command("/clear", "erase the conversation and reset the model's context")
def clear(context: CommandContext, argument: str) -> None:
    context.chat.clear()
    context.console.info("Conversation cleared.")


@command("/context", "show how full the context window is")
def show_context(context: CommandContext, argument: str) -> None:
    context.console.say(context.chat.usage().bar())


@command("/quit", "end the chat and release the device", aliases=("/exit",))
def quit_chat(context: CommandContext, argument: str) -> None:
    raise Quit


@command("/system", "show the system prompt, or replace it", usage="[text]")
def system(context: CommandContext, argument: str) -> None:
    if not argument:
        context.console.say(f"System prompt: {context.chat.system_prompt}")
        return
    context.chat.set_system_prompt(argument)
    context.console.info("System prompt replaced; it applies from the next message.")


SAVE = "--save"
GENERATION_NAMES = {setting.name for setting in GENERATION_SETTINGS}


class SetArgumentsCompleter(Completer):
    """/set: the live settings' names and --save; after --save, every setting's name."""

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        saving = text.startswith(SAVE + " ")
        names = list(SETTINGS) if saving else [*LIVE_SETTINGS, SAVE]
        rest = text[len(SAVE) + 1 :] if saving else text
        yield from words(*names).get_completions(Document(rest, len(rest)), complete_event)


def settings_list(context: CommandContext) -> str:
    """The settings /set changes: name, value now, what is allowed (for /set and /help)."""
    rows = [
        f"  {name:<12} {setting.shown(context.settings[name]):<10} {setting.allowed}"
        for name, setting in LIVE_SETTINGS.items()
    ]
    return f"Settings (/set [{SAVE}] NAME VALUE; {SAVE} also writes {context.config_file}):\n" + "\n".join(rows)


def apply_setting(context: CommandContext, setting: Setting, value: Any) -> None:
    context.settings[setting.name] = value
    if setting.name in GENERATION_NAMES:
        setattr(context.chat.params, setting.attribute, value)


@command(
    "/set",
    "change a setting for this chat; --save also writes it to the config file",
    usage=f"[{SAVE}] NAME VALUE",
    arguments=SetArgumentsCompleter(),
)
def set_parameter(context: CommandContext, argument: str) -> None:
    save = argument == SAVE or argument.startswith(SAVE + " ")
    name, _, text = argument[len(SAVE) :].strip().partition(" ") if save else argument.partition(" ")
    setting = (SETTINGS if save else LIVE_SETTINGS).get(name)
    if setting is None or not text.strip():
        if name in SETTINGS and not save:
            context.console.say(f"{name} applies when hailo-repl starts: /set {SAVE} {name} VALUE keeps it for then.")
        else:
            context.console.say(settings_list(context))
        return
    try:
        value = setting.parse(text.strip())
    except SettingError as error:
        context.console.error(str(error))
        return
    room = context.chat.reply_room() if setting.name == "max-tokens" else None
    if room is not None and value > room - 1:  # a reply that can never fit makes every message fail
        context.console.error(
            f"max-tokens must leave room for your message: at most {room - 1} with this model's context of "
            f"{context.chat.backend.context_capacity} tokens, not {value}"
        )
        return
    if setting.live:
        apply_setting(context, setting, value)
    if not save:
        context.console.info(f"{name} = {setting.shown(value)}")
        return
    try:
        save_setting(context.config_file, setting, value)
    except ConfigFileError as error:
        context.console.error(str(error))
        return
    when = "" if setting.live else " (from the next start)"
    context.console.info(f"{name} = {setting.shown(value)}, saved to {context.config_file}{when}")


@command("/retry", "generate the last reply again")
def retry(context: CommandContext, argument: str) -> Resend | None:
    question = context.chat.last_question()
    if question is None:
        context.console.say("Nothing to retry yet.")
        return None
    return Resend(question)


@command("/undo", "remove the last question and its reply")
def undo(context: CommandContext, argument: str) -> None:
    if context.chat.undo() is None:
        context.console.say("Nothing to undo.")
    else:
        context.console.info("Removed the last exchange.")


@command("/stats", "time to first token and speed of the last reply and the session")
def stats(context: CommandContext, argument: str) -> None:
    context.console.say(context.chat.stats_text())


@command("/save", "save the conversation as JSON", usage="[--force] [file]", arguments=paths())
def save(context: CommandContext, argument: str) -> None:
    force, _, name = argument.partition(" ") if argument.startswith("--force") else ("", "", argument)
    messages, model = context.chat.messages, context.chat.backend.model_name
    try:
        if name.strip():
            path = Path(name.strip()).expanduser()
            save_conversation(path, messages, model, replace_any=bool(force))
        else:
            path = save_new_conversation(context.sessions_dir, messages, model)
    except ConversationFileError as error:
        context.console.error(str(error))
        return
    context.console.info(f"Saved {len(context.chat.messages)} messages to {path}")


@command("/load", "continue a saved conversation", usage="<file>", arguments=paths())
def load(context: CommandContext, argument: str) -> None:
    if not argument:
        context.console.say("Usage: /load <file>")
        return
    try:
        messages = load_conversation(Path(argument).expanduser())
    except ConversationFileError as error:
        context.console.error(str(error))
        return
    context.chat.replace_messages(messages)
    context.console.info(f"Loaded {len(messages)} messages from {argument}")


def offered_models(context: CommandContext) -> list[str]:
    return model_names(context.chat.backend)


@command("/model", "list the models, or go on with another one", usage="[name]", choices=offered_models)
def switch_model(context: CommandContext, argument: str) -> SwitchModel | None:
    backend = context.chat.backend
    try:
        if not argument:
            names = model_names(backend)
            lines = [f"{'*' if name == backend.model_name else ' '} {name}" for name in names]
            context.console.say("Models (* the one in use; /model NAME switches):\n" + "\n".join(lines))
            return None
        if argument == backend.model_name:
            context.console.info(f"Already chatting with {argument}.")
            return None
        return SwitchModel(backend_for_model(backend, argument))
    except (BackendError, ModelNotFoundError) as error:
        context.console.error(str(error))
        return None
