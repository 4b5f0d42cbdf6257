"""Writing a streamed reply: text passes through at once; fenced code blocks are
held until their closing fence and then printed highlighted by pygments."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from hailo_repl.console import ERROR, Console, labelled
from hailo_repl.context import RECENT_TURNS, split_turns
from hailo_repl.engine.api import TurnCompleted, TurnEnd, TurnEvent, TurnNotice, TurnText
from hailo_repl.wrap import WordWrap

if TYPE_CHECKING:  # (the backends package is not on the path to the first prompt)
    from hailo_repl.backends.base import Message

FENCE = "```"
USER_PREFIX = "You: "
ASSISTANT_PREFIX = "Assistant: "
INTERRUPTED_MARK = "[interrupted]"
DIM = "\x1b[2m"
RESET = "\x1b[0m"


def color_wanted(choice: str, environ: Mapping[str, str]) -> bool:
    """The color setting: always, never, or auto (colour unless NO_COLOR is set, https://no-color.org)."""
    if choice == "auto":
        return not environ.get("NO_COLOR")
    return choice == "always"


def highlight_code(code: str, language: str) -> str:
    # pygments is imported at the first code block, not before the first prompt.
    from pygments import highlight
    from pygments.formatters import TerminalFormatter
    from pygments.lexers import TextLexer, get_lexer_by_name, guess_lexer
    from pygments.util import ClassNotFound

    try:
        lexer = get_lexer_by_name(language) if language else guess_lexer(code)
    except ClassNotFound:
        lexer = TextLexer()
    return highlight(code, lexer, TerminalFormatter())


class ReplyRenderer:
    """Turns a streamed reply into what the terminal shows: prose at once (word-wrapped
    with `wrap`), fenced code blocks held until their closing fence, then printed whole,
    highlighted when `color`, never re-wrapped."""

    def __init__(self, color: bool = True, wrap: WordWrap | None = None):
        self.color = color
        self.wrap = wrap
        self._line = ""  # the current line, while it may still be a fence line
        self._holding = True  # at a line start: hold text until it cannot be a fence
        self._language: str | None = None  # set inside a code block
        self._code: list[str] = []
        self.blocks: list[str] = []  # the code blocks so far, numbered from 1 on their fence lines
        self._end = ""  # the last character given out so far

    def feed(self, text: str) -> str:
        out: list[str] = []
        prose: list[str] = []  # runs of prose go through the wrap together
        for char in text:
            shown, is_prose = self._char(char)
            if is_prose:
                prose.append(shown)
            elif shown:
                out.append(self._wrapped("".join(prose)) + shown)
                prose = []
        out.append(self._wrapped("".join(prose)))
        return self._given("".join(out))

    def _given(self, text: str) -> str:
        self._end = text[-1:] or self._end
        return text

    def _wrapped(self, prose: str) -> str:
        return self.wrap.feed(prose) if self.wrap and prose else prose

    def _char(self, char: str) -> tuple[str, bool]:
        """What `char` lets show now, and whether that is prose (to wrap) or a fence or code."""
        if not self._holding:  # plain text in the middle of a line
            if char == "\n":
                self._holding = True
            return char, True
        self._line += char
        line = self._line
        if char == "\n":
            self._line = ""
            return self._end_of_line(line)
        if self._language is None and not (FENCE.startswith(line.lstrip()) or line.lstrip().startswith(FENCE)):
            self._line = ""
            self._holding = False
            return line, True
        return "", False

    def _end_of_line(self, line: str) -> tuple[str, bool]:
        stripped = line.strip()
        if self._language is None:
            if stripped.startswith(FENCE):
                self._language = stripped[len(FENCE) :].strip()
                self._code = []
                number = f"[{len(self.blocks) + 1}]"  # what /copy N takes
                label = f"{DIM}{number}{RESET}" if self.color else number
                return f"{line.rstrip()} {label}\n", False
            return line, True
        if stripped == FENCE:
            code, language = "".join(self._code), self._language
            self.blocks.append(code)
            self._language, self._code = None, []
            return (highlight_code(code, language) if self.color else code) + line, False
        self._code.append(line)
        return "", False

    def break_line(self) -> str:
        """A line break in the middle of the reply, for a line about it: the word the word-wrap
        holds, then the break (a code block still held stays held)."""
        return self._given(self.wrap.feed("\n") if self.wrap else "\n")

    def flush(self) -> str:
        """End of reply: whatever is held comes out as it is (an unclosed block unhighlighted)."""
        in_code = self._language is not None
        held_code = "".join(self._code) + (self._line if in_code else "")
        if in_code:
            self.blocks.append(held_code)
        prose = "" if in_code else self._line
        self._line, self._code, self._language, self._holding = "", [], None, True
        if self.wrap:
            prose = self.wrap.feed(prose) + self.wrap.flush()
        return self._given(held_code + prose)

    def mark(self, mark: str) -> str:
        """A mark after the reply's last text (`[interrupted]`): one space before it unless that text
        ends with a space or a line break (or there is none yet), word-wrapped as the prose is."""
        text = (" " if self._end and not self._end.isspace() else "") + mark
        return self._given(self.wrap.feed(text) + self.wrap.flush() if self.wrap else text)


def code_blocks(reply: str) -> list[str]:
    """The code blocks of a reply, as the renderer numbered them (an unclosed last one included)."""
    renderer = ReplyRenderer(color=False)
    renderer.feed(reply)
    renderer.flush()
    return renderer.blocks


class ReplyScreen(Protocol):
    """Where a streamed reply goes: the terminal as it is (ConsoleScreen), or the output
    pane above a live prompt (pane.ReplyPane)."""

    def piece(self, text: str, tokens: int) -> None:
        """The reply's next text as the renderer gives it (possibly empty: held), and how many
        tokens it came in."""

    def notice(self, line: str, during_reply: bool) -> None:
        """A line about the reply (turns dropped, a device stall, a save that failed)."""

    def end(self, tail: str) -> None:
        """The reply's last text (its end mark or error included), then a blank line."""


class ConsoleScreen:
    """A reply written straight to the console, for a terminal hailo-repl does not redraw."""

    def __init__(self, console: Console, renderer: ReplyRenderer):
        self.console = console
        self.renderer = renderer
        self._ended = False

    def piece(self, text: str, tokens: int) -> None:
        self.console.write(text)

    def notice(self, line: str, during_reply: bool) -> None:
        # The words the word-wrap holds come first: the line never lands inside the reply's text.
        self.console.write((self.renderer.break_line() if during_reply else "") + line + "\n")

    def end(self, tail: str) -> None:
        if not self._ended:
            self._ended = True
            self.console.write(tail + "\n\n")


class TurnEvents(Protocol):
    """A turn's events as they come (engine.api.Turn; a reply_channel.ReplyChannel is one too)."""

    async def next_event(self) -> TurnEvent: ...

    def next_text_at_once(self) -> None: ...


class ShownReply:
    """What the screen has shown of a reply: the seq of its last text event (for an interrupt)."""

    def __init__(self) -> None:
        self.seq = 0


async def show_reply(
    events: TurnEvents,
    renderer: ReplyRenderer,
    console: Console,
    screen: ReplyScreen,
    shown: ShownReply | None = None,
    ending: Callable[[TurnCompleted], None] = lambda completed: None,
) -> TurnCompleted:
    """Show the reply as its events arrive; returns how it ended, told first to `ending`, before
    the screen draws the end."""
    started = False
    word_shown = False
    while True:
        event = await events.next_event()
        if isinstance(event, TurnNotice):
            screen.notice(console.wrapped(event.line), during_reply=started)
        elif isinstance(event, TurnText):
            text = renderer.feed(event.text)
            screen.piece(("" if started else ASSISTANT_PREFIX) + text, event.pieces)
            if shown is not None:
                shown.seq = event.seq
            started, word_shown = True, word_shown or bool(text.strip())
            if not word_shown:  # the word-wrap holds the first word until it ends: show it then, not a frame later
                events.next_text_at_once()
        else:
            ending(event)
            tail = renderer.flush()
            if event.reason is TurnEnd.INTERRUPTED:
                tail += renderer.mark(INTERRUPTED_MARK)
            elif event.reason is TurnEnd.ERROR:
                tail += ("\n" if started else "") + console.wrapped(labelled(ERROR, event.error or ""))
            screen.end(tail)
            return event


def recent_turns_text(
    messages: list[Message],
    color: bool = True,
    wrap: Callable[[int], WordWrap | None] = lambda column: None,
    count: int = RECENT_TURNS,
) -> str:
    """The last `count` turns of a conversation as the chat showed them, for a resumed chat;
    `wrap(column)` gives the word-wrap for a message whose first line starts at `column`."""
    _, turns = split_turns(messages)
    shown = []
    for turn in turns[-count:]:
        for message in turn:
            if message["role"] == "user":
                user_wrap = wrap(len(USER_PREFIX))
                text = user_wrap.feed(message["content"]) + user_wrap.flush() if user_wrap else message["content"]
                shown.append(USER_PREFIX + text + "\n")
                continue
            renderer = ReplyRenderer(color, wrap(len(ASSISTANT_PREFIX)))
            text = renderer.feed(message["content"]) + renderer.flush()
            note = renderer.mark(INTERRUPTED_MARK) if message.get("interrupted") else ""
            shown.append(ASSISTANT_PREFIX + text + note + "\n\n")
    return "".join(shown)
