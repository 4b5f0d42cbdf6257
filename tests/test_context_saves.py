"""When the Hailo device's context is saved, and the self-check that decides whether it is used.

A save holds the GIL for seconds on a Pi (HailoRT's bindings copy the whole KV cache into a
list of ints): never between a message and the next prompt, only at quit, /save, before /model
or /resume switches away, and when the chat is idle. The real hailo backend against the double.
"""

import asyncio
import io
import stat
import threading
import time
from pathlib import Path

import pexpect
import pytest
from conftest import remember_device
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from hailo_repl.app import Repl
from hailo_repl.backends.base import GenerationParams
from hailo_repl.backends.hailo import HailoBackend
from hailo_repl.backends.hailo_selfcheck import DeviceFacts
from hailo_repl.chat import KEEPING_DEVICE_CONTEXT, Chat
from hailo_repl.console import Console
from hailo_repl.engine.local import LocalEngine
from hailo_repl.sessions import SessionStore
from hailo_repl.turn_view import SENT_AFTER_THE_SAVE

QWEN = "Qwen2.5-1.5B-Instruct"
SYSTEM = "You are a helpful assistant."


def reply(chat, text):
    return "".join(chat.reply(text, threading.Event()))


# ---- the self-check ----------------------------------------------------------------------------


def test_a_hefs_first_use_checks_the_text_path_and_remembers_the_verdict(
    loaded_hailo_backend, hailo_resources, fake_log, log_lines
):
    loaded_hailo_backend({"replies": [["x"]]}, passed_self_check=False)
    prefills = fake_log.named("prefill")
    # The lists, the texts, then a long text for the prefill rate (the lists again only on a mismatch).
    assert [type(e["prompt"]).__name__ for e in prefills] == ["list"] * 2 + ["str"] * 3
    assert len(fake_log.named("save_context")) == 2  # what the device holds after each (the second one timed)
    assert len(fake_log.named("load_context")) == 1  # a load timed, from a file
    assert [e["event"] for e in fake_log()][-1] == "clear_context"  # and a fresh context after it
    assert any(line.startswith(f"self-check of {QWEN} with HailoRT 5.2.0") and "passed" in line for line in log_lines)
    (key, entry), *others = DeviceFacts(hailo_resources.facts).entries().items()
    assert others == [] and "renderer" in key and "jinja2" in key  # the verdict holds for this renderer only
    assert entry["text_path"]["passed"] is True
    assert entry["save"]["bytes"] == entry["load"]["bytes"] > 0
    assert entry["prefill"]["long"][0] > entry["prefill"]["short"][0] + 64  # enough apart to give a rate
    assert stat.S_IMODE(hailo_resources.facts.stat().st_mode) == 0o600
    assert list(hailo_resources.facts.parent.glob("*.ctx")) == []  # the timed file is gone

    loaded_hailo_backend({"replies": [["x"]]}, passed_self_check=False)  # a later run: remembered
    assert len(fake_log.named("prefill")) == 5


def test_a_reasoning_hef_passes_though_its_context_holds_less_than_the_texts_tokenize_to(
    loaded_hailo_backend, hailo_resources, log_lines
):
    """DeepSeek-R1-Distill's generation prompt ends in <think>: a prefill leaves that out of the
    context on both paths alike (llm_server.cpp `handle_reasoning_generation_completion`), so
    only lists against texts tells whether the texts are right."""
    deepseek = (Path(__file__).parent / "data" / "chat_templates" / "DeepSeek-R1-Distill-Qwen.jinja").read_text()
    script = {"replies": [["x"]], "prompt_template": deepseek, "reasoning_start": "<think>"}
    loaded_hailo_backend(script, passed_self_check=False)
    (verdict,) = [line for line in log_lines if line.startswith("self-check")]
    assert "passed" in verdict, verdict
    (entry,) = DeviceFacts(hailo_resources.facts).entries().values()
    assert entry["text_path"]["passed"] is True


