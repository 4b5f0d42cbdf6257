"""What is imported before the first prompt, in a fresh interpreter (not timed: the import rule
behind a fast start; benchmarks/bench_repl.py --only c measures the start itself).

A chat's first prompt needs prompt_toolkit and hailo-repl's own modules, nothing else: the
doctor, httpx and the remote backends, jinja2, loguru (loaded at the first log message),
pyyaml (only with a config file), pygments (at the first code block) and importlib.metadata
would each add to the time before the prompt shows. A terminal on the engine process needs
less still: the chat, the backends and the wire are the engine's, or come after the first frame.
Each module costs about 0.1 ms to find and load besides what its body runs, so a module that
is not needed yet is left for later.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from terminal import with_fakes

NOT_BEFORE_THE_FIRST_PROMPT = [
    "hailo_repl.doctor",
    "hailo_repl.clipboard",
    "hailo_repl.backends.remote",
    "hailo_repl.backends.ollama",
    "hailo_repl.backends.openai",
    "httpx",
    "jinja2",
    "loguru",
    "yaml",
    "pygments",
    "importlib.metadata",
    "urllib.request",
    "json",  # ~2 ms: at the first save or listing
    "hailo_repl.instance_lock",  # ~0.5 ms: a chat on the CPU holds no device, so the lock file waits for a hang-up
    "hailo_repl.stats",  # ~0.4 ms: at the first reply
    "unicodedata",  # ~0.3 ms: at the first unprintable text to clean (streaming.terminal_safe)
]
# What a terminal on the engine process (settings `daemon`) leaves to the engine, or to after
# its first frame (the wire: daemon.client connects once the prompt is up).
NOT_BEFORE_THE_FIRST_PROMPT_ON_THE_ENGINE = [
    "hailo_repl.chat",
    "hailo_repl.engine.local",
    "hailo_repl.backends",
    "hailo_repl.models",
    "hailo_repl.dialogs",
    "hailo_repl.engine.socket_client",
    "hailo_repl.daemon.protocol",
    "hailo_repl.daemon.spawn",
]

# main() as `hailo-repl --backend llama` runs it at a terminal, up to the REPL built as its first
# frame needs it; the REPL's own loop (and the model's load, which it starts) is left out.
UP_TO_THE_FIRST_PROMPT = """
import sys
import hailo_repl.app as app
from hailo_repl.cli import main

def build_the_repl(engine, settings, config_file, resumed=None, store=None):
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput
    from prompt_toolkit.application import create_app_session
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
        app.Repl(engine, settings["history"], settings["verbose"], settings=settings.values, config_file=config_file)
    print(" ".join(sorted(sys.modules)))  # (not json: it is among what is checked)
    return 0

app.run_repl = build_the_repl
sys.stdin.isatty = sys.stdout.isatty = lambda: True  # as at a terminal
sys.exit(main(sys.argv[1:]))
"""

# main() as `hailo-repl` runs it at a terminal, up to the REPL's first frame (a pipe for its
# keys, no screen); the process ends there, before what the first frame lets go on (the model's
# load, an engine process started).
TO_THE_FIRST_FRAME = """
import os
import sys
import hailo_repl.app as app
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from hailo_repl.cli import main

def at_the_first_frame(repl):
    print(" ".join(sorted(sys.modules)), flush=True)  # (not json: it is among what is checked)
    os._exit(0)

app.Repl._first_frame = at_the_first_frame
sys.stdin.isatty = sys.stdout.isatty = lambda: True  # as at a terminal
with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
    main(sys.argv[1:])
