"""What a slash command is given and may answer, and how it reads a typed path."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter, WordCompleter
from prompt_toolkit.document import Document

from hailo_repl.console import Console
from hailo_repl.engine.api import TurnMode

if TYPE_CHECKING:
    from hailo_repl.engine.api import Engine
    from hailo_repl.sessions import ChatSummary, SessionStore


class CommandContext(Protocol):
    """What a command may use of the running chat."""

    engine: Engine  # the conversation and its model: every command's way to them
    console: Console  # where the command's lines go
    sessions_dir: Path  # where /save puts a chat that has no name
    settings: dict[str, Any]  # the value in effect of each setting, by name; the REPL reads the live ones here
    config_file: Path  # where /set --save writes
    store: SessionStore | None  # the saved chats (/history, /resume); None with --no-history… or none here

    @property
    def model(self) -> str:
        """The model in use, as the engine last said (its events)."""
        ...

    def show_resumed(self, chat: ChatSummary) -> None:
        """Say which chat now goes on, and show its last turns."""
        ...


class Quit(Exception):
    """A command ended the chat."""


class Detach(Quit):
    """/detach: this terminal leaves; the chat and its reply go on in the engine process."""


def in_engine_process(engine: object) -> bool:
    """Whether the chat runs in the engine process (it can be left running: /detach), not in this one."""
    return callable(getattr(engine, "detach", None))


# A command's answers are plain classes and named tuples, not dataclasses: the three took ~0.8 ms
# of every start.
class Send:
    """A command's answer: send `text` as the next message (/continue)."""

    mode = TurnMode.CONTINUE

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Send) and type(other) is type(self) and other.text == self.text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.text!r})"


class Resend(Send):
    """A command's answer: send `text` again, in place of the last exchange (/retry)."""

    mode = TurnMode.RETRY


class SwitchModel(NamedTuple):
    """A command's answer: go on with the conversation on model `name` (as typed; `model` as it
    is known), checked, not loaded yet (/model)."""

    name: str
    model: str


class OffTheLoop(NamedTuple):
    """A command's answer: `work` reads files (every saved chat), so the REPL runs it in a
    thread, with the prompt up meanwhile, and says the text it returns once it is done."""

    work: Callable[[], str]


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
