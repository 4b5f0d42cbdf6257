"""What the REPL draws besides the reply: the layout (the reply's live rows, the prompt, the
toolbar), the toolbar's figures as the engine's events left them, and the welcome lines."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prompt_toolkit import PromptSession
from prompt_toolkit.enums import EditingMode
from prompt_toolkit.filters import Filter, is_done, renderer_height_is_known
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.layout import ConditionalContainer, Dimension, FormattedTextControl, HSplit, Layout, Window

from hailo_repl import __version__
from hailo_repl.context import ContextUsage
from hailo_repl.engine.api import EngineState, Event, ModelState, Status, TurnCompleted, TurnStarted, UsageChanged
from hailo_repl.keys import keys_welcome_text
from hailo_repl.pane import ReplyPane
from hailo_repl.toolbar import ToolbarState, toolbar_fragments

if TYPE_CHECKING:
    from hailo_repl.sessions import ChatSummary


def welcome_text(status: Status, command_names: list[str]) -> str:
    return (
        f"hailo-repl {__version__} — chat with {status.model} on {status.backend}\n"
        f"{keys_welcome_text()}\n"
        f"Commands: {' '.join(command_names)}\n"
    )


def resumed_lines(chat: ChatSummary, model: str) -> list[str]:
    """What is said of a chat just resumed, before its last turns show."""
    lines = [f"Continuing chat {chat.id} from {chat.when()} ({chat.turns} turns, {chat.model})."]
    if chat.model != model:
        lines.append(f"It was saved with {chat.model}; it goes on with {model}.")
    return lines


class PaneStream(io.TextIOBase):
    """The console's stream in a live terminal: above the prompt while one is up."""

    def __init__(self, pane: ReplyPane):
        self.pane = pane

    def write(self, text: str) -> int:
        self.pane.print(text)
        return len(text)


TOOLBAR_REFRESH_SECONDS = 0.5  # the toolbar's clock and figures are never older than this


class Toolbar:
    """The toolbar's figures, from the engine's events (the loop never asks the engine for them),
    and the reply's progress from the pane while one streams."""

    def __init__(self, session: PromptSession[str], pane: ReplyPane, status: Status):
        self.session = session
        self.pane = pane
        self.model, self.backend, self.state = status.model, status.backend, status.state
        self.usage: ContextUsage | None = None
        self.tokens_per_second: float | None = None
        self.turn_running = False  # from its TurnStarted to its TurnCompleted
        self._shown_end: int | None = None  # the turn whose end came with its own events (take_shown_end)

    def take(self, event: Event) -> None:
        """An engine event (on the loop): keep what the toolbar shows of it."""
        if isinstance(event, EngineState):
            self.model, self.backend, self.state = event.model, event.backend, event.state
        elif isinstance(event, UsageChanged):
            self.usage = event.usage
        elif isinstance(event, TurnStarted):
            self.turn_running = event.turn != self._shown_end  # (its end may have come first: take_shown_end)
        elif isinstance(event, TurnCompleted):
            self.turn_running = False
            self.tokens_per_second = event.stats.tokens_per_second if event.stats else None
            self.usage = event.usage or self.usage
        else:
            return
        if self.session.app.is_running:
            self.session.app.invalidate()

    def take_shown_end(self, completed: TurnCompleted) -> None:
        """The end of the turn on screen, from the turn's own events, before the screen draws it.
        The engine's event for it crosses from the engine's thread by another way, and may come
        after that frame: the frame, drawn whole, would show the estimate, and the count only as
        the few cells a later redraw changes. An end without the engine's figures (the screen's
        own at Ctrl+C, the reply still ending) waits for the engine's event."""
        if completed.usage is not None:
            self._shown_end = completed.turn
            self.take(completed)

    async def keep_fresh(self) -> None:
        """Redraw the toolbar when no frame has for TOOLBAR_REFRESH_SECONDS. (Not prompt_toolkit's
        refresh_interval: it redraws on top of a reply's frames, and each is taken from llama.cpp's
        decoding: see reply_channel.)"""
        app = self.session.app
        while True:
            wait = self.pane.drawn_at + TOOLBAR_REFRESH_SECONDS - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            app.invalidate()
            await asyncio.sleep(TOOLBAR_REFRESH_SECONDS)

    def __call__(self) -> StyleAndTextTuples:
        state = ToolbarState(self.model, self.backend, self.state)
        app = self.session.app
        if app.editing_mode is EditingMode.VI:
            state.vi_mode = app.vi_state.input_mode
        if self.pane.streaming:  # the engine's count comes with the reply's end: until then, an estimate
            state.usage = self.pane.usage()
            state.reply = self.pane.progress()
        elif self.turn_running:  # a stopped reply ends within a token: its figures come then, not the last one's
            state.usage = self.pane.usage()
        elif self.state is ModelState.READY:
            state.usage = self.usage
            state.tokens_per_second = self.tokens_per_second
        return toolbar_fragments(state)


def lay_out(
    session: PromptSession[str], pane: ReplyPane, toolbar: Callable[[], StyleAndTextTuples], during_reply: Filter
) -> None:
    """The prompt's layout with the pane's rows above it and the toolbar below, drawn during a
    reply even before the terminal has said where the cursor is (it may never say:
    PROMPT_TOOLKIT_NO_CPR, some SSH clients); between replies, as prompt_toolkit draws a bottom
    toolbar, once the height below the prompt is known."""
    bar = Window(
        FormattedTextControl(toolbar, style="class:bottom-toolbar.text"),
        style="class:bottom-toolbar",
        dont_extend_height=True,
        height=Dimension(min=1),
    )
    shown = ~is_done & (renderer_height_is_known | during_reply)
    prompt = session.layout
    session.app.layout = Layout(
        HSplit([pane.rows(), prompt.container, ConditionalContainer(bar, shown)]),
        focused_element=prompt.current_window,
    )
