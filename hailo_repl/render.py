"""Writing a streamed reply: text passes through at once; fenced code blocks are
held until their closing fence and then printed highlighted by pygments."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from enum import Enum

from pygments import highlight
from pygments.formatters import TerminalFormatter
from pygments.lexers import TextLexer, get_lexer_by_name, guess_lexer
from pygments.util import ClassNotFound

from hailo_repl.console import ERROR, Console, labelled

FENCE = "```"
ASSISTANT_PREFIX = "Assistant: "
INTERRUPTED_NOTE = " [interrupted]"


def color_wanted(choice: str, environ: Mapping[str, str]) -> bool:
    """The color setting: always, never, or auto (colour unless NO_COLOR is set, https://no-color.org)."""
    if choice == "auto":
        return not environ.get("NO_COLOR")
    return choice == "always"


def highlight_code(code: str, language: str) -> str:
    try:
        lexer = get_lexer_by_name(language) if language else guess_lexer(code)
    except ClassNotFound:
        lexer = TextLexer()
    return highlight(code, lexer, TerminalFormatter())


class ReplyRenderer:
    def __init__(self, color: bool = True):
        self.color = color
        self._line = ""  # the current line, while it may still be a fence line
        self._holding = True  # at a line start: hold text until it cannot be a fence
        self._language: str | None = None  # set inside a code block
        self._code: list[str] = []

    def feed(self, text: str) -> str:
        if not self.color:
            return text
        out: list[str] = []
        for char in text:
            out.append(self._char(char))
        return "".join(out)

    def _char(self, char: str) -> str:
        if not self._holding:  # plain text in the middle of a line
            if char == "\n":
                self._holding = True
            return char
        self._line += char
        line = self._line
        if char == "\n":
            self._line = ""
            return self._end_of_line(line)
        if self._language is None and not (FENCE.startswith(line.lstrip()) or line.lstrip().startswith(FENCE)):
            self._line = ""
            self._holding = False
            return line
        return ""

    def _end_of_line(self, line: str) -> str:
        stripped = line.strip()
        if self._language is None:
            if stripped.startswith(FENCE):
                self._language = stripped[len(FENCE) :].strip()
                self._code = []
            return line
        if stripped == FENCE:
            code, language = "".join(self._code), self._language
            self._language, self._code = None, []
            return highlight_code(code, language) + line
        self._code.append(line)
        return ""

    def flush(self) -> str:
        """End of reply: whatever is held comes out as it is (an unclosed block unhighlighted)."""
        rest = "".join(self._code) + self._line
        self._line, self._code, self._language, self._holding = "", [], None, True
        return rest


class ReplyEvent(Enum):
    """What the generating thread tells the loop, with a value where it has one."""

    TEXT = "text"  # the next piece of the reply
    NOTICE = "notice"  # a line about the reply (turns dropped to make room)
    DONE = "done"  # the reply is complete
    ERROR = "error"  # the reply failed; the value says why
    INTERRUPTED = "interrupted"  # Ctrl+C stopped it


async def show_reply(
    events: asyncio.Queue[tuple[ReplyEvent, str]], renderer: ReplyRenderer, console: Console
) -> ReplyEvent:
    """Write the reply as its pieces arrive; returns how it ended (DONE, INTERRUPTED or ERROR)."""
    started = False
    while True:
        kind, value = await events.get()
        if kind is ReplyEvent.NOTICE:
            console.write(("\n" if started else "") + value + "\n")
        elif kind is ReplyEvent.TEXT:
            if not started:
                console.write(ASSISTANT_PREFIX)
                started = True
            console.write(renderer.feed(value))
        else:
            tail = renderer.flush()
            if kind is ReplyEvent.INTERRUPTED:
                tail += INTERRUPTED_NOTE
            elif kind is ReplyEvent.ERROR:
                tail += ("\n" if started else "") + labelled(ERROR, value)
            console.write(tail)
            return kind