def test_when_the_text_path_disagrees_the_device_gets_message_lists_and_resumes_by_rereading(
    loaded_hailo_backend, fake_log, log_lines, tmp_path
):
    script = {"replies": [["Paris."], ["Berlin."], ["Rome."]], "template_drift": " (drift)"}
    store = SessionStore(tmp_path / "sessions")
    chat = Chat(
        loaded_hailo_backend(script, tmp_path / "contexts", passed_self_check=False), SYSTEM, GenerationParams(), store
    )
    verdicts = [line for line in log_lines if line.startswith("self-check")]
    assert len(verdicts) == 1 and "FAILED" in verdicts[0]
    why = [line for line in log_lines if line.startswith("sending whole message lists")]
    assert len(why) == 1 and "did not match them in the self-check" in why[0]  # said once, with the figures

    assert reply(chat, "Capital of France?") == "Paris."
    assert len(fake_log.named("prefill")) == 7  # the check's only (the lists again: they differ)
    checked = len(fake_log.named("save_context"))  # the check's own
    chat.keep_device_context()
    assert len(fake_log.named("save_context")) == checked  # a context no load could use is not saved
    assert not store.context_path(chat.session_id).exists()
    chat.backend.release()

    resumed = Chat(
        loaded_hailo_backend(script, tmp_path / "contexts", passed_self_check=False), SYSTEM, GenerationParams(), store
    )
    resumed.resume(chat.session_id)
    timed = len(fake_log.named("load_context"))  # the first check's, timing a load
    assert reply(resumed, "Of Germany?") == "Paris."  # a new process: the script from its start
    assert len(fake_log.named("load_context")) == timed
    last = fake_log.named("generate")[-1]
    assert [m["content"] for m in last["prompt"]] == [SYSTEM, "Capital of France?", "Paris.", "Of Germany?"]


# ---- when the context is saved -------------------------------------------------------------------


def test_saves_and_loads_log_their_size_and_time_and_keep_them_for_the_doctor(
    loaded_hailo_backend, hailo_resources, fake_log, log_lines, tmp_path
):
    script = {"replies": [["Paris."], ["Berlin."]], "context_bytes": 300_000}
    store = SessionStore(tmp_path / "sessions")
    chat = Chat(loaded_hailo_backend(script), SYSTEM, GenerationParams(), store)
    reply(chat, "Capital of France?")
    chat.keep_device_context()
    chat.keep_device_context()  # nothing new since: not saved again
    (save,) = fake_log.named("save_context")
    assert save["size"] == 300_000
    assert any(line.startswith("saved the device context") and "300000 bytes" in line for line in log_lines)
    chat.backend.release()

    resumed = Chat(loaded_hailo_backend(script), SYSTEM, GenerationParams(), store)
    resumed.resume(chat.session_id)
    reply(resumed, "Of Germany?")
    assert any(line.startswith("loaded the device context") and "300000 bytes" in line for line in log_lines)
    (entry,) = DeviceFacts(hailo_resources.facts).entries().values()
    assert entry["save"]["bytes"] == entry["load"]["bytes"] == 300_000
    assert {"device_ms", "file_ms", "when"} <= set(entry["save"]) & set(entry["load"])


