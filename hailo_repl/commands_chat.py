"""The built-in commands' bodies: each asks the engine and prints its answer (commands.py
registers them, with their help and completion)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from hailo_repl.commands_base import CommandContext, OffTheLoop, Resend, Send, SwitchModel, typed_path, words
from hailo_repl.config_file import ConfigFileError, save_setting
from hailo_repl.engine.api import EngineError, ErrorCode
from hailo_repl.render import code_blocks
from hailo_repl.settings import GENERATION_SETTINGS, LIVE_SETTINGS, SETTINGS, Setting, SettingError
from hailo_repl.typed_numbers import whole_number

# The chat's and the saved chats' modules are imported where used: a terminal on the engine
# process needs neither before its first frame.
if TYPE_CHECKING:
    from hailo_repl.backends.base import Message
    from hailo_repl.sessions import SessionStore

HISTORY_ROWS = 20  # chats /history lists
INSTANT_RESUME = "  (resumes instantly)"
SAVE = "--save"
GENERATION_NAMES = {setting.name for setting in GENERATION_SETTINGS}


def clear(context: CommandContext, argument: str) -> None:
    context.engine.clear()
    context.console.info("Conversation cleared.")


def show_context(context: CommandContext, argument: str) -> None:
    context.console.say(context.engine.usage().bar())


def system(context: CommandContext, argument: str) -> None:
    if not argument:
        context.console.say(f"System prompt: {context.engine.system()}")
        return
    context.engine.system(argument)
    context.console.info("System prompt replaced; it applies from the next message.")


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


def apply_setting(context: CommandContext, setting: Setting, value: Any) -> bool:
    """The setting in effect from now (the model's ones in the engine); False if the engine refused it."""
    if setting.name in GENERATION_NAMES:
        try:
            context.engine.set(setting.name, value)
        except EngineError as error:
            context.console.error(error.line)
            return False
    if setting.live:
        context.settings[setting.name] = value
    return True


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
    if not apply_setting(context, setting, value):
        return
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


def retry(context: CommandContext, argument: str) -> Resend | None:
    question = context.engine.last_question()
    if question is None:
        context.console.say("Nothing to retry yet.")
        return None
    return Resend(question)


def undo(context: CommandContext, argument: str) -> None:
    text, lines = context.engine.undo()
    for line in lines:
        context.console.say(line)
    if text is None:
        context.console.say("Nothing to undo.")
    else:
        context.console.info("Removed the last exchange.")


def stats(context: CommandContext, argument: str) -> None:
    context.console.say(context.engine.stats_text())


def save(context: CommandContext, argument: str) -> None:
    force, _, name = argument.partition(" ") if argument.startswith("--force") else ("", "", argument)
    try:
        path, count = context.engine.save(typed_path(name) if name.strip() else None, context.sessions_dir, bool(force))
    except EngineError as error:
        context.console.error(error.line)
        return
    context.console.info(f"Saved {count} messages to {path}")
    try:
        context.engine.keep_context()  # and the device's context beside the chat, for a quick resume
    except EngineError as busy:  # a message sent meanwhile runs (a Ctrl+C stopped the wait): not now
        if busy.code is not ErrorCode.BUSY:
            raise


def load(context: CommandContext, argument: str) -> None:
    if not argument:
        context.console.say("Usage: /load <file>")
        return
    path = typed_path(argument)
    try:
        count = context.engine.load_file(path)
    except EngineError as error:
        context.console.error(error.line)
        return
    context.console.info(f"Loaded {count} messages from {path}")


def offered_models(context: CommandContext) -> list[str]:
    return context.engine.list_models()


def switch_model(context: CommandContext, argument: str) -> SwitchModel | None:
    engine = context.engine
    current = context.model
    try:
        if not argument:
            lines = [f"{'*' if name == current else ' '} {name}" for name in engine.list_models()]
            context.console.say("Models (* the one in use; /model NAME switches):\n" + "\n".join(lines))
            return None
        if argument == current:
            context.console.info(f"Already chatting with {argument}.")
            return None
        model = engine.prepare_switch(argument)
    except EngineError as error:
        context.console.error(error.line)
        return None
    return SwitchModel(argument, model)


class SavedChatIds(Completer):
    """The ids of the saved chats, each with its date and first words."""

    def __init__(self, context: CommandContext):
        self.store = context.store

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        if self.store is None:
            return
        typed = document.text_before_cursor.strip()
        for chat in self.store.chats():
            if chat.id.startswith(typed):
                yield Completion(chat.id, -len(typed), display_meta=f"{chat.when()}  {chat.first_words}")


def history(context: CommandContext, argument: str) -> OffTheLoop | None:
    store = context.store
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


def resume(context: CommandContext, argument: str) -> None:
    from hailo_repl.sessions import SessionNotFoundError

    store = context.store
    if not argument or store is None:
        context.console.say("Usage: /resume <id> (/history lists the saved chats)")
        return
    try:
        found = store.find(argument)
        context.engine.resume(found.id)
    except (SessionNotFoundError, EngineError) as error:
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


def what_to_copy(messages: list[Message], argument: str) -> tuple[str, str] | str:
    """(the text, what it is) for `/copy [N|all]`, or why there is nothing to copy."""
    if argument == "all":
        if not any(m["role"] == "user" for m in messages):
            return "Nothing to copy yet."
        return as_markdown(messages), "the conversation as Markdown"
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
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


def copy(context: CommandContext, argument: str) -> None:
    found = what_to_copy(context.engine.messages(), argument.strip().lower())
    if isinstance(found, str):
        context.console.say(found)
        return
    text, what = found
    from hailo_repl import clipboard  # here: the first prompt does not need it

    how = clipboard.copy(text, context.console.write)
    context.console.info(f"Copied {what} ({len(text)} characters) to the clipboard ({how}).")


def attach_file(context: CommandContext, argument: str) -> None:
    if not argument:
        context.console.say("Usage: /file <path>")
        return
    try:
        attached = context.engine.attach_file(typed_path(argument))
    except EngineError as error:
        context.console.error(error.line)
        return
    context.console.info(
        f"{attached.name}: {attached.characters} characters, about {attached.tokens} tokens ({attached.share}% "
        "of the context); it goes with your next message."
    )


def continue_reply(context: CommandContext, argument: str) -> Send | None:
    from hailo_repl.backends.base import cut_off
    from hailo_repl.chat import CONTINUE_PROMPT

    last = context.engine.messages()[-1]
    if last["role"] != "assistant":
        context.console.say("No reply to continue yet.")
        return None
    if not cut_off(last):
        context.console.say("The last reply is complete; /continue goes on with one cut off by max-tokens.")
        return None
    return Send(CONTINUE_PROMPT)