sys.exit("the REPL ended before its first frame")
"""

# The installed command's entry point, as shell completion runs it.
QUICK_ANSWER = """
import sys
from hailo_repl.entry import main
sys.argv[0] = "hailo-repl"
main()
print(" ".join(sorted(sys.modules)))  # (not json: it is among what is checked)
"""


def modules_imported(script: str, *args: str, env: dict[str, str] | None = None) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env or dict(os.environ), timeout=60
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.splitlines()[-1].split())


def loaded(modules: set[str], names: list[str]) -> list[str]:
    return [name for name in names if name in modules]


def test_the_first_prompt_of_a_chat_imports_only_what_it_needs(isolated_home):
    modules = modules_imported(TO_THE_FIRST_FRAME, "--backend", "llama", "--daemon", "never")

    assert "hailo_repl.app" in modules and "hailo_repl.backends.llama" in modules  # it did get that far
    assert loaded(modules, NOT_BEFORE_THE_FIRST_PROMPT) == []
    assert "llama_cpp" not in modules  # the model loads behind the prompt


@pytest.mark.parametrize("daemon", ["auto", "always"])
def test_a_terminal_on_the_engine_process_imports_no_chat_before_its_first_frame(isolated_home, daemon):
    """No engine process runs here: it is started after the first frame (which ends this run)."""
    modules = modules_imported(TO_THE_FIRST_FRAME, "--backend", "llama", "--daemon", daemon)

    assert "hailo_repl.app" in modules and "hailo_repl.daemon.client" in modules  # it did get that far
    assert loaded(modules, NOT_BEFORE_THE_FIRST_PROMPT + NOT_BEFORE_THE_FIRST_PROMPT_ON_THE_ENGINE) == []


# As UP_TO_THE_FIRST_PROMPT, for the Hailo backend, whose model loads before the first prompt.
UP_TO_THE_FIRST_HAILO_PROMPT = UP_TO_THE_FIRST_PROMPT.replace("    print(", "    engine.load()\n    print(", 1)


def test_the_first_prompt_on_the_hailo_device_compiles_no_chat_template(isolated_home, hailo_resources):
    """jinja2 comes with the first prompt sent as text (or the self-check, once per HEF), not before."""
    hailo_resources("Qwen2.5-1.5B-Instruct")
    arguments = ("--backend", "hailo")
    first_use = modules_imported(UP_TO_THE_FIRST_HAILO_PROMPT, *arguments, env=with_fakes())
    assert "jinja2" in first_use  # the self-check compiled the HEF's template, and remembered its verdict
    modules = modules_imported(UP_TO_THE_FIRST_HAILO_PROMPT, *arguments, env=with_fakes())

    assert "hailo_repl.backends.hailo" in modules and "hailo_platform.genai" in modules  # it did get that far
    assert loaded(modules, ["jinja2", "hailo_repl.doctor", "httpx", "yaml", "pygments"]) == []


def test_the_quiet_model_list_for_completion_imports_nothing_a_bare_interpreter_has_not(isolated_home, hailo_resources):
    """Each Tab after --hef-path runs it, so it should start as a bare interpreter does: no chat, no
    command line, not even pathlib or typing (hailo_repl.model_names uses os alone)."""
    hailo_resources("Qwen2.5-1.5B-Instruct")
    modules = modules_imported(QUICK_ANSWER, "--list-models", "-q")
    bare = modules_imported('import sys; print(" ".join(sorted(sys.modules)))')

    assert "hailo_repl.model_names" in modules  # it did get that far
    own = {"hailo_repl", "hailo_repl.entry", "hailo_repl.startup", "hailo_repl.model_names"}  # os, sys and gc alone
    assert modules - bare <= own | {"gc", "__future__"}


# The collector is off while the start runs (hailo_repl.entry) and must come back, with what the
# start made frozen out of later collections: a chat that ran without it would keep every
# reference cycle it makes until it ends. Each script starts the command in a fresh interpreter,
# as a shell does, and notes the collector's state at points of the run ("at the reply: on").
COLLECTOR = """
import gc, sys
from hailo_repl.chat import Chat
from hailo_repl.entry import main

def state():
    return "on, start frozen" if gc.isenabled() and gc.get_freeze_count() else "on" if gc.isenabled() else "off"

def noting(label, function):
    def noted(*args, **kwargs):
        print(f"at the {label}: {state()}")
        return function(*args, **kwargs)
    return noted

Chat.__init__ = noting("start", Chat.__init__)
Chat.reply = noting("reply", Chat.reply)
sys.argv = ["hailo-repl", *sys.argv[1:]]
"""
AT_A_TERMINAL = """
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

