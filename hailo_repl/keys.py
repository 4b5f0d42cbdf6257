"""The keys at the prompt: their bindings, and the one table that /help, the welcome
line and the README's key table are written from."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from prompt_toolkit.buffer import Buffer
from prompt_toolkit.enums import DEFAULT_BUFFER
from prompt_toolkit.filters import Filter, emacs_insert_mode, has_focus, vi_insert_mode, vi_navigation_mode
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent


class KeyHelp(NamedTuple):
    """One line of the keys' help."""

    keys: str  # as a user reads them: "Alt+Enter, Ctrl+J"
    does: str  # what they do, for /help and the README
    brief: str = ""  # the few words the welcome line gives them, if it names them


KEYS = (
    KeyHelp("Enter", "send the message; while a reply streams, queue it: it is sent when the reply ends"),
    KeyHelp(
        "Alt+Enter, Ctrl+J",
        "new line inside the message (a pasted block of lines stays one message)",
        brief="Alt+Enter for a new line",
    ),
    KeyHelp("Up, Down", "walk earlier messages, kept across runs"),
    KeyHelp("Tab", "complete a command, a `/set` parameter, or a file path for `/save` and `/load`"),
    KeyHelp(
        "Ctrl+C",
        "stop a streaming reply (what was shown stays, marked `[interrupted]`) and send nothing more: queued messages "
        "come back one at a time in the input line, then what you typed; at the prompt: clear the line; "
        "it never ends the chat",
        brief="Ctrl+C stops a reply",
    ),
    KeyHelp("Ctrl+D", "quit (while a reply streams: once it ends)", brief="Ctrl+D or /quit ends the chat"),
    KeyHelp("Ctrl+Z", "suspend to the shell (`fg` comes back)"),
    KeyHelp(
        "Ctrl+X Ctrl+E, Ctrl+G",
        "edit the message in `$VISUAL` or `$EDITOR`; on saving, the text is back at the prompt, not sent yet",
    ),
    KeyHelp("Esc, then v", "with `vi-mode` on (`--vi`): normal mode (the toolbar shows it), then the editor as above"),
)


class EmptyLineInterrupt(Exception):
    """Ctrl+C on an empty line ends the prompt with this (not KeyboardInterrupt, which
    asyncio would carry out of the prompt's task to the top of the event loop)."""


def keys_help_text() -> str:
    """The key table as /help prints it."""
    width = max(len(row.keys) for row in KEYS) + 2
    return "Keys:\n" + "\n".join(f"  {row.keys:<{width}} {row.does.replace('`', '')}" for row in KEYS)


def keys_welcome_text() -> str:
    """'Type a message and press Enter (Alt+Enter for a new line). Ctrl+C stops a reply; …'"""
    briefs = [row.brief for row in KEYS if row.brief]
    return f"Type a message and press Enter ({briefs[0]}). " + "; ".join(briefs[1:]) + "."


def load_input_bindings() -> KeyBindings:
    """Enter sends (prompt_toolkit's default); these add newlines and Ctrl+C's behaviour."""
    bindings = KeyBindings()

    @bindings.add("escape", "enter")  # Alt+Enter
    @bindings.add("c-j")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    # prompt_toolkit's own Ctrl+X Ctrl+E and vi's v send the text on return
    # (named_commands.edit_and_execute: validate_and_handle=True); here it comes back to the prompt.
    @bindings.add("c-x", "c-e", filter=emacs_insert_mode | vi_insert_mode)
    @bindings.add("c-g", filter=emacs_insert_mode | vi_insert_mode)
    @bindings.add("v", filter=vi_navigation_mode)
    def _edit_in_editor(event: KeyPressEvent) -> None:
        event.current_buffer.open_in_editor(validate_and_handle=False)

    @bindings.add("c-c")
    def _clear_line(event: KeyPressEvent) -> None:
        if event.current_buffer.text:
            event.current_buffer.reset()
        else:  # the REPL says how to quit: a burst of Ctrl+C to stop a reply must not end the chat
            event.app.exit(exception=EmptyLineInterrupt)

    @bindings.add("c-@")  # Ctrl+Space sends NUL; by default it starts a selection that eats what is typed next
    def _ignore_nul(event: KeyPressEvent) -> None:
        pass

    return bindings


def load_reply_bindings(
    replying: Filter,
    stop: Callable[[Buffer], None],
    queue: Callable[[Buffer], None],
    end_after: Callable[[], None],
) -> KeyBindings:
    """The keys that mean something else while a reply streams under the prompt: Ctrl+C
    stops the reply (`stop`), Enter queues the message (`queue`), Ctrl+D on an empty
    line ends the chat once the reply has ended (`end_after`)."""
    bindings = KeyBindings()
    in_input = has_focus(DEFAULT_BUFFER)

    @bindings.add("c-c", filter=replying)
    def _stop_reply(event: KeyPressEvent) -> None:
        stop(event.app.current_buffer)

    @bindings.add("enter", filter=replying & in_input)
    def _queue_message(event: KeyPressEvent) -> None:
        if event.current_buffer.text.strip():
            queue(event.current_buffer)

    @bindings.add("c-d", filter=replying & in_input)
    def _end_after_the_reply(event: KeyPressEvent) -> None:
        if event.current_buffer.text:
            event.current_buffer.delete()  # as Ctrl+D does on a line with text
        else:
            end_after()

    return bindings