@pytest.fixture
def repl_on_the_double(hailo_resources, fake_script, fake_log, isolated_home, tmp_path):
    """Run a Repl (pipe input, no terminal) with the real hailo backend; returns (run, store)."""
    directory = hailo_resources(QWEN)
    hef = directory / f"{QWEN}.hef"
    fake_script({"replies": [["Paris."], ["Berlin."], ["Rome."]]})
    remember_device(hef, hailo_resources.facts)
    store = SessionStore(tmp_path / "sessions")

    def run(steps, idle_seconds=60.0, console=None):
        backend = HailoBackend(hef, facts_file=hailo_resources.facts)
        chat = Chat(backend, SYSTEM, GenerationParams(), store)
        with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
            repl = Repl(LocalEngine(chat), history=False, console=console, store=store)
            repl.engine.idle_save_seconds = idle_seconds
            prompts = 0  # prompts started: a line sent has been handled once the next one is up
            prompt_async = repl.session.prompt_async

            def counted_prompt(*args, **kwargs):
                nonlocal prompts
                prompts += 1
                return prompt_async(*args, **kwargs)

            repl.session.prompt_async = counted_prompt

            async def at_the_prompt(task, after):
                """Wait (for an event, not a fixed time) until the prompt after the `after`-th is
                up with no reply running, or the Repl has ended."""
                while not task.done():
                    turn = repl.turns.turn
                    if prompts > after and repl.session.app.is_running and (turn is None or turn.is_finished()):
                        return
                    await asyncio.sleep(0.01)

            async def main():
                task = asyncio.ensure_future(repl.run())
                await asyncio.wait_for(at_the_prompt(task, 0), 30)
                for step in steps:
                    if callable(step):
                        await step()
                    else:
                        handled = prompts
                        pipe.send_text(step)
                        await asyncio.wait_for(at_the_prompt(task, handled), 30)
                return await asyncio.wait_for(task, 30)

            try:
                return asyncio.run(main()), chat
            finally:
                backend.release()

    return run


def test_no_save_between_turns(repl_on_the_double, fake_log):
    """A save holds the GIL for seconds: none after a reply (the idle save is minutes away here,
    as in the product, so only a save made per turn could show)."""
    saves_then = []

    async def note_saves():
        saves_then.append(len(fake_log.named("save_context")))

    code, chat = repl_on_the_double(["Capital of France?\r", note_saves, "Of Germany?\r", note_saves, "/quit\r"])
    assert code == 0
    assert [m["content"] for m in chat.messages[-2:]] == ["Of Germany?", "Berlin."]
    assert saves_then == [0, 0]


def test_one_save_when_the_chat_is_idle_and_not_again_without_a_new_turn(repl_on_the_double, fake_log):
    IDLE = 0.3  # seconds; the product's is two minutes
    saves_then = []

    async def note_saves():
        saves_then.append(len(fake_log.named("save_context")))

    async def idle_until_a_save():
        while not fake_log.named("save_context"):
            await asyncio.sleep(0.01)

    async def stay_idle():
        await asyncio.sleep(1.5 * IDLE)  # six idle checks (one each IDLE / 4); a slow machine makes fewer

    code, chat = repl_on_the_double(
        [
            "Capital of France?\r",
            lambda: asyncio.wait_for(idle_until_a_save(), 10),
            note_saves,
            stay_idle,
            note_saves,
            "/quit\r",
        ],
        idle_seconds=IDLE,
    )
    assert code == 0
    assert saves_then == [1, 1]  # one once idle; not again without a new turn


def test_save_keeps_the_device_context_beside_the_chat_and_says_so_first(repl_on_the_double, fake_log):
    said = io.StringIO()
    code, chat = repl_on_the_double(["Capital of France?\r", "/save\r", "/quit\r"], console=Console(said))
    assert code == 0
    assert len(fake_log.named("save_context")) == 1
    assert chat.store.context_path(chat.session_id).exists()
    assert f"[Info] {KEEPING_DEVICE_CONTEXT}" in said.getvalue()


def test_an_idle_save_says_so_before_it_and_a_message_sent_meanwhile_goes_after_it(repl_on_the_double, fake_log):
    """The save holds the GIL for seconds on a Pi: the line comes first, and a message entered
    while it runs is told why it waits, then sent."""
    said = io.StringIO()
    saving = threading.Event()
    real_keep = Chat.keep_device_context

    def slow_keep(self, notify=None):
        saving.set()
        time.sleep(0.5)  # the GIL is free here, so the line is read meanwhile, as after save_context returns
        real_keep(self, notify)

    async def idle_until_the_save_runs():
        while not saving.is_set():
            await asyncio.sleep(0.01)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Chat, "keep_device_context", slow_keep)
        code, chat = repl_on_the_double(
            [
                "Capital of France?\r",
                lambda: asyncio.wait_for(idle_until_the_save_runs(), 10),
                "Of Germany?\r",
                "/quit\r",
            ],
            idle_seconds=0.2,
            console=Console(said),
        )
    assert code == 0
    text = said.getvalue()
    assert text.index(KEEPING_DEVICE_CONTEXT) < text.index(SENT_AFTER_THE_SAVE)
    assert [m["content"] for m in chat.messages[-2:]] == ["Of Germany?", "Berlin."]  # sent after it
    names = [e["event"] for e in fake_log()]
    assert names.index("save_context") < names.index("generate", names.index("save_context"))


