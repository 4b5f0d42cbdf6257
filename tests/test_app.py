"""The REPL application, driven through prompt_toolkit's pipe input (no terminal needed)."""

import asyncio
import errno
import os
import re
import signal
import threading

import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from scripted import ScriptedBackend, type_into_repl

from hailo_repl.app import Repl
from hailo_repl.backends.base import BackendError, GenerationParams
from hailo_repl.chat import Chat
from hailo_repl.conversation import ConversationFileError
from hailo_repl.engine.local import LocalEngine

# After each chunk of keys, as a user pauses; keys that come sooner wait in the pipe for the
# next prompt, as typeahead does.


async def prompt_up(repl):
    """Until a prompt is up and waiting for keys."""
    while not repl.session.app.is_running:
        await asyncio.sleep(0.01)


def run_repl(backend, keys, history=False):
    """Type `keys` into a Repl on a chat with `backend` (scripted.type_into_repl); returns (exit
    code, the Repl)."""
    return type_into_repl(LocalEngine(Chat(backend, "sys", GenerationParams())), keys, history)


@pytest.fixture(autouse=True)
def home(isolated_home):
    return isolated_home


def test_a_message_gets_a_streamed_reply_and_quit_exits_zero(capsys):
    backend = ScriptedBackend(["Hello", " there"])
    code, repl = run_repl(backend, ["hi\r", "/quit\r"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Assistant: Hello there" in out
    assert repl.engine.chat.messages[-2:] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello there"},
    ]


def test_welcome_text_names_model_and_commands(capsys):
    run_repl(ScriptedBackend(), ["/quit\r"])
    out = capsys.readouterr().out
    assert "scripted-model" in out and "/help" in out and "/context" in out


def test_empty_and_blank_input_is_ignored_and_unknown_commands_never_reach_the_model(capsys):
    backend = ScriptedBackend()
    code, _ = run_repl(backend, ["\r", "   \r", "/hlep\r", "/quit\r"])
    assert code == 0 and backend.prompts == []
    assert "Unknown command /hlep — did you mean /help?" in capsys.readouterr().out


def test_ctrl_c_with_text_clears_the_line_and_on_an_empty_line_says_how_to_quit(capsys):
    backend = ScriptedBackend(["a"], ["b"])
    code, _ = run_repl(backend, ["typo", "\x03", "real\r", "\x03", "\x03", "still here\r", "/quit\r"])
    assert code == 0
    assert backend.prompts == [["sys", "real"], ["sys", "real", "a", "still here"]]
    assert capsys.readouterr().out.count("[Info] Ctrl+D or /quit ends the chat.") == 2


def test_ctrl_d_quits():
    code, _ = run_repl(ScriptedBackend(), ["\x04"])
    assert code == 0


def test_alt_enter_and_ctrl_j_insert_newlines_and_a_paste_stays_one_message():
    backend = ScriptedBackend(["a"], ["b"])
    run_repl(backend, ["one\x1b\rtwo\ntwo-b\r", "\x1b[200~pasted\nlines\x1b[201~\r", "/quit\r"])
    assert backend.prompts[0][-1] == "one\ntwo\ntwo-b"
    assert backend.prompts[1][-1] == "pasted\nlines"


def test_a_backend_error_is_one_line_and_the_chat_goes_on(capsys):
    backend = ScriptedBackend(["par", "tial", BackendError("device went away")], ["recovered"])
    code, repl = run_repl(backend, ["first\r", "second\r", "/quit\r"])
    out = capsys.readouterr().out
    assert code == 0
    assert "partial" in out and "[Error] device went away" in out and "recovered" in out
    assert "Traceback" not in out


def test_ctrl_c_during_a_reply_stops_the_backend_and_keeps_the_partial_reply(capsys):
    backend = ScriptedBackend([f"w{i} " for i in range(200)], ["next answer"], delay=0.02)

    async def interrupt_after_a_few_tokens(repl):
        while backend.produced < 15:  # the reply is streaming, a frame or more of it shown
            await asyncio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0.2)

    code, repl = run_repl(backend, ["long\r", interrupt_after_a_few_tokens, "again\r", "/quit\r"])
    out = capsys.readouterr().out
    assert code == 0
    assert "[interrupted]" in out and "next answer" in out
    assert backend.produced < 60  # generation stopped, not just the printing
    interrupted = repl.engine.chat.messages[2]
    shown = re.search(r"Assistant: (.*) \[interrupted\]", out).group(1)
    assert shown.startswith("w0 w1")
    # What is kept is what the screen showed: not the tokens decoded after the last frame, nor after the key.
    assert interrupted["content"] == shown.strip() and interrupted["interrupted"] is True
    assert backend.prompts[1][-1] == "again"


