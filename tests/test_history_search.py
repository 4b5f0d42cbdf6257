"""/history reads saved chats in a thread: a search through thousands of chats never holds
the prompt (the event loop) while it reads them."""

from __future__ import annotations

import asyncio
import io
import threading
import time

from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from scripted import ScriptedBackend

from hailo_repl.app import Repl
from hailo_repl.backends.base import GenerationParams
from hailo_repl.chat import Chat
from hailo_repl.console import Console
from hailo_repl.engine.local import LocalEngine
from hailo_repl.sessions import SessionStore


def saved_chats(store: SessionStore, *questions: str) -> list[str]:
    ids = []
    for question in questions:
        chat = Chat(ScriptedBackend(["ok"]), "sys", GenerationParams(), store)
        list(chat.reply(question, threading.Event()))
        ids.append(chat.session_id)
    return ids


class WatchedStore(SessionStore):
    """A sessions folder whose reads note whether the next prompt came up while they ran."""

    def __init__(self, directory):
        super().__init__(directory)
        self.repl: Repl | None = None
        self.prompt_up_while_reading: list[bool] = []

    def search(self, text):
        self.prompt_up_while_reading.append(self._prompt_comes_up())
        return super().search(text)

    def _prompt_comes_up(self, within: float = 3.0) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:  # as long as reading 5,000 chats takes, and more
            if self.repl is not None and self.repl.session.app.is_running:
                return True
            time.sleep(0.01)
        return False


def run_repl_with(store: WatchedStore, screen: io.StringIO, search: str, answer: str) -> None:
    """/history SEARCH at the prompt; once `answer` is on screen, /quit."""
    chat = Chat(ScriptedBackend(), "sys", GenerationParams(), store)
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        repl = Repl(LocalEngine(chat), history=False, console=Console(screen), store=store)
        store.repl = repl

        async def main():
            task = asyncio.ensure_future(repl.run())
            for text, shown in ((f"/history {search}\r", answer), ("/quit\r", "")):
                while not repl.session.app.is_running:  # each line at a prompt, as typed
                    await asyncio.sleep(0.01)
                pipe.send_text(text)
                for _ in range(500):
                    if shown in screen.getvalue():
                        break
                    await asyncio.sleep(0.01)
            return await asyncio.wait_for(task, 30)

        assert asyncio.run(main()) == 0


def test_a_history_search_runs_while_the_prompt_is_up_and_its_answer_comes_after(isolated_home, tmp_path):
    directory = tmp_path / "sessions"
    tea, _ = saved_chats(SessionStore(directory), "Tell me about tea", "and coffee?")
    store, screen = WatchedStore(directory), io.StringIO()

    run_repl_with(store, screen, "TEA", "Tell me about tea")

    assert store.prompt_up_while_reading == [True]
    shown = screen.getvalue()
    assert f"{tea} " in shown and "Tell me about tea" in shown and "and coffee?" not in shown