def test_switching_chats_with_resume_keeps_the_one_left(repl_on_the_double, fake_log):
    code, first = repl_on_the_double(["Capital of France?\r", "/quit\r"])
    assert fake_log.named("save_context") == []  # the Repl alone does not save at quit: the CLI does (below)
    code, chat = repl_on_the_double(["Of Germany?\r", f"/resume {first.session_id}\r", "/quit\r"])
    assert code == 0
    (save,) = fake_log.named("save_context")
    assert chat.session_id == first.session_id  # resumed; the chat left was saved before it
    assert chat.store.context_path([c.id for c in chat.store.chats() if c.id != first.session_id][0]).exists()


# ---- in a real terminal: keystrokes never wait on a save; the save comes at quit -------------------


@pytest.mark.e2e
def test_in_the_terminal_typing_after_a_reply_never_waits_on_a_save_and_quit_saves(
    isolated_home, double_terminal, fake_log, hailo_resources
):
    hef = hailo_resources.directory / f"{QWEN}.hef"
    # A device that has shown that loading a kept context beats reading it again.
    remember_device(hef, isolated_home / "data" / "hailo-repl" / "contexts" / "hailo-device-facts.json")
    # A context of 8 MB that takes 2 s to copy with the GIL held, as a real one takes seconds.
    term = double_terminal({"replies": [["Paris."]], "context_bytes": 8_000_000, "context_convert_ms_per_mb": 250})
    term.expect("You: ")
    term.send("Capital of France?\r")
    term.expect("Paris.")
    term.expect("You: ")
    term.send("typed at once")
    term.expect("typed at once")
    assert fake_log.named("save_context") == []  # the reply ended and the keys echoed: no save in between
    term.send("\x15/quit\r")  # Ctrl+U clears the line first
    term.expect(r"\[Info\] Keeping the device context for a quick resume")  # why the exit takes seconds
    term.expect(pexpect.EOF, timeout=60)
    term.child.close()
    assert term.child.exitstatus == 0
    # At quit: the chat's context, then the system prompt's (kept per HEF for new chats), then release.
    saves = fake_log.named("save_context")
    assert [(save["size"], save["convert_ms"]) for save in saves] == [(8_000_000, 2000)] * 2
    assert fake_log.names()[-4:] == ["save_context", "clear_context", "llm_release", "vdevice_release"]
    data = isolated_home / "data" / "hailo-repl"
    (chat_context,) = (data / "sessions").glob("*.ctx")
    (system_context,) = (data / "contexts").glob("*.ctx")
    assert chat_context.stat().st_size > 8_000_000 and system_context.stat().st_size > 8_000_000


