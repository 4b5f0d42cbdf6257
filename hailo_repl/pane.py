"""The output pane: while a reply streams, the prompt for the next message stays up under it.

The prompt (the input line and the live toolbar) is one prompt_toolkit application,
not full screen, drawn at the bottom of what the chat has printed. Above it, the
reply's unfinished line shows in "live rows"; each line the reply finishes goes into
the terminal's scrollback, written as it is (so scrolling back, copying with the
mouse and word-wrap work as when nothing else is drawn), in one write: erase the
frame, write the line, draw the frame again, inside synchronized output so the
terminal shows no half-drawn frame. (patch_stdout cannot do this: it holds text after
the last newline, flushes every 0.2 s, and asks the cursor position after each write.)

Keys typed meanwhile are the prompt's: the text shows and can be edited; Enter queues
it, to be sent when the reply ends; Ctrl+C stops the reply (keys.load_reply_bindings).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import NamedTuple

from prompt_toolkit import print_formatted_text
from prompt_toolkit.application import Application
from prompt_toolkit.application.current import set_app
from prompt_toolkit.filters import Condition, is_done
from prompt_toolkit.formatted_text import FormattedText, StyleAndTextTuples
from prompt_toolkit.layout import ConditionalContainer, Dimension, FormattedTextControl, Window
from prompt_toolkit.output import Output
from prompt_toolkit.renderer import print_formatted_text as print_formatted

from hailo_repl.context import ContextUsage
from hailo_repl.wrap import cell_rows, one_row

LIVE_ROWS = 6  # the most rows of the reply's unfinished part shown at once
SYNC_BEGIN, SYNC_END = "\x1b[?2026h", "\x1b[?2026l"  # synchronized output: the terminal shows the frame whole
# Erase from column 0 to the screen's end without "erase below" at the top-left corner: there
# tmux moves the screen into the scrollback, and the frame starts there when it fills the
# screen (a tall paste, many queued messages). So: erase this row, then
# (cursor saved) erase below from the next row's start, and back.
ERASE_FRAME_BELOW = "\x1b[K\x1b7\x1b[B\r\x1b[J\x1b8"
QUEUED_PREFIX = "queued: "
GIVEN_BACK_PREFIX = "next: "


class ReplyProgress(NamedTuple):  # (a dataclass took ~0.3 ms of every start)
    """What the toolbar shows of the reply streaming now."""

    first_token: bool  # False while waiting for it
    seconds: float  # since the message was sent
    tokens_per_second: float | None
    queued: int  # messages waiting for the reply to end
    ends_after: bool  # Ctrl+D was pressed: the chat ends after the reply (and the queued messages)


@contextlib.contextmanager
def erasing_from_column_0(output: Output) -> Iterator[None]:
    """The renderer's erase of its frame (which goes to column 0 of the frame's first row,
    then erases below) meanwhile erases with ERASE_FRAME_BELOW."""
    output.erase_down = lambda: output.write_raw(ERASE_FRAME_BELOW)  # type: ignore[method-assign]
    try:
        yield
    finally:
        del output.erase_down  # the class's again


@contextlib.contextmanager
def one_write(output: Output) -> Iterator[None]:
    """Everything written to `output` meanwhile reaches the terminal in one write (the
    renderer flushes after each of its steps)."""
    flush = output.flush
    output.flush = lambda: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        del output.flush  # the class's flush again
        flush()


class ReplyPane:
    """The reply's way to the screen while the prompt is up (render.ReplyScreen), and what
    the prompt shows of it: the live rows, the queued messages, the toolbar's progress."""

    def __init__(self, app: Application[str]):
        self.app = app
        self.streaming = False
        self.queued: list[str] = []
        # Queued messages a Ctrl+C gave back, after the one it put in the input line: each comes
        # back, unsent, in the input line of a next prompt (take_given_back), one at a time.
        self.given_back: list[str] = []
        self.ends_after = False
        self._live = ""  # the reply's text after the last line it finished
        self._held_notices: list[str] = []  # lines about the reply, for after its last word
        self._deferred: list[str | FormattedText] = []  # to commit once the terminal is the prompt's again
        self._line = ""  # text printed (by the console) without its newline yet
        self._started = 0.0
        self._first_token: float | None = None
        self._pieces = 0
        self._usage_before: ContextUsage | None = None
        self.drawn_at = 0.0  # (monotonic) when a frame was last drawn
        self._rows_cache: tuple[tuple[int, int] | None, list[tuple[str, str]]] = (None, [])
        app.after_render += self._after_render
        # While a reply streams the frame stays as tall as what it shows. A cursor report (a resize
        # asks for one) makes prompt_toolkit's frame reach the screen's bottom, in blank rows; a
        # smaller size next (a storm of resizes) would push those rows, and the frame above them,
        # into the scrollback: tmux moves rows above the cursor there when the screen shrinks.
        report = app.renderer.report_absolute_cursor_row
        app.renderer.report_absolute_cursor_row = lambda row: report(  # type: ignore[method-assign]
            app.output.get_size().rows if self.streaming else row
        )

    # ---- the layout's parts ------------------------------------------------------------

    def rows(self) -> ConditionalContainer:
        """The live rows and the queued messages, above the input line (hidden once the prompt is done)."""
        window = Window(
            FormattedTextControl(self._fragments),
            dont_extend_height=True,
            height=lambda: Dimension(max=len(self._screen_rows())),
        )
        shown = Condition(lambda: bool(self._live or self._held_notices or self.queued or self.given_back))
        return ConditionalContainer(window, shown & ~is_done)

    def _fragments(self) -> StyleAndTextTuples:
        return [(style, ("\n" if i else "") + text) for i, (style, text) in enumerate(self._screen_rows())]

    def _screen_rows(self) -> list[tuple[str, str]]:
        """The rows as the screen shows them, each within the terminal's width (so the window's
        height is theirs, whatever wraps): the last LIVE_ROWS of the reply's unfinished line(s),
        the lines about it so far, one row for each queued message and each given back."""
        key = (self.app.render_counter, self.app.output.get_size().columns)
        if self._rows_cache[0] == key:
            return self._rows_cache[1]
        width = key[1]
        # (the live text holds no newline: piece() commits each finished line)
        rows = [("", row) for row in cell_rows(self._live.expandtabs(), width, LIVE_ROWS)] if self._live else []
        rows += [("class:notice", row) for line in self._held_notices for row in cell_rows(line.expandtabs(), width)]
        for prefix, texts in ((QUEUED_PREFIX, self.queued), (GIVEN_BACK_PREFIX, self.given_back)):
            rows += [("class:queued", one_row(prefix + text.split("\n", 1)[0].expandtabs(), width)) for text in texts]
        self._rows_cache = (key, rows)
        return rows

    # ---- a reply ---------------------------------------------------------------------------

    def begin(self, usage_before: ContextUsage | None) -> None:
        self.streaming = True
        self._live, self._held_notices, self._pieces, self._first_token = "", [], 0, None
        self._started = time.perf_counter()
        self._usage_before = usage_before
        self.app.erase_when_done = True  # a prompt ended mid-reply (a quit) leaves no frame behind

    def piece(self, text: str, tokens: int) -> None:
        """The reply's next text, as the renderer gives it (it may be empty: held), from `tokens`
        tokens; it comes a frame at a time (reply_channel), so it is drawn at once."""
        if self._first_token is None:
            self._first_token = time.perf_counter()
        self._pieces += tokens
        self._live += text
        finished, newline, self._live = self._live.rpartition("\n")
        if newline:
            self.commit(finished + newline)
        else:  # (the toolbar's figures change too)
            self.app.invalidate()

    def notice(self, line: str, during_reply: bool) -> None:
        """A line about the reply: before its first word at once; after it, shown under the
        reply and kept for after its last word."""
        if not during_reply:
            self.commit(line + "\n")
            return
        self._held_notices.append(line)
        self.app.invalidate()

    def end(self, tail: str) -> None:
        """The reply has ended: its rest, then the lines about it, then a blank line."""
        if not self.streaming:
            return
        reply, notices = self._live, "".join(line + "\n" for line in self._held_notices)
        self._live, self._held_notices = "", []
        self.streaming = False
        self.app.erase_when_done = False
        # Asking where the frame now starts lets the idle prompt fill the screen down, as prompt_toolkit draws it.
        self.commit(reply + tail + "\n" + notices + "\n", ask_position=True)

    def progress(self) -> ReplyProgress:
        now = time.perf_counter()
        first = self._first_token
        rate = (self._pieces - 1) / (now - first) if first is not None and self._pieces > 1 and now > first else None
        return ReplyProgress(first is not None, now - self._started, rate, len(self.queued), self.ends_after)

    def usage(self) -> ContextUsage | None:
        """The context while the reply streams: the count before the reply plus what has come
        since (an estimate; the engine's own count comes with the reply's end)."""
        before = self._usage_before
        if before is None:
            return None
        return ContextUsage(min(before.used + self._pieces, before.capacity), before.capacity, True)

    # ---- the queue ------------------------------------------------------------------------

    def queue(self, text: str) -> None:
        self.queued.append(text)
        self.app.invalidate()

    def end_after(self) -> None:
        self.ends_after = True
        self.app.invalidate()

    def unqueue(self) -> list[str]:
        """The queued messages, taken back (Ctrl+C), each as it was queued."""
        queued, self.queued, self.ends_after = self.queued, [], False
        return queued

    def give_back(self, texts: list[str]) -> None:
        """Messages for the input line of the next prompts, one at a time, before any given back earlier."""
        self.given_back[:0] = texts
        self.app.invalidate()

    def take_given_back(self) -> str:
        """The next message given back, for a prompt's input line ("" if none waits)."""
        return self.given_back.pop(0) if self.given_back else ""

    # ---- writing above the prompt -------------------------------------------------------

    def print(self, text: str) -> None:
        """Text from hailo-repl itself (a command's lines, a notice): above the prompt if it is up
        (there, a line shows once it is whole)."""
        if not self.app.is_running:
            text, self._line = self._line + text, ""
            self.commit(text)
            return
        self._line += text
        finished, newline, self._line = self._line.rpartition("\n")
        if newline:  # (between replies the toolbar shows once the frame's new place is known: ask it)
            self.commit(finished + newline, ask_position=not self.streaming)

    def echo(self, fragments: StyleAndTextTuples) -> None:
        """A line as prompt_toolkit shows formatted text (a queued message, as the prompt shows it)."""
        if not self.app.is_running:
            print_formatted_text(FormattedText(fragments), style=self.app.style)
            return
        self.commit(FormattedText([*fragments, ("", "\n")]))

    def commit(self, text: str | FormattedText, ask_position: bool = False) -> None:
        """Put `text` (whole lines) into the scrollback, above the prompt if it is up."""
        app = self.app
        if not app.is_running:
            sys.stdout.write(text if isinstance(text, str) else "".join(part[1] for part in text))
            sys.stdout.flush()
            return
        if app._running_in_terminal or self._deferred:  # an editor or a suspend has the terminal now
            self._deferred.append(text)
            return
        output = app.output
        with one_write(output):
            output.write_raw(SYNC_BEGIN)
            with erasing_from_column_0(output):
                app.renderer.erase()
            if isinstance(text, str):
                output.write_raw(text)
            else:
                print_formatted(output, text, app.renderer.style, color_depth=app.color_depth)
            if ask_position:
                app.renderer.request_absolute_cursor_position()
            with set_app(app):
                app.render_counter += 1  # (the controls' caches are per render)
                app.renderer.render(app, app.layout)
            output.write_raw(SYNC_END)
        self.drawn_at = time.monotonic()

    def _after_render(self, app: Application[str]) -> None:
        self.drawn_at = time.monotonic()
        if self._deferred and not app._running_in_terminal and app.loop:
            deferred, self._deferred = self._deferred, []
            for text in deferred:
                app.loop.call_soon(self.commit, text)
