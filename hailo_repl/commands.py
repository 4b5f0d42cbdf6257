"""Slash commands: one registry entry gives dispatch, /help text and completion. The bodies are
in commands_chat; what a command is given and may answer, in commands_base."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from hailo_repl import commands_chat as chat
from hailo_repl.commands_base import (
    CommandContext,
    Detach,
    OffTheLoop,
    Quit,
    Resend,
    Send,
    SwitchModel,
    in_engine_process,
    paths,
    words,
)
from hailo_repl.config import log_file
from hailo_repl.engine.api import EngineError
from hailo_repl.keys import keys_help_text
from hailo_repl.log import logger

__all__ = [
    "BUILTINS",
    "CommandCompleter",
    "CommandContext",
    "Detach",
    "OffTheLoop",
    "Quit",
    "Resend",
    "Send",
    "SwitchModel",
    "is_command",
    "run_command",
    "waits_for_the_engine",
    "needs_the_engine",
]

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
    # It waits for the engine's answer (a save, a resume: seconds while the engine process keeps
    # a device context, holding its GIL): the REPL runs it off its loop there (app.Repl).
    waits: bool = False
    # It is answered in the terminal, never by the engine: no need to wait for the model's load.
    here: bool = False


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
        waits: bool = False,
        here: bool = False,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            entry = Command(name, help, handler, usage, aliases, arguments, choices, waits, here)
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


def waits_for_the_engine(text: str) -> bool:
    """Whether the command `text` names waits for the engine's answer (Command.waits)."""
    entry, _, _ = BUILTINS.parse(text)
    return entry is not None and entry.waits


def needs_the_engine(text: str) -> bool:
    """Whether the command `text` names asks the engine (Command.here): one typed while the model
    still loads waits for it, as a message does."""
    entry, _, _ = BUILTINS.parse(text)
    return entry is not None and not entry.here


def run_command(context: CommandContext, text: str) -> Send | SwitchModel | OffTheLoop | None:
    """Run the command `text` names (Quit goes up); an unknown one, or one that fails, is one
    line (a failure's traceback goes to the log)."""
    entry, argument, word = BUILTINS.parse(text)
    if entry is None:
        context.console.say(BUILTINS.unknown_message(word))
        return None
    try:
        return entry.handler(context, argument)
    except Quit:
        raise
    except Exception as error:
        logger.exception("command {} failed", word)
        context.console.error(f"{word} failed: {error} (details in {log_file()})")
        return None


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
            except EngineError:
                return  # a server that does not answer has nothing to offer
        if arguments is not None and not isinstance(arguments, Completer):
            if self.context is None:
                return
            arguments = arguments(self.context)
        if arguments is not None:
            yield from arguments.get_completions(Document(argument, len(argument)), complete_event)


# ---- the built-in commands -------------------------------------------------------------

BUILTINS = CommandRegistry()
command = BUILTINS.command


@command("/help", "show the commands and keys", here=True)
def show_help(context: CommandContext, argument: str) -> None:
    listing = BUILTINS.help_text() + "\n" + chat.settings_list(context) + "\n" + keys_help_text()
    context.console.say("Commands:\n" + listing)


command("/clear", "erase the conversation and reset the model's context", waits=True)(chat.clear)
command("/context", "show how full the context window is", waits=True)(chat.show_context)


@command("/quit", "end the chat and release the device", aliases=("/exit",), here=True)
def quit_chat(context: CommandContext, argument: str) -> None:
    raise Quit


@command("/detach", "leave the chat running in the engine process (hailo-repl -c attaches again)", here=True)
def detach(context: CommandContext, argument: str) -> None:
    if not in_engine_process(context.engine):
        context.console.info("/detach needs the engine process (--daemon always); this chat runs in this terminal.")
        return
    raise Detach


command("/system", "show the system prompt, or replace it", usage="[text]", waits=True)(chat.system)
command(
    "/set",
    "change a setting for this chat; --save also writes it to the config file",
    usage=f"[{chat.SAVE}] NAME VALUE",
    arguments=chat.SetArgumentsCompleter(),
)(chat.set_parameter)
command("/retry", "generate the last reply again")(chat.retry)
command("/undo", "remove the last question and its reply", waits=True)(chat.undo)
command("/stats", "time to first token and speed of the last reply and the session")(chat.stats)
command("/save", "save the conversation as JSON", usage="[--force] [file]", arguments=paths(), waits=True)(chat.save)
command("/load", "continue a saved conversation", usage="<file>", arguments=paths(), waits=True)(chat.load)
command("/model", "list the models, or go on with another one", usage="[name]", choices=chat.offered_models)(
    chat.switch_model
)
command("/history", "list the saved chats, or those containing TEXT", usage="[text]", here=True)(chat.history)
command(
    "/resume", "continue a saved chat (Tab completes the ids)", usage="<id>", arguments=chat.SavedChatIds, waits=True
)(chat.resume)
command("/copy", "copy the last reply, its code block N, or all the chat (works over SSH)", usage="[N|all]")(chat.copy)
command("/file", "put a file's text into your next message", usage="<path>", arguments=paths())(chat.attach_file)
command("/continue", "go on with a reply cut off by max-tokens (or Ctrl+C)")(chat.continue_reply)