def test_the_interrupted_mark_is_one_space_after_the_text_or_at_the_start_of_its_line(capsys):
    """(As with TERM=dumb: the reply is written as it comes.)"""
    backend = ScriptedBackend(["after ", "a ", "space ", *["more "] * 50], ["a line\n", *["more "] * 50], delay=0.3)

    def interrupt_after(pieces):
        async def interrupt(repl):
            start = backend.produced
            while backend.produced < start + pieces:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # (the piece on its way to the screen)
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(0.5)

        return interrupt

    run_repl(backend, ["one\r", interrupt_after(3), "two\r", interrupt_after(1), "/quit\r"])
    out = capsys.readouterr().out
    assert "Assistant: after a space [interrupted]\n" in out
    assert "Assistant: a line\n[interrupted]\n" in out


def test_history_is_kept_across_runs_and_up_recalls_it(home):
    run_repl(ScriptedBackend(), ["remember me\r", "/quit\r"], history=True)
    backend = ScriptedBackend()
    run_repl(backend, ["\x1b[A\x1b[A\r", "/quit\r"], history=True)
    assert backend.prompts[0][-1] == "remember me"


def test_no_history_keeps_nothing_on_disk(home):
    run_repl(ScriptedBackend(), ["secret\r", "/quit\r"], history=False)
    assert not any("secret" in p.read_text() for p in home.rglob("history"))


def test_toolbar_shows_model_backend_context_and_speed():
    backend = ScriptedBackend(["a", "b", "c"], delay=0.01)
    _, repl = run_repl(backend, ["x\r", "/quit\r"])
    text = "".join(fragment[1] for fragment in repl.toolbar())
    assert "scripted-model" in text and "llama.cpp CPU" in text
    assert "ctx 100/4096 (2%)" in text and "tok/s" in text


def test_sigterm_ends_the_chat_cleanly():
    async def terminate(repl):
        await prompt_up(repl)
        os.kill(os.getpid(), signal.SIGTERM)

    code, _ = run_repl(ScriptedBackend(), [terminate])
    assert code == 128 + signal.SIGTERM  # as a shell reports a process ended by SIGTERM


def test_a_huge_paste_is_refused_with_one_line_not_a_hang(capsys):
    backend = ScriptedBackend(capacity=4096)
    huge = "word " * 20_000  # 100,000 characters
    code, repl = run_repl(backend, [f"\x1b[200~{huge}\x1b[201~\r", "/quit\r"])
    out = capsys.readouterr().out
    assert code == 0
    assert backend.prompts == []
    assert "[Error]" in out and "tokens" in out
    assert len(repl.engine.chat.messages) == 1  # nothing half-added


class GatedLoad(ScriptedBackend):
    """A load that ends when the test lets it (`loadable.set()`), so a message can be sure to come
    while the model loads; then it fails with `error`, if one is given."""

    def __init__(self, *replies, error=None):
        super().__init__(*replies)
        self.loadable = threading.Event()
        self.error = error

    def load(self):
        self.loadable.wait(30)
        if self.error is not None:
            raise self.error
        super().load()


def let_it_load(backend):
    async def now(repl):
        backend.loadable.set()

    return now


class WatchesTheFirstFrame(ScriptedBackend):
    """Notes whether the prompt had been drawn when its load began."""

    def __init__(self):
        super().__init__()
        self.drawn = threading.Event()
        self.drawn_before_load: bool | None = None

    def load(self):
        self.drawn_before_load = self.drawn.is_set()
        super().load()


def test_a_model_that_loads_behind_the_prompt_starts_loading_once_the_prompt_is_drawn():
    """The load's imports hold the GIL (llama.cpp's take a fifth of a second): begun before the
    first frame, they would hold the first prompt up."""
    backend = WatchesTheFirstFrame()

    async def watch_the_frames(repl):  # runs before the REPL does
        repl.session.app.after_render += lambda _: backend.drawn.set()

    code, _ = run_repl(backend, [watch_the_frames, "/quit\r"])
    assert code == 0
    assert backend.loaded.is_set() and backend.drawn_before_load is True


def test_a_model_that_fails_to_load_ends_the_chat_with_one_line(capsys):
    backend = GatedLoad(error=BackendError("Failed to load model.gguf: not a model"))
    code, _ = run_repl(backend, ["hello\r", let_it_load(backend)])  # a message waits for it, then the load fails
    out = capsys.readouterr().out
    assert code == 1
    assert "[Error] Failed to load model.gguf: not a model" in out and "Traceback" not in out
    assert "Not sent (Ctrl+C)" not in out  # nobody pressed Ctrl+C