def test_a_load_with_a_remembered_verdict_leaves_jinja2_for_the_first_prompt(hailo_resources, tmp_path):
    """jinja2 is imported when the template is first needed (a token count, a reply), not by the
    load before the first prompt (launch time)."""
    import subprocess
    import sys

    from terminal import FAKES

    hef = hailo_resources(QWEN) / f"{QWEN}.hef"
    program = f"""
import sys
sys.path.insert(0, {str(FAKES)!r})
from pathlib import Path
from hailo_repl.backends.hailo import HailoBackend
from hailo_repl.backends.hailo_device import installed_hailort_version
from hailo_repl.backends.hailo_selfcheck import DeviceFacts, device_key
hef, facts = Path({str(hef)!r}), Path({str(tmp_path / "facts.json")!r})
DeviceFacts(facts).remember(device_key(hef, installed_hailort_version()), "text_path", {{"passed": True}})
backend = HailoBackend(hef, facts_file=facts)
backend.load()
loaded = "jinja2" in sys.modules
backend.count_tokens([{{"role": "system", "content": "s"}}, {{"role": "user", "content": "u"}}])
print(loaded, "jinja2" in sys.modules)
backend.release()
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True"]


def test_a_self_check_that_could_not_run_is_not_remembered_as_failed(
    loaded_hailo_backend, hailo_resources, monkeypatch, log_lines
):
    """A device call failing once (the device busy, a timeout) must not keep a HEF off the text
    path for good: message lists this time, the check again at the next load."""
    import hailo_platform.genai
    from hailo_platform.pyhailort._pyhailort import HailoRTException

    def busy(self, text):
        raise HailoRTException("HAILO_TIMEOUT")

    with monkeypatch.context() as once:
        once.setattr(hailo_platform.genai.LLM, "tokenize", busy)
        loaded_hailo_backend({"replies": [["x"]]}, passed_self_check=False)
    assert any("FAILED" in line and "failed to run" in line for line in log_lines)
    assert DeviceFacts(hailo_resources.facts).entries() == {}

    loaded_hailo_backend({"replies": [["x"]]}, passed_self_check=False)
    (entry,) = DeviceFacts(hailo_resources.facts).entries().values()
    assert entry["text_path"]["passed"] is True


# ---- the self-check sees what the device holds, whitespace included ---------------------------------


@pytest.mark.parametrize("drift", ["\n", "\n\n", "  ", " (drift)"])
def test_a_device_that_renders_a_space_or_a_line_end_differently_fails_the_check(
    loaded_hailo_backend, hailo_resources, log_lines, drift
):
    """A newline more or less is one token either way in Qwen's and Llama's vocabularies (and in
    the double's): counting tokens cannot see it, comparing what the device holds does."""
    loaded_hailo_backend({"replies": [["x"]], "template_drift": drift}, passed_self_check=False)
    (verdict,) = [line for line in log_lines if line.startswith("self-check")]
    assert "FAILED" in verdict and "NOT the same as after the lists" in verdict, verdict
    (entry,) = DeviceFacts(hailo_resources.facts).entries().values()
    assert entry["text_path"]["passed"] is False


def test_a_device_whose_saved_context_varies_run_to_run_is_checked_by_counts_and_says_so(
    loaded_hailo_backend, hailo_resources, log_lines
):
    loaded_hailo_backend({"replies": [["x"]], "nondeterministic_context": True}, passed_self_check=False)
    (verdict,) = [line for line in log_lines if line.startswith("self-check")]
    assert "passed" in verdict and "compared token counts only" in verdict and "two identical runs" in verdict


def test_a_verdict_holds_for_the_renderer_it_was_reached_with(loaded_hailo_backend, hailo_resources, fake_log):
    """A new chat_template.py or jinja2 renders anew: the check runs again."""
    from hailo_repl.backends.hailo_device import installed_hailort_version
    from hailo_repl.backends.hailo_selfcheck import device_key

    hef = hailo_resources.directory / f"{QWEN}.hef"
    key = device_key(hef, installed_hailort_version())
    other_renderer = key.rsplit("| renderer ", 1)[0] + "| renderer 0123456789ab jinja2 3.0.0"
    DeviceFacts(hailo_resources.facts).remember(other_renderer, "text_path", {"passed": True, "detail": "then"})
    loaded_hailo_backend({"replies": [["x"]]}, passed_self_check=False)
    assert len(fake_log.named("prefill")) == 5  # checked again
    entries = DeviceFacts(hailo_resources.facts).entries()
    assert set(entries) == {other_renderer, key} and entries[key]["text_path"]["passed"] is True


def test_a_device_failing_at_the_checks_last_clear_gives_no_verdict_and_no_raw_error(
    loaded_hailo_backend, hailo_resources, monkeypatch, log_lines, fake_log
):
    import hailo_platform.genai
    from hailo_platform.pyhailort._pyhailort import HailoRTException

    real_clear = hailo_platform.genai.LLM.clear_context
    clears = []

    def fails_at_the_end(self):
        clears.append(1)
        if len(clears) == 4:  # the last: before the lists, the texts and the long text, then at the end
            raise HailoRTException("HAILO_INTERNAL_FAILURE")
        real_clear(self)

    with monkeypatch.context() as once:
        once.setattr(hailo_platform.genai.LLM, "clear_context", fails_at_the_end)
        backend = loaded_hailo_backend({"replies": [["x"]]}, passed_self_check=False)  # does not raise
    assert any("failed to run (clear_context: HAILO_INTERNAL_FAILURE)" in line for line in log_lines)
    assert DeviceFacts(hailo_resources.facts).entries() == {}  # no verdict: checked again next time
    chat = Chat(backend, SYSTEM, GenerationParams())
    reply(chat, "Hi")  # the context the check left is cleared first, and the whole chat sent as a list
    (last,) = fake_log.named("generate")
    assert last["held"] == "" and isinstance(last["prompt"], list)


def test_the_engine_says_it_is_busy_keeping_the_context_before_it_starts(loaded_hailo_backend, fake_log, tmp_path):
    """The save holds the GIL for seconds: a terminal hears it first (the engine's state event)."""
    from hailo_repl.engine.api import Busy, EngineState, ModelState

    backend = loaded_hailo_backend({"replies": [["Paris."]]})
    engine = LocalEngine(Chat(backend, SYSTEM, GenerationParams(), SessionStore(tmp_path / "sessions")))
    engine.model_state = ModelState.READY  # (the fixture loaded it)
    states = []
    engine.subscribe(lambda event: states.append(event) if isinstance(event, EngineState) else None)
    engine.run_turn("Capital of France?", lambda event: None)
    assert fake_log.named("save_context") == []
    engine.keep_context()
    assert len(fake_log.named("save_context")) == 1
    assert [state.busy for state in states] == [Busy.SAVING_CONTEXT, None]
    engine.keep_context()  # nothing changed since: nothing to do, nothing said
    assert len(fake_log.named("save_context")) == 1 and len(states) == 2


@pytest.mark.parametrize("case", ["a turn to keep", "nothing new", "the save fails"])
def test_quit_says_it_keeps_the_device_context_only_when_it_saves_and_again_when_that_failed(
    loaded_hailo_backend, fake_log, tmp_path, monkeypatch, case
):
    """The REPL's exit waits seconds on a Pi for the save, so quit says why: only when a save
    happens (not after a chat with nothing new), and one line more when it did not work."""
    import hailo_platform.genai

    from hailo_repl.chat import NOT_KEPT

    backend = loaded_hailo_backend({"replies": [["Paris."]]})
    engine = LocalEngine(Chat(backend, SYSTEM, GenerationParams(), SessionStore(tmp_path / "sessions")))
    engine.run_turn("Capital of France?", lambda event: None)
    if case == "nothing new":
        engine.keep_context()  # (/save kept it: nothing changed since)
    if case == "the save fails":

        def disk_full(self):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(hailo_platform.genai.LLM, "save_context", disk_full)
    saves_before = len(fake_log.named("save_context"))
    said: list[str] = []
    engine.quit(said.append)
    expected = {
        "a turn to keep": [KEEPING_DEVICE_CONTEXT],
        "nothing new": [],
        "the save fails": [KEEPING_DEVICE_CONTEXT, NOT_KEPT],
    }
    assert said == expected[case]
    assert len(fake_log.named("save_context")) == saves_before + (case == "a turn to keep")
    assert fake_log.names()[-1] == "vdevice_release"  # released whatever the save did
