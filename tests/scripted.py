"""The one scripted backend for tests (it follows the backend protocol and replies from a script),
the one harness that runs slash commands on a chat as the REPL does, and the one way to type into
a Repl on an engine."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from pathlib import Path

from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from hailo_repl.app import Repl
from hailo_repl.backends.base import GenerationParams
from hailo_repl.chat import Chat
from hailo_repl.commands import BUILTINS, OffTheLoop
from hailo_repl.console import Console
from hailo_repl.engine.local import LocalEngine
from hailo_repl.settings import SETTINGS_TABLE

TYPING_PAUSE = 0.02


def type_into_repl(engine, keys, history=False, output=None, **more):
    """Type `keys` (strings; or steps, coroutine functions given the Repl) into a Repl on `engine`
    (`more`: the Repl's other arguments); returns (exit code, the Repl). With a terminal's `output`
    the reply streams under the live prompt, as in a terminal; by default prompt_toolkit draws nothing."""
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=output or DummyOutput()):
        repl = Repl(engine, history=history, **more)

        async def main():
            task = asyncio.ensure_future(repl.run())
            for chunk in keys:
                if callable(chunk):
                    await chunk(repl)
                    continue
                # In pieces: a write larger than the OS pipe buffer would block this loop,
                # which is also the pipe's reader.
                for start in range(0, len(chunk), 8192):
                    pipe.send_text(chunk[start : start + 8192])
                    await asyncio.sleep(0.01)
                await asyncio.sleep(TYPING_PAUSE)
            return await asyncio.wait_for(task, 30)

        code = asyncio.run(main())
    return code, repl


class ScriptedBackend:
    """Each reply is a list of pieces (an Exception among them is raised there); when the
    script runs out, `default` is the reply. Records what it was sent."""

    name = "llama"
    model_name = "scripted-model"
    last_prompt_tokens = 3
    loads_in_background = True
    context_is_estimate = False

    def __init__(self, *replies, default=("ok",), delay=0.0, capacity=4096):
        self.replies = list(replies)
        self.default = list(default)
        self.delay = delay
        self.context_capacity = capacity
        self.prompts = []  # the contents of the messages of each stream() call
        self.loaded = threading.Event()
        self.produced = 0  # pieces yielded, over all replies
        self.cleared = 0

    def load(self):
        self.loaded.set()

    @property
    def context_used(self):
        return 100 * len(self.prompts)

    def stream(self, messages, params, cancel):
        self.prompts.append([m["content"] for m in messages])
        reply = self.replies.pop(0) if self.replies else self.default
        for piece in reply:
            if isinstance(piece, Exception):
                raise piece
            if cancel.is_set():
                return
            time.sleep(self.delay)
            self.produced += 1
            yield piece

    def count_tokens(self, messages):
        return sum(len(m["content"].split()) for m in messages)

    def clear(self):
        self.cleared += 1

    def release(self):
        pass


class RecordingConsole(Console):
    """A Console writing to a buffer, that also keeps each text said (labels included, unwrapped)."""

    def __init__(self):
        super().__init__(io.StringIO())
        self.said: list[str] = []

    def say(self, text):
        self.said.append(text)
        super().say(text)


class CommandHarness:
    """What a command may use of the running chat (commands.CommandContext), around `chat` (by
    default a Chat on a ScriptedBackend). `run("/copy 2")` parses and runs the command as the REPL
    does and returns what it wrote since the last run; `outcome` is what its handler returned (a
    Send, a Resend…), `said` each text it said, and `shown` the ids of the chats it resumed."""

    def __init__(self, chat: Chat | None = None, sessions_dir: Path | None = None, config_file: Path | None = None):
        self.chat = chat if chat is not None else Chat(ScriptedBackend(), "be kind", GenerationParams())
        self.engine = LocalEngine(self.chat)  # what a command talks to
        self.store = self.chat.store
        self.console = RecordingConsole()
        self.said = self.console.said
        self.sessions_dir = sessions_dir
        self.settings = {setting.name: setting.default for setting in SETTINGS_TABLE}
        self.config_file = config_file
        self.shown: list[str] = []
        self.outcome = None

    @property
    def model(self):
        return self.engine.status().model

    def show_resumed(self, chat):
        self.shown.append(chat.id)

    def run(self, text: str) -> str:
        entry, argument, _ = BUILTINS.parse(text)
        buffer = self.console.stream
        buffer.seek(0)
        buffer.truncate()
        self.outcome = entry.handler(self, argument)
        if isinstance(self.outcome, OffTheLoop):  # the REPL runs it in a thread, then says its text
            self.console.say(self.outcome.work())
        return buffer.getvalue()
