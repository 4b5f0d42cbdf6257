"""Slash commands: one registry entry gives dispatch, /help text and completion."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter, WordCompleter
from prompt_toolkit.document import Document

from hailo_repl.backends import backend_for_model, model_names
from hailo_repl.backends.base import Backend, BackendError, Message
from hailo_repl.chat import CONTINUE_PROMPT, Chat, file_message
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
from hailo_repl.private_files import FileTooLarge, read_bytes_limited
from hailo_repl.render import code_blocks
from hailo_repl.sessions import ChatSummary, SessionNotFoundError, SessionStore
from hailo_repl.settings import (
    GENERATION_SETTINGS,
    LIVE_SETTINGS,
    SETTINGS,
    Setting,
    SettingError,
)
from hailo_repl.typed_numbers import whole_number

HISTORY_ROWS = 20  # chats /history lists


class CommandContext(Protocol):
    """What a command may use of the running chat."""

    chat: Chat  # the conversation, its backend, its settings and where it is saved
    console: Console  # where the command's lines go
    sessions_dir: Path  # where /save puts a chat that has no name
    settings: dict[str, Any]  # the value in effect of each setting, by name; the REPL reads the live ones here
    config_file: Path  # where /set --save writes

    def show_resumed(self, chat: ChatSummary) -> None:
        """Say which chat now goes on, and show its last turns."""
        ...


class Quit(Exception):
    """A command ended the chat."""


@dataclass
class Send:
    """A command's answer: send `text` as the next message (/continue)."""

    text: str


class Resend(Send):
    """A command's answer: send `text` again, in place of the last exchange (/retry)."""


@dataclass
class SwitchModel:
    """A command's answer: go on with the conversation on `backend`, not loaded yet (/model)."""

    backend: Backend


@dataclass
class OffTheLoop:
    """A command's answer: `work` reads files (every saved chat), so the REPL runs it in a
    thread, with the prompt up meanwhile, and says the text it returns once it is done."""

    work: Callable[[], str]


# handler(context, the text after the command's name) -> None, or what the REPL must do next
Handler = Callable[[CommandContext, str], Send | SwitchModel | OffTheLoop | None]
# A command's argument completer: fixed, or made from the running chat (the saved chats' ids)
Arguments = Completer | Callable[[CommandContext], Completer]
# The words a command's argument may be, asked for as the user presses Tab (a server's models).
Choices = Callable[[CommandContext], list[str]]


@dataclass
class Command:
    """One slash command: its name, help, handler and how to call it."""

    name: str
    help: str
    handler: Handler
    usage: str = ""
    aliases: tuple[str, ...] = ()
    arguments: Arguments | None = None
    choices: Choices | None = None