sys.stdin.isatty = sys.stdout.isatty = lambda: True
with create_pipe_input() as pipe, create_app_session(input=pipe, output=DummyOutput()):
    pipe.send_text("hi\\r")
    pipe.send_text("/quit\\r")
    main()
"""
# The REPL's first prompt ends the start where the model loads behind it (llama.cpp, a server):
# the double's backend is told it loads so, which spares loading llama.cpp here.
BEHIND_THE_PROMPT = """
from hailo_repl.backends.hailo import HailoBackend
HailoBackend.loads_in_background = True
"""
# A model that loads before the prompt (the Hailo's) takes seconds: the start ends before it.
BEFORE_THE_PROMPT = """
from hailo_repl.backends.hailo import HailoBackend
HailoBackend.load = noting("load", HailoBackend.load)
"""
# The doctor, as one subcommand.
IN_A_SUBCOMMAND = """
from hailo_repl import doctor
doctor.main = noting("subcommand", lambda arguments: 0)
"""
# A registered model not downloaded yet is fetched before the chat starts: minutes of work. The
# download is the zoo's file written where it goes (no server: what is checked is the collector).
IN_A_DOWNLOAD = """
import hailo_repl.models as models

def fetched(name, directory, report=None):
    path = directory / f"{name}.hef"
    path.write_bytes(b"HEF")
    return path

models.download_model = noting("download", fetched)
"""
# Several models and no --hef-path at a terminal: the picker asks which (the first is chosen).
IN_THE_PICKER = """
import prompt_toolkit.shortcuts
prompt_toolkit.shortcuts.choice = noting("picker", lambda message, options: options[0][0])
"""
REPL = ["--backend", "hailo", "--no-history"]
PROMPT = [*REPL, "-p", "hi"]
STARTED = "at the start: off"
ON = "on, start frozen"


QWEN, LLAMA = "Qwen2.5-1.5B-Instruct", "Llama-3.2-3B-Instruct"


@pytest.mark.parametrize(
    ("script", "arguments", "environment", "installed", "noted_then"),
    [
        (BEHIND_THE_PROMPT + AT_A_TERMINAL, REPL, {}, [QWEN], [STARTED, f"at the reply: {ON}"]),
        (BEHIND_THE_PROMPT + AT_A_TERMINAL, REPL, {"TERM": "dumb"}, [QWEN], [STARTED, f"at the reply: {ON}"]),
        (BEFORE_THE_PROMPT + AT_A_TERMINAL, REPL, {}, [QWEN], [STARTED, f"at the load: {ON}", f"at the reply: {ON}"]),
        ("main()", PROMPT, {}, [QWEN], [STARTED, f"at the reply: {ON}"]),
        (IN_A_SUBCOMMAND + "main()", ["doctor"], {}, [QWEN], [f"at the subcommand: {ON}"]),
        (
            IN_A_DOWNLOAD + "main()",
            ["--hef-path", "Qwen2.5-Coder-1.5B-Instruct", *PROMPT],
            {},
            [QWEN],
            [f"at the download: {ON}"],
        ),
        (IN_THE_PICKER + AT_A_TERMINAL, REPL, {}, [QWEN, LLAMA], [f"at the picker: {ON}"]),
    ],
    ids=["repl", "repl-term-dumb", "repl-model-loaded-first", "prompt", "subcommand", "download", "picker"],
)
def test_the_garbage_collector_is_off_for_the_start_and_on_for_the_chat(
    isolated_home, hailo_resources, script, arguments, environment, installed, noted_then
):
    for name in installed:
        hailo_resources(name)
    result = subprocess.run(
        [sys.executable, "-c", COLLECTOR + script, *arguments],
        capture_output=True,
        text=True,
        env=with_fakes({**os.environ, **environment}),
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    noted = re.findall(r"at the \w+: (?:on, start frozen|on|off)", result.stdout)  # (the REPL's lines carry codes)
    assert noted[: len(noted_then)] == noted_then, result.stdout
