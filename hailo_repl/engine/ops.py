"""The engine's halves of the commands that need more than one call on the chat: what a
setting may be, writing the chat to a file, a file put into the next message, how a turn ended."""

from __future__ import annotations

from pathlib import Path

from hailo_repl.backends.base import BackendError
from hailo_repl.chat import Chat, file_message
from hailo_repl.conversation import ConversationFileError, save_conversation, save_new_conversation
from hailo_repl.engine.api import Attached, EngineError, ErrorCode, TurnEnd
from hailo_repl.private_files import FileTooLarge, read_bytes_limited
from hailo_repl.settings import GENERATION_SETTINGS

GENERATION = {setting.name: setting for setting in GENERATION_SETTINGS}
FILE_READ_LIMIT = 4_000_000  # bytes: more than any context here holds, read no further


def set_generation(chat: Chat, name: str, value: object) -> None:
    """A generation setting (temperature, max-tokens, top-p), checked against the model."""
    setting = GENERATION.get(name)
    if setting is None:
        raise EngineError(ErrorCode.BAD_VALUE, f"{name} is not a setting of the model's")
    room = chat.reply_room() if name == "max-tokens" else None
    if (
        room is not None and isinstance(value, int) and value > room - 1
    ):  # a reply that can never fit fails every message
        raise EngineError(
            ErrorCode.BAD_VALUE,
            f"max-tokens must leave room for your message: at most {room - 1} with this model's context of "
            f"{chat.backend.context_capacity} tokens, not {value}",
        )
    setattr(chat.params, setting.attribute, value)


def save(chat: Chat, path: Path | None, directory: Path, force: bool) -> tuple[Path, int]:
    """Write the conversation to `path`, or to a new file in `directory`: where, and how many messages."""
    messages, model = chat.messages, chat.backend.model_name
    try:
        if path is not None:
            save_conversation(path, messages, model, replace_any=force)
        else:
            path = save_new_conversation(directory, messages, model)
    except ConversationFileError as error:
        raise EngineError(ErrorCode.BAD_FILE, str(error)) from None
    return path, len(messages)


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


def attach_file(chat: Chat, path: Path) -> Attached:
    """/file: put the file's text into the next message, if it fits beside the system prompt
    and the reply (older turns can go)."""
    try:
        text = read_text_file(path)
        files = "\n\n".join([*chat.attachments, file_message(path.name, text)])
        needed = chat.backend.count_tokens([chat.messages[0], {"role": "user", "content": files}])
        free = chat.backend.context_capacity - chat.params.max_tokens
    except OSError as error:
        raise EngineError(ErrorCode.BAD_FILE, f"Cannot read {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise EngineError(ErrorCode.BAD_FILE, str(error)) from None
    except BackendError:
        raise EngineError(ErrorCode.NOT_LOADED, "The model is not loaded yet; try /file again in a moment.") from None
    if needed > free:
        raise EngineError(
            ErrorCode.OVERFLOW,
            f"{path.name} needs {needed} tokens with the system prompt, but the context leaves {free} "
            f"beside the reply's {chat.params.max_tokens}; not attached",
        )
    chat.attach(path.name, text)
    return Attached(path.name, len(text), needed, 100 * needed // chat.backend.context_capacity)


def turn_end(chat: Chat, interrupted: bool) -> TurnEnd:
    """How a turn that raised nothing ended, from what the chat kept."""
    stats = chat.last_stats
    if stats is None or stats.generated_tokens == 0:
        return TurnEnd.EMPTY
    if interrupted:
        return TurnEnd.INTERRUPTED
    return TurnEnd.TRUNCATED if chat.messages[-1].get("truncated") else TurnEnd.DONE