@dataclass
class CommandRegistry:
    """The slash commands, by name and alias."""

    commands: dict[str, Command] = field(default_factory=dict)

    def command(
        self,
        name: str,
        help: str,
        usage: str = "",
        aliases: tuple[str, ...] = (),
        arguments: Arguments | None = None,
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
        import difflib  # only for a mistyped command

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
        self.context = context  # for completers made from the running chat, and choices

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
        if arguments is not None and not isinstance(arguments, Completer):
            if self.context is None:
                return
            arguments = arguments(self.context)
        if arguments is not None:
            yield from arguments.get_completions(Document(argument, len(argument)), complete_event)


def words(*choices: str) -> Completer:
    return WordCompleter(list(choices), sentence=True)


def paths() -> Completer:
    return ShellPathCompleter()


def typed_path(argument: str) -> Path:
    """The path in a command's argument, typed or pasted as terminals paste a dropped file:
    'in quotes', "in quotes" or with backslash-escaped spaces (one word as a shell reads it).
    A quote opened first and left open (as Tab completes a name in quotes) closes at the end.
    Text that is not one such word (`my notes.txt`, `John's.txt`) is the path as it is."""
    text = argument.strip()
    opening = text[:1] if text[:1] in ("'", '"') else ""
    for candidate in (text, text + opening) if opening else (text,):
        try:
            words = shlex.split(candidate)
        except ValueError:  # a quote left open: an apostrophe in a name
            continue
        if len(words) == 1:
            return Path(words[0]).expanduser()
        break
    return Path(text).expanduser()


class ShellPathCompleter(Completer):
    """File names for a path as `typed_path` reads it: after an opening quote, or with
    backslash-escaped spaces, the rest of a name is inserted quoted the same way."""

    def __init__(self) -> None:
        self.names = PathCompleter(expanduser=True)

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        typed = document.text_before_cursor.lstrip()
        quote = typed[:1] if typed[:1] in ("'", '"') else ""
        escaped = not quote and "\\" in typed
        path = typed[1:] if quote else typed
        if quote == '"' or escaped:
            path = re.sub(r"\\(.)", r"\1", path)
        for found in self.names.get_completions(Document(path, len(path)), complete_event):
            rest = found.text
            if quote == "'":
                rest = rest.replace("'", "'\\''")
            elif quote == '"':
                rest = re.sub(r'(["\\$`])', r"\\\1", rest)
            elif escaped:
                rest = re.sub(r"([^\w@%+=:,./-])", r"\\\1", rest)  # what shlex.quote would quote
            yield Completion(rest, found.start_position, display=found.display)


class SavedChatIds(Completer):
    """The ids of the saved chats, each with its date and first words."""

    def __init__(self, context: CommandContext):
        self.store = context.chat.store

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        if self.store is None:
            return
        typed = document.text_before_cursor.strip()
        for chat in self.store.chats():
            if chat.id.startswith(typed):
                yield Completion(chat.id, -len(typed), display_meta=f"{chat.when()}  {chat.first_words}")


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
    if context.chat.undo(notify=context.console.say) is None:
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
            path = typed_path(name)
            save_conversation(path, messages, model, replace_any=bool(force))
        else:
            path = save_new_conversation(context.sessions_dir, messages, model)
    except ConversationFileError as error:
        context.console.error(str(error))
        return
    context.console.info(f"Saved {len(context.chat.messages)} messages to {path}")
    context.chat.keep_device_context(context.console.info)  # and the device's context, for a quick resume


@command("/load", "continue a saved conversation", usage="<file>", arguments=paths())
def load(context: CommandContext, argument: str) -> None:
    if not argument:
        context.console.say("Usage: /load <file>")
        return
    path = typed_path(argument)
    try:
        messages = load_conversation(path)
    except ConversationFileError as error:
        context.console.error(str(error))
        return
    context.chat.replace_messages(messages)
    context.console.info(f"Loaded {len(messages)} messages from {path}")


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


INSTANT_RESUME = "  (resumes instantly)"


@command("/history", "list the saved chats, or those containing TEXT", usage="[text]")
def history(context: CommandContext, argument: str) -> OffTheLoop | None:
    store = context.chat.store
    if store is None:
        context.console.say("No saved chats here.")
        return None
    # A search reads every chat (59 MB for 5,000: a second), a listing those the index has not seen.
    return OffTheLoop(lambda: history_text(store, argument))


def history_text(store: SessionStore, text: str) -> str:
    """/history's answer: the saved chats, or those containing `text`, the newest first."""
    chats = store.search(text) if text else store.chats()
    if not chats:
        return f"No saved chat contains '{text}'." if text else "No saved chats yet."
    # A chat whose device context is kept (the Hailo's, hailo_keeping.py) resumes without being read again.
    rows = [
        chat.line() + (INSTANT_RESUME if store.context_path(chat.id).exists() else "") for chat in chats[:HISTORY_ROWS]
    ]
    more = len(chats) - len(rows)
    if more > 0:
        rows.append(f"… and {more} more (hailo-repl --list-chats lists them all)")
    return "\n".join(rows)


@command("/resume", "continue a saved chat (Tab completes the ids)", usage="<id>", arguments=SavedChatIds)
def resume(context: CommandContext, argument: str) -> None:
    store = context.chat.store
    if not argument or store is None:
        context.console.say("Usage: /resume <id> (/history lists the saved chats)")
        return
    try:
        found = store.find(argument)
        context.chat.resume(found.id, notify=context.console.info)
    except (SessionNotFoundError, ConversationFileError) as error:
        context.console.error(str(error))
        return
    context.show_resumed(found)


def as_markdown(messages: list[Message]) -> str:
    """A conversation as Markdown: a heading per speaker, the text as it was written."""
    titles = {"system": "System prompt", "user": "You", "assistant": "Assistant"}
    parts = []
    for message in messages:
        note = " (interrupted)" if message.get("interrupted") else ""
        parts.append(f"## {titles[message['role']]}{note}\n\n{message['content'].strip()}\n")
    return "\n".join(parts)


def what_to_copy(chat: Chat, argument: str) -> tuple[str, str] | str:
    """(the text, what it is) for `/copy [N|all]`, or why there is nothing to copy."""
    if argument == "all":
        if not any(m["role"] == "user" for m in chat.messages):
            return "Nothing to copy yet."
        return as_markdown(chat.messages), "the conversation as Markdown"
    replies = [m["content"] for m in chat.messages if m["role"] == "assistant"]
    if not replies:
        return "No reply to copy yet."
    if not argument:
        return replies[-1], "the last reply"
    blocks = code_blocks(replies[-1])
    number = whole_number(argument)
    if number is None or not 1 <= number <= len(blocks):
        if not blocks:
            return "The last reply has no code block; /copy copies the whole reply."
        return f"Usage: /copy [N|all] — the last reply's code blocks are numbered 1 to {len(blocks)}."
    return blocks[number - 1].rstrip("\n"), f"code block {number} of the last reply"


@command("/copy", "copy the last reply, its code block N, or all the chat (works over SSH)", usage="[N|all]")
def copy(context: CommandContext, argument: str) -> None:
    found = what_to_copy(context.chat, argument.strip().lower())
    if isinstance(found, str):
        context.console.say(found)
        return
    text, what = found
    from hailo_repl import clipboard  # here: the first prompt does not need it

    how = clipboard.copy(text, context.console.write)
    context.console.info(f"Copied {what} ({len(text)} characters) to the clipboard ({how}).")


FILE_READ_LIMIT = 4_000_000  # bytes: more than any context here holds, read no further


def read_text_file(path: Path) -> str:
    """A file's text; ValueError with the one line to show when it is not a text file."""
    if not path.is_file():
        raise ValueError(f"{path} is not a file" if path.exists() else f"{path} does not exist")
    try:
        data = read_bytes_limited(path, FILE_READ_LIMIT)
    except FileTooLarge:
        raise ValueError(f"{path} is over {FILE_READ_LIMIT // 1_000_000} MB, far more than the context holds") from None
    if b"\0" in data:
        raise ValueError(f"{path} is not text (it holds binary data)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not text (not UTF-8)") from None


@command("/file", "put a file's text into your next message", usage="<path>", arguments=paths())
def attach_file(context: CommandContext, argument: str) -> None:
    if not argument:
        context.console.say("Usage: /file <path>")
        return
    path = typed_path(argument)
    chat = context.chat
    try:
        text = read_text_file(path)
        # What must fit: the system prompt, the files and room for the reply (older turns can go).
        files = "\n\n".join([*chat.attachments, file_message(path.name, text)])
        needed = chat.backend.count_tokens([chat.messages[0], {"role": "user", "content": files}])
        free = chat.backend.context_capacity - chat.params.max_tokens
    except OSError as error:
        context.console.error(f"Cannot read {path}: {error.strerror or error}")
        return
    except ValueError as error:
        context.console.error(str(error))
        return
    except BackendError:
        context.console.error("The model is not loaded yet; try /file again in a moment.")
        return
    if needed > free:
        context.console.error(
            f"{path.name} needs {needed} tokens with the system prompt, but the context leaves {free} "
            f"beside the reply's {chat.params.max_tokens}; not attached"
        )
        return
    chat.attach(path.name, text)
    share = 100 * needed // chat.backend.context_capacity
    context.console.info(
        f"{path.name}: {len(text)} characters, about {needed} tokens ({share}% of the context); "
        "it goes with your next message."
    )


@command("/continue", "go on with a reply cut off by max-tokens (or Ctrl+C)")
def continue_reply(context: CommandContext, argument: str) -> Send | None:
    if context.chat.messages[-1]["role"] != "assistant":
        context.console.say("No reply to continue yet.")
        return None
    if not context.chat.cut_off():
        context.console.say("The last reply is complete; /continue goes on with one cut off by max-tokens.")
        return None
    return Send(CONTINUE_PROMPT)
