"""The input line's queue and Ctrl+C's given-back messages, in process (the live pane's own
end-to-end tests are tests/test_e2e_pane.py; this is the race they cannot time)."""

import asyncio
from types import SimpleNamespace

from prompt_toolkit import PromptSession
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from hailo_repl.pane import ReplyPane
from hailo_repl.prompt_line import PromptLine


def test_an_enter_as_a_stopped_reply_ends_leaves_the_next_given_back_message_in_the_input_line():
    """Ctrl+C gave back /clear (into the input line) and a message (for the next prompt); Enter
    came before the REPL took its next message, so it queued /clear: the prompt still up takes
    the message, as a prompt started afresh would."""

    async def main() -> tuple[str, str]:
        session: PromptSession[str] = PromptSession()
        pane = ReplyPane(session.app)
        turns = SimpleNamespace(arrived=None)  # (no reply found running on arrival)
        repl = SimpleNamespace(session=session, pane=pane, turns=turns, settings={"vi-mode": False}, quitting=False)
        line = PromptLine(repl)  # type: ignore[arg-type]
        line.start(in_reply=True)  # the prompt up during the reply
        await asyncio.sleep(0.05)
        repl.pane.give_back(["hello after\nclear"])
        repl.pane.queue("/clear")  # the Enter's
        sent = await line.next_message()
        shown = session.default_buffer.text
        await line.end()
        return sent, shown

    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        sent, shown = asyncio.run(main())
    assert sent == "/clear" and shown == "hello after\nclear"