def test_a_message_sent_while_the_model_loads_waits_for_it(capsys):
    backend = GatedLoad(["answer"])
    code, repl = run_repl(backend, ["early\r", let_it_load(backend), "/quit\r"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Waiting for the model to load" in out and "Assistant: answer" in out


def test_a_stray_sigint_at_the_prompt_does_not_swallow_the_next_message(capsys):
    backend = ScriptedBackend(["got it"])

    async def stray_interrupt(repl):
        await prompt_up(repl)
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0.1)

    code, _ = run_repl(backend, [stray_interrupt, "hello\r", "/quit\r"])
    assert code == 0
    assert backend.prompts == [["sys", "hello"]]
    assert "got it" in capsys.readouterr().out


def test_ctrl_c_while_waiting_for_the_model_says_the_message_was_not_sent(capsys):
    backend = GatedLoad()

    shown = []

    async def interrupt(repl):
        while "Waiting for the model to load" not in "".join(shown):  # the message waits for it
            shown.append(capsys.readouterr().out)
            await asyncio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0.1)

    code, _ = run_repl(backend, ["early\r", interrupt, let_it_load(backend), "/quit\r"])
    out = "".join(shown) + capsys.readouterr().out
    assert code == 0 and backend.prompts == []
    assert "Not sent (Ctrl+C)" in out


def test_verbose_prints_the_timing_block_after_a_reply(capsys):
    backend = ScriptedBackend(["a", "b"])
    chat = Chat(backend, "sys", GenerationParams())
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        repl = Repl(LocalEngine(chat), history=False, verbose=True)
        pipe.send_text("x\r/quit\r")
        assert asyncio.run(repl.run()) == 0
    out = capsys.readouterr().out
    assert "eval count:           2 token(s)" in out and "time to first token" in out


def test_set_save_in_the_repl_writes_the_users_config_file(home):
    backend = ScriptedBackend(["ok"])
    code, repl = run_repl(backend, ["/set --save temperature 0.3\r", "hi\r", "/quit\r"])
    assert code == 0
    config = home / "config" / "hailo-repl" / "config.yaml"
    assert repl.config_file == config
    assert config.read_text() == "temperature: 0.3\n"
    assert repl.engine.chat.params.temperature == 0.3


class UnwritableStore:
    """A chat store whose every save fails, as on a full disk."""

    writable = True

    def save(self, record, messages, *version):
        raise ConversationFileError("cannot write the chat: No space left on device")


def test_a_save_error_during_a_reply_comes_after_its_last_word(capsys):
    backend = ScriptedBackend(["Hello", " there"])
    chat = Chat(backend, "sys", GenerationParams(), store=UnwritableStore())
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        repl = Repl(LocalEngine(chat), history=False)  # word-wrap on: "there" waits in the wrap for the reply's end
        pipe.send_text("hi\r/quit\r")
        assert asyncio.run(repl.run()) == 0
    out = capsys.readouterr().out
    assert "Assistant: Hello there\n\n[Error] cannot write the chat: No space left on device\n" in out


class _HungUpTerminal:
    """A terminal whose window has gone: every write fails with EIO (its SIGHUP is yet to come)."""

    def write(self, text):
        raise OSError(errno.EIO, "Input/output error")

    def flush(self):
        pass

    def isatty(self):
        return False


def test_a_write_failing_with_eio_mid_reply_is_a_hang_up_the_reply_ends_and_is_kept_whole(monkeypatch):
    pieces = [f"w{i} " for i in range(40)]
    backend = ScriptedBackend(pieces, delay=0.01)
    hung_up = []

    async def terminal_goes_away(repl):
        repl.engine.on_hang_up = lambda chat: hung_up.append(backend.produced)
        while backend.produced < 5:
            await asyncio.sleep(0.005)
        monkeypatch.setattr(repl, "_terminal_gone", lambda: True)
        repl.console._stream = _HungUpTerminal()

    code, repl = run_repl(backend, ["tell me\r", terminal_goes_away])
    assert code == 128 + signal.SIGHUP
    assert hung_up and hung_up[0] < len(pieces)  # it hung up mid-reply…
    assert backend.produced == len(pieces)  # …and the reply went on to its end
    assert repl.engine.chat.messages[-1] == {"role": "assistant", "content": "".join(pieces).strip()}


def test_sigterm_after_a_hang_up_stops_the_reply_left_running(monkeypatch):
    pieces = [f"w{i} " for i in range(400)]
    backend = ScriptedBackend(pieces, delay=0.01)

    async def hang_up_then_terminate(repl):
        while backend.produced < 5:
            await asyncio.sleep(0.005)
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    code, repl = run_repl(backend, ["tell me\r", hang_up_then_terminate])
    assert code == 128 + signal.SIGTERM
    assert backend.produced < len(pieces)
    assert repl.engine.chat.messages[-1]["interrupted"]
