"""A chat from the command line: the backend opened and the engine made over it, then the REPL
at a terminal, or one message (-p), or one a line from a pipe, each reply to stdout; and the
listings (--list-models, --list-chats)."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from hailo_repl.cli_settings import EXIT_FAILURE, EXIT_OK, chat_failed, settings_in_effect
from hailo_repl.config import device_contexts_dir, instance_lock_file, sessions_dir
from hailo_repl.config_file import ConfigFileError
from hailo_repl.console import Console
from hailo_repl.log import logger, setup_logging
from hailo_repl.servers import REMOTE_BACKENDS
from hailo_repl.settings import GENERATION_SETTINGS, ResolvedSettings, SettingError
from hailo_repl.startup import start_is_over
from hailo_repl.wrap import WordWrap

# The chat's own modules (backends, chat, engine, saved chats, signals) are imported where they are
# used, so the quick answers (--show-config, --help) start about as fast as a bare interpreter, and
# the doctor, httpx and jinja2 stay out of a chat.
if TYPE_CHECKING:
    from hailo_repl.backend_choice import BackendChoice
    from hailo_repl.backends.base import Backend
    from hailo_repl.backends.hailo_keeping import KeepingPolicy
    from hailo_repl.engine.api import Engine, TurnCompleted, TurnEvent
    from hailo_repl.instance_lock import InstanceLock
    from hailo_repl.sessions import ChatSummary, SessionStore
    from hailo_repl.signals import HangUp


def print_server_models(choice: BackendChoice) -> None:
    from hailo_repl.backends import remote_backend

    backend = remote_backend(choice)
    try:
        print(f"Models on {backend.endpoint.url} ({backend.name}):")
        for name in backend.list_models():
            print(name)
    finally:
        backend.release()


def print_model_list() -> None:
    from hailo_repl.models import list_models, models_dir

    print(f"Models directory: {models_dir()}")
    for row in list_models():
        state = "installed" if row.path else "not downloaded"
        tag = "registered" if row.registered else "found"
        where = f"  {row.path}" if row.path else ""
        print(f"{row.name:<32} {row.kind:<5} {tag:<10} {state}{where}")


def run_turn(
    engine: Engine, text: str, notices: Console, verbose: bool, wrap: bool = False, hang_up: HangUp | None = None
) -> TurnCompleted:
    """Stream one reply to stdout (word-wrapped with `wrap`); the timing block goes to stderr with --verbose.
    The turn runs on this thread: SIGTERM's SystemExit or Ctrl+C ends it there, the reply kept
    interrupted, before the backend is released. A hang-up (`hang_up`: SIGHUP, or EIO writing to
    the terminal) does not: the reply runs to its end, its writes dropped, and is saved whole."""
    from hailo_repl.engine.api import TurnCompleted, TurnEnd, TurnNotice, TurnText

    wrote = told = False
    wrapper = WordWrap(lambda: shutil.get_terminal_size().columns) if wrap else None

    def write(fd: int, what: Callable[[], None]) -> None:
        try:
            what()
        except OSError as error:
            if hang_up is None or not hang_up.at(error, fd):
                raise

    def out(text: str) -> None:
        def to_stdout() -> None:
            sys.stdout.write(text)
            sys.stdout.flush()

        write(1, to_stdout)

    def say(line: str) -> None:
        write(2, lambda: notices.say(line))

    def end_the_reply() -> None:  # at its TurnCompleted: before the save, which may wait seconds for a lock
        nonlocal wrote
        if wrote:
            out((wrapper.flush() if wrapper else "") + "\n")
            wrote = False

    def show(event: TurnEvent) -> None:
        nonlocal wrote, told
        if hang_up is not None and hang_up.happened and not told:  # (not in the signal's handler: it takes locks)
            told = True
            logger.info("the terminal hung up during a reply: it runs to its end, then the run ends")
            engine.hang_up()  # a new hailo-repl resuming the chat waits for it (the lock file)
        if isinstance(event, TurnText):
            out(wrapper.feed(event.text) if wrapper else event.text)
            wrote = True
        elif isinstance(event, TurnNotice):
            if wrote:  # the words the wrap holds first: the line never lands inside the reply
                out(wrapper.feed("\n") if wrapper else "\n")
            say(event.line)
        elif isinstance(event, TurnCompleted):
            end_the_reply()

    try:
        completed = engine.run_turn(text, show)
    finally:
        end_the_reply()
    if verbose and completed.reason is not TurnEnd.ERROR and completed.stats is not None:
        say(completed.stats.verbose_block())
    return completed


def say_to(notices: Console) -> Callable[[str], None]:
    """An [Info] line to `notices`, or none once the terminal is gone (a hang-up's EIO)."""

    def say(line: str) -> None:
        with contextlib.suppress(OSError):
            notices.info(line)

    return say


# Characters of stdin read as one message (-p, --single, a line): far more than any context holds,
# and a stop for a pipe that pours without end (`yes | hailo-repl -p …`), which would fill the memory.
STDIN_MESSAGE_LIMIT = 4_000_000


def messages_from_stdin(single: bool) -> Iterator[str]:
    # Bytes that are not UTF-8 pass as lone surrogates; Chat.reply replaces them and says so.
    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(errors="surrogateescape")
    read = sys.stdin.read if single else sys.stdin.readline
    while text := read(STDIN_MESSAGE_LIMIT + 1):
        if len(text) > STDIN_MESSAGE_LIMIT:
            from hailo_repl.context import ContextOverflowError

            raise ContextOverflowError(
                f"stdin holds a message of more than {STDIN_MESSAGE_LIMIT // 1_000_000} million characters, "
                "far more than the context holds; it was not sent"
            )
        if text.strip():
            yield text.strip() if single else text.rstrip("\n")


def with_piped_input(prompt: str) -> str:
    """-p's message: what a pipe or a file on stdin holds, then the prompt, as `llm` and
    `ollama run` take `git diff | hailo-repl -p "review this"` (a blank line between them)."""
    if sys.stdin.isatty() or not sys.stdin.readable():
        return prompt
    piped = next(messages_from_stdin(single=True), "")
    return f"{piped}\n\n{prompt}" if piped else prompt


def answer_inputs(args: argparse.Namespace, engine: Engine, settings: ResolvedSettings, notices: Console) -> int:
    """-p's message, or each one from a pipe, answered on stdout (the engine loaded); the exit code."""
    import signal

    from hailo_repl.engine.api import TurnEnd
    from hailo_repl.signals import HangUp

    inputs = [with_piped_input(args.prompt)] if args.prompt is not None else messages_from_stdin(args.single)
    hang_up = HangUp()
    for text in inputs:
        wrap = settings["word-wrap"] and sys.stdout.isatty()  # a pipe or a file gets the reply as it came
        with hang_up.finishing():
            completed = run_turn(engine, text, notices, settings["verbose"], wrap, hang_up)
        if hang_up.happened:  # the reply ran to its end and is saved: the run ends, as at SIGHUP
            return 128 + signal.SIGHUP
        if completed.reason is TurnEnd.ERROR:
            notices.fatal(completed.error or "the reply failed")
            return EXIT_FAILURE
    return EXIT_FAILURE if engine.status().unsaved else EXIT_OK  # (its [Error] line said why)


def settings_and_backend(args: argparse.Namespace) -> tuple[ResolvedSettings, Path, BackendChoice] | None:
    """The settings in effect, the config file they read and the backend they pick (a chat's and
    the doctor's); None once one line on stderr has named a value not allowed (the caller exits 2)."""
    try:
        settings, config_file = settings_in_effect(args)
        return settings, config_file, backend_choice(settings, args.api_key)
    except (ConfigFileError, SettingError) as error:
        Console(sys.stderr).fatal(str(error))
        return None


def backend_choice(settings: ResolvedSettings, api_key: str | None) -> BackendChoice:
    """The backend the settings ask for; SettingError (one line, exit 2) for a setting that
    does not fit it."""
    from hailo_repl.backend_choice import BackendChoice

    backend = settings["backend"]

    def where(name: str) -> str:
        return f"{name} ({settings.origins[name]})"

    if backend in REMOTE_BACKENDS:
        if settings["hef-path"]:
            raise SettingError(f"{where('hef-path')}: a HEF runs on the Hailo backend, not with backend {backend}")
        return BackendChoice(
            backend=backend,
            model_name=settings["model"],
            url=settings["url"],
            api_key=api_key,
            context_size=settings["context-size"],
            environ=os.environ,
        )
    for name in ("url", "context-size"):  # from a config file they may wait for a remote backend
        if settings[name] is not None and settings.origins[name] == "flag":
            raise SettingError(f"{where(name)}: needs backend ollama, hailo-ollama or openai")
    if api_key is not None:
        raise SettingError("api-key (flag): needs backend ollama, hailo-ollama or openai")
    model = settings["model"]
    if model is None:
        return BackendChoice(backend=backend, hef_path=settings["hef-path"])
    if backend == "hailo":
        raise SettingError(
            f"{where('model')}: a GGUF model runs on the llama backend, not with backend hailo "
            f"({settings.origins['backend']})"
        )
    if not model.strip():
        raise SettingError(f"{where('model')}: needs the path of a .gguf file (or a server's model name)")
    from hailo_repl.models import check_gguf

    gguf_path = Path(model).expanduser()
    try:
        check_gguf(gguf_path)
    except ValueError as error:
        raise SettingError(f"{where('model')}: {error}") from None
    return BackendChoice(backend=backend, hef_path=settings["hef-path"], gguf_path=gguf_path)


def print_chat_list(store: SessionStore) -> None:
    chats = store.chats()
    if not chats:
        print(f"No saved chats in {store.directory}")
    for chat in chats:
        print(chat.line())


def chat_asked_for(args: argparse.Namespace) -> str | None:
    """The chat -c or --resume asks for, before it is found: '' for the latest (any chat), the
    id or its beginning, or None for a new chat."""
    return "" if getattr(args, "continue") else args.resume


def chat_to_resume(args: argparse.Namespace, store: SessionStore) -> ChatSummary | None:
    """The saved chat -c or --resume names (SessionNotFoundError if none or several match)."""
    if getattr(args, "continue"):
        return store.latest()
    if args.resume is not None:
        return store.find(args.resume)
    return None


def run_chat(args: argparse.Namespace, settings: ResolvedSettings, config_file: Path, choice: BackendChoice) -> int:
    """The chat the flags ask for (or a listing), to its end; the exit code."""
    notices = Console(sys.stderr)  # stdout carries only replies
    if not settings["word-wrap"]:
        from hailo_repl.console import no_wrap

        notices.wrap_width = no_wrap
    from hailo_repl.sessions import SessionStore
    from hailo_repl.signals import exit_on_termination, signals_held

    setup_logging(to_file=settings["history"])  # --no-history: nothing of the chat on disk
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    chatting = interactive and args.prompt is None  # the REPL: -p and pipes keep no device context

    def keeping() -> KeepingPolicy:
        # Asked only when the Hailo backend opens: its module (two frozen dataclasses) cost ~2 ms of
        # every start, a CPU chat's included.
        from hailo_repl.backends.hailo_keeping import keeping_policy

        return keeping_policy(settings.values, chatting, sessions_dir(), device_contexts_dir())

    choice = choice._replace(context_cache=device_contexts_dir() if settings["history"] else None, keeping=keeping)
    if args.list_models and choice.backend in REMOTE_BACKENDS:
        from hailo_repl.backends.base import BackendError

        try:
            print_server_models(choice)
        except BackendError as error:
            notices.fatal(str(error))
            return EXIT_FAILURE
        return EXIT_OK
    if args.list_models:
        print_model_list()
        return EXIT_OK
    store = SessionStore(sessions_dir(), writable=settings["history"])
    if args.list_chats:
        print_chat_list(store)
        return EXIT_OK
    exit_on_termination()
    from hailo_repl.cli_engine import run_through_engine, uses_engine_process

    if uses_engine_process(settings, chatting, choice):
        return run_through_engine(args, settings, config_file, choice, store, notices, interactive, answer_inputs)
    # The chat in this process (not imported at the top: see there; nor before the engine process
    # is ruled out, whose terminal needs none of them before its first frame).
    from hailo_repl.backends import open_backend
    from hailo_repl.backends.base import GenerationParams
    from hailo_repl.chat import Chat
    from hailo_repl.dialogs import choose_model, download_with_progress
    from hailo_repl.engine.local import LocalEngine

    backend: Backend | None = None
    engine: LocalEngine | None = None
    holds = settings["history"]  # --no-history writes nothing, the lock file included: it only waits
    lock: InstanceLock | None = None  # made once needed: most chats on the CPU never need it

    def instance_lock() -> InstanceLock:
        nonlocal lock
        if lock is None:
            from hailo_repl.instance_lock import InstanceLock

            lock = InstanceLock(instance_lock_file())
        return lock

    def claim_hailo() -> None:
        from hailo_repl.instance_lock import HAILO

        instance_lock().take(HAILO, say=notices.info, register=holds)

    def finishing(chat_id: str) -> None:  # the terminal hung up mid-reply: the engine finishes it
        if holds:
            instance_lock().finishing(chat_id)

    try:
        if chat_asked_for(args) is not None:  # a reply that a hung-up process finishes there: resume it whole
            instance_lock().take(None, chat_asked_for(args), notices.info, register=False)
        resumed = chat_to_resume(args, store)
        backend = open_backend(
            choice,
            notify=notices.say,
            choose_model=choose_model if interactive else None,
            download=download_with_progress(notices.say),
            claim_hailo=claim_hailo,
        )
        if lock is not None and backend.name != "hailo":  # auto went on with llama.cpp
            lock.release()
        params = GenerationParams(**{setting.attribute: settings[setting.name] for setting in GENERATION_SETTINGS})
        engine = LocalEngine(Chat(backend, settings["system-prompt"], params, store), on_hang_up=finishing)
        if resumed is not None:
            engine.resume(resumed.id)
        if args.prompt is None and interactive:
            from hailo_repl.app import run_repl

            return run_repl(
                engine, settings, config_file, resumed=resumed, store=store
            )  # its first frame ends the start
        start_is_over()
        if resumed is not None:
            notices.say(f"Continuing chat {resumed.id} ({resumed.turns} turns, {resumed.model}).")
        engine.load()
        return answer_inputs(args, engine, settings, notices)
    except KeyboardInterrupt:
        notices.say("Interrupted.")
        return 130
    except BrokenPipeError:  # the reader went away, not a bug: main() ends the run quietly
        raise
    except Exception as error:
        return chat_failed(error, notices)
    finally:
        if backend is not None:
            with signals_held():  # SIGTERM and SIGHUP too: the device context is kept if there is time
                if engine is None:
                    backend.release()
                else:  # the REPL says why its exit waits (seconds on a Pi)
                    engine.quit(say_to(notices) if chatting else None)  # (the model /model switched to, if it did)
        if lock is not None:
            lock.release()  # once the device is free: a process waiting for it opens it next
