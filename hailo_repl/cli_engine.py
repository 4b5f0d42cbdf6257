"""A chat from the command line through the engine process (settings `daemon`: auto for the
REPL, always for -p and pipes too): the model settled here (the picker, a download), the chat
opened in the user's engine process, and this process a terminal on it (hailo_repl.daemon)."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hailo_repl.cli_settings import EXIT_FAILURE, EXIT_OK, chat_failed
from hailo_repl.console import Console
from hailo_repl.settings import ResolvedSettings
from hailo_repl.startup import start_is_over

if TYPE_CHECKING:
    from hailo_repl.backends import BackendChoice
    from hailo_repl.daemon.protocol import OpenRequest
    from hailo_repl.engine.api import Engine
    from hailo_repl.sessions import SessionStore


def uses_engine_process(settings: ResolvedSettings, chatting: bool, choice: BackendChoice) -> bool:
    """Whether this chat runs in the engine process: `always`; with `auto` the REPL, and -p and
    pipes on the Hailo (the engine holds the device, and a script's second -p loads nothing)."""
    if settings["daemon"] != "auto":
        return bool(settings["daemon"] == "always")
    return chatting or on_the_hailo(choice)


def on_the_hailo(choice: BackendChoice) -> bool:
    """Whether the chat would run on the Hailo-10H, as far as this process can tell without
    opening it (auto: HailoRT installed, no GGUF asked for)."""
    import importlib.util

    if choice.backend == "hailo":
        return True
    return choice.backend == "auto" and not choice.gguf_path and importlib.util.find_spec("hailo_platform") is not None


def run_through_engine(
    args: argparse.Namespace,
    settings: ResolvedSettings,
    config_file: Path,
    choice: BackendChoice,
    store: SessionStore,
    notices: Console,
    interactive: bool,
    answer_inputs: Callable[[argparse.Namespace, Engine, ResolvedSettings, Console], int],
) -> int:
    """The chat the flags ask for, in the engine process, to its end here; the exit code.
    `answer_inputs` answers -p's message or a pipe's (cli_chat's, as for a chat in process)."""
    from hailo_repl.backends import resolve_choice
    from hailo_repl.daemon.client import EngineProcess, backend_named, model_named
    from hailo_repl.dialogs import choose_model, download_with_progress
    from hailo_repl.engine.api import EngineNotice
    from hailo_repl.settings import GENERATION_SETTINGS

    chatting = interactive and args.prompt is None
    engine: EngineProcess | None = None
    try:
        resolved = resolve_choice(
            choice, notices.say, choose_model if interactive else None, download_with_progress(notices.say)
        )
        # -c and --resume take the chat over from another terminal (an SSH drop can leave one
        # connected for hours); a plain start, -p and a pipe never do.
        chat, take_over = "new", False
        if getattr(args, "continue"):
            chat, take_over = "latest", chatting
        elif args.resume is not None:
            chat, take_over = store.find(args.resume).id, chatting

        def request() -> OpenRequest:  # (made when sent: the wire's modules load after the first frame)
            from hailo_repl.engine.socket_client import open_request

            return open_request(resolved, settings.values, chat, take_over, chatting)

        params = {setting.name: settings[setting.name] for setting in GENERATION_SETTINGS}
        model, backend = model_named(resolved), backend_named(resolved)
        engine = EngineProcess(
            request, model, backend, params, settings["keep-alive"], settings["history"], chatting, notices.say
        )
        if chatting:
            from hailo_repl.app import run_repl

            return run_repl(engine, settings, config_file, store=store)  # its first frame ends the start
        start_is_over()
        engine.subscribe(lambda event: notices.say(event.line) if isinstance(event, EngineNotice) else None)
        engine.load()
        for line in engine.opened.lines if engine.opened else []:  # ("No Hailo device found; using llama.cpp …")
            notices.say(line)
        code = answer_inputs(args, engine, settings, notices)
        if code == EXIT_OK and engine.gone is not None:  # the engine stopped under the reply (kept interrupted)
            notices.say(engine.gone)
            return EXIT_FAILURE
        return code
    except KeyboardInterrupt:
        notices.say("Interrupted.")
        return 130
    except BrokenPipeError:  # the reader went away, not a bug: main() ends the run quietly
        raise
    except Exception as error:
        return chat_failed(error, notices)
    finally:
        if engine is not None:
            with contextlib.suppress(OSError):
                engine.detach()  # the chat stays in the engine process (keep-alive)
