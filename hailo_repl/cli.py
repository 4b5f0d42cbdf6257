"""Command line: flags, backend choice, one-shot and line-by-line modes, exit codes."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from loguru import logger

from hailo_repl import __version__
from hailo_repl.backends import BackendChoice, open_backend
from hailo_repl.backends.base import Backend, BackendError, GenerationParams
from hailo_repl.chat import DEFAULT_SYSTEM_PROMPT, Chat
from hailo_repl.config import log_file, sessions_dir, setup_logging
from hailo_repl.console import Console
from hailo_repl.context import ContextOverflowError
from hailo_repl.conversation import ConversationFileError
from hailo_repl.dialogs import choose_model, download_with_progress
from hailo_repl.models import ModelNotFoundError, check_gguf, list_models, models_dir
from hailo_repl.sessions import ChatSummary, SessionNotFoundError, SessionStore
from hailo_repl.settings import (
    DISPLAY_SETTINGS,
    GENERATION_SETTINGS,
    DisplaySettings,
    NumberSetting,
    SettingError,
)
from hailo_repl.signals import exit_on_termination, signals_held
from hailo_repl.wrap import WordWrap

EXIT_OK = 0
EXIT_FAILURE = 1

# `hailo-repl NAME ARGS…`: commands other than the chat, each with its own parser.
# A name here is tried before the chat's flags are parsed.
SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {}


def _setting_type(setting: NumberSetting) -> Callable[[str], float | int]:
    """argparse's type= for a setting: its parse, with the range in the error."""

    def parse(text: str) -> float | int:
        try:
            return setting.parse(text)
        except SettingError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _gguf_file(value: str) -> Path:
    path = Path(value).expanduser()
    try:
        check_gguf(path)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hailo-repl",
        description="Chat with an LLM on the Hailo-10H, or on the CPU with llama.cpp when no Hailo device is present.",
    )
    parser.add_argument(
        "--hef-path",
        help="HEF model: a path, a file name, or a model name such as Qwen2.5-1.5B-Instruct "
        "(default: pick among downloaded models)",
    )
    for setting in GENERATION_SETTINGS:
        default = "the backend's" if setting.default is None else "%(default)s"
        parser.add_argument(
            f"--{setting.name}",
            type=_setting_type(setting),
            default=setting.default,
            help=f"{setting.help}; {setting.allowed} (default: {default})",
        )
    parser.add_argument(
        "--system-prompt", default=DEFAULT_SYSTEM_PROMPT, help='the model\'s instructions (default: "%(default)s")'
    )
    parser.add_argument(
        "--backend",
        choices=["auto", "hailo", "llama"],
        default="auto",
        help="where the model runs (default: %(default)s: hailo when a device opens, else llama)",
    )
    parser.add_argument(
        "--model",
        type=_gguf_file,
        metavar="PATH.gguf",
        help="a GGUF model for the llama backend (default: the bundled SmolLM2-135M-Instruct)",
    )
    parser.add_argument("--list-models", action="store_true", help="list installed and registered models, then exit")
    parser.add_argument("-p", "--prompt", help="send one message, print the reply, and exit")
    parser.add_argument("--single", action="store_true", help="with piped input, send all of it as one message")
    # Saved chats and display (issue 9)
    saved = parser.add_argument_group("saved chats", f"every chat is saved after each turn in {sessions_dir()}")
    resume = saved.add_mutually_exclusive_group()
    resume.add_argument("-c", "--continue", action="store_true", help="continue the most recent chat")
    resume.add_argument("--resume", metavar="ID", help="continue the chat with this id (a prefix is enough)")
    saved.add_argument("--list-chats", action="store_true", help="list the saved chats, the newest first, then exit")
    saved.add_argument(
        "--no-history",
        action="store_true",
        help="write nothing of this chat to disk: no session file, no input history, no log file "
        "(also HAILO_REPL_NOHISTORY=1)",
    )
    display = parser.add_argument_group("display")
    for switch in DISPLAY_SETTINGS:
        display.add_argument(
            f"--{switch.name}",
            action=argparse.BooleanOptionalAction,
            default=switch.default,
            help=f"{switch.help} (default: {'on' if switch.default else 'off'})",
        )
    parser.add_argument(
        "--verbose", action="store_true", help="print timings after each reply, and warnings from the log"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def print_model_list() -> None:
    print(f"Models directory: {models_dir()}")
    for row in list_models():
        state = "installed" if row.path else "not downloaded"
        tag = "registered" if row.registered else "found"
        where = f"  {row.path}" if row.path else ""
        print(f"{row.name:<32} {row.kind:<5} {tag:<10} {state}{where}")


def run_turn(
    chat: Chat, text: str, notices: Console, verbose: bool, load_seconds: float = 0.0, wrap: bool = False
) -> None:
    """Stream one reply to stdout (word-wrapped with `wrap`); the timing block goes to stderr with --verbose."""
    cancel = threading.Event()
    wrote = False
    wrapper = WordWrap(lambda: shutil.get_terminal_size().columns) if wrap else None
    # closing(): on SIGTERM the reply is closed here, so the device's generation ends
    # before the backend is released.
    try:
        with contextlib.closing(chat.reply(text, cancel, notify=notices.say)) as pieces:
            for piece in pieces:
                sys.stdout.write(wrapper.feed(piece) if wrapper else piece)
                sys.stdout.flush()
                wrote = True
    finally:
        if wrote:
            sys.stdout.write((wrapper.flush() if wrapper else "") + "\n")
            sys.stdout.flush()
    if verbose and chat.last_stats:
        chat.last_stats.load = load_seconds
        notices.say(chat.last_stats.verbose_block())


def messages_from_stdin(single: bool) -> Iterator[str]:
    if single:
        text = sys.stdin.read().strip()
        if text:
            yield text
        return
    for line in sys.stdin:
        if line.strip():
            yield line.rstrip("\n")


def history_enabled(args: argparse.Namespace) -> bool:
    return not args.no_history and os.environ.get("HAILO_REPL_NOHISTORY", "") in ("", "0")


def print_chat_list(store: SessionStore) -> None:
    chats = store.chats()
    if not chats:
        print(f"No saved chats in {store.directory}")
    for chat in chats:
        print(chat.line())


def chat_to_resume(args: argparse.Namespace, store: SessionStore) -> ChatSummary | None:
    """The saved chat -c or --resume names (SessionNotFoundError if none or several match)."""
    if getattr(args, "continue"):
        return store.latest()
    if args.resume is not None:
        return store.find(args.resume)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in SUBCOMMANDS:
        return SUBCOMMANDS[arguments[0]](arguments[1:])
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.backend == "hailo" and args.model:
        parser.error("argument --model: a GGUF model runs on the llama backend, not with --backend hailo")
    history = history_enabled(args)
    setup_logging(args.verbose, to_file=history)
    if args.list_models:
        print_model_list()
        return EXIT_OK
    store = SessionStore(sessions_dir(), writable=history)
    if args.list_chats:
        print_chat_list(store)
        return EXIT_OK
    exit_on_termination()
    notices = Console(sys.stderr)  # stdout carries only replies
    try:
        resumed = chat_to_resume(args, store)
    except SessionNotFoundError as error:
        notices.fatal(str(error))
        return EXIT_FAILURE

    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    backend: Backend | None = None
    try:
        backend = open_backend(
            BackendChoice(backend=args.backend, hef_path=args.hef_path, gguf_path=args.model),
            notify=notices.say,
            choose_model=choose_model if interactive else None,
            download=download_with_progress(notices.say),
        )
        params = GenerationParams(
            **{setting.attribute: getattr(args, setting.attribute) for setting in GENERATION_SETTINGS}
        )
        chat = Chat(backend, args.system_prompt, params, store)
        display = DisplaySettings(**{s.attribute: getattr(args, s.attribute) for s in DISPLAY_SETTINGS})
        if resumed is not None:
            chat.resume(resumed.id)
        if args.prompt is None and interactive:
            from hailo_repl.app import run_repl

            return run_repl(chat, history=history, verbose=args.verbose, resumed=resumed, display=display)
        if resumed is not None:
            notices.say(f"Continuing chat {resumed.id} ({resumed.turns} turns, {resumed.model}).")
        started = time.perf_counter()
        backend.load()
        load_seconds = time.perf_counter() - started
        inputs = [args.prompt] if args.prompt is not None else messages_from_stdin(args.single)
        for index, text in enumerate(inputs):
            wrap = display.word_wrap and sys.stdout.isatty()  # a pipe or a file gets the reply as it came
            run_turn(chat, text, notices, args.verbose, load_seconds if index == 0 else 0.0, wrap)
        return EXIT_OK
    except (BackendError, ModelNotFoundError, ContextOverflowError, ConversationFileError) as error:
        notices.fatal(str(error))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        notices.say("Interrupted.")
        return 130
    except Exception as error:  # a bug: one line here, the traceback in the log
        logger.exception("unexpected error")
        notices.fatal(f"unexpected {type(error).__name__}: {error} (details in {log_file()})")
        return EXIT_FAILURE
    finally:
        if backend is not None:
            with signals_held():
                backend.release()
