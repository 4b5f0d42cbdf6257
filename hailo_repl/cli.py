"""Command line: flags, backend choice, one-shot and line-by-line modes, exit codes."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from loguru import logger

from hailo_repl import __version__
from hailo_repl.backends import BackendChoice, open_backend
from hailo_repl.backends.base import Backend, BackendError, GenerationParams
from hailo_repl.chat import DEFAULT_SYSTEM_PROMPT, Chat
from hailo_repl.config import log_file, setup_logging
from hailo_repl.context import ContextOverflowError
from hailo_repl.models import ModelNotFoundError, check_gguf, list_models, models_dir

EXIT_OK = 0
EXIT_FAILURE = 1


def _temperature(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a number (use 0.0 to 2.0)") from None
    if not 0.0 <= number <= 2.0:
        raise argparse.ArgumentTypeError(f"{value} is out of range (use 0.0 to 2.0)")
    return number


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a whole number") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be greater than 0")
    return number


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
    parser.add_argument("--hef-path", help="HEF model: a path, a file name, or a model name such as Qwen2.5-1.5B-Instruct (default: pick among downloaded models)")
    parser.add_argument("--max-tokens", type=_positive_int, default=512, help="most tokens generated per reply (default: %(default)s)")
    parser.add_argument("--temperature", type=_temperature, default=0.7, help="randomness, 0.0 to 2.0 (default: %(default)s)")
    parser.add_argument("--system-prompt", default=DEFAULT_SYSTEM_PROMPT, help='the model\'s instructions (default: "%(default)s")')
    parser.add_argument("--backend", choices=["auto", "hailo", "llama"], default="auto", help="where the model runs (default: %(default)s: hailo when a device opens, else llama)")
    parser.add_argument("--model", type=_gguf_file, metavar="PATH.gguf", help="a GGUF model for the llama backend (default: the bundled SmolLM2-135M-Instruct)")
    parser.add_argument("--list-models", action="store_true", help="list installed and registered models, then exit")
    parser.add_argument("-p", "--prompt", help="send one message, print the reply, and exit")
    parser.add_argument("--single", action="store_true", help="with piped input, send all of it as one message")
    parser.add_argument("--no-history", action="store_true", help="do not read or write the input history file (also HAILO_REPL_NOHISTORY=1)")
    parser.add_argument("--verbose", action="store_true", help="print timings after each reply, and warnings from the log")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def print_model_list() -> None:
    print(f"Models directory: {models_dir()}")
    for row in list_models():
        state = "installed" if row.path else "not downloaded"
        tag = "registered" if row.registered else "found"
        where = f"  {row.path}" if row.path else ""
        print(f"{row.name:<32} {row.kind:<5} {tag:<10} {state}{where}")


def notice(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_turn(chat: Chat, text: str, verbose: bool, load_seconds: float = 0.0) -> None:
    """Stream one reply to stdout; the timing block goes to stderr with --verbose."""
    cancel = threading.Event()
    wrote = False
    # closing(): on SIGTERM the reply is closed here, so the device's generation ends
    # before the backend is released.
    try:
        with contextlib.closing(chat.reply(text, cancel, notify=notice)) as pieces:
            for piece in pieces:
                sys.stdout.write(piece)
                sys.stdout.flush()
                wrote = True
    finally:
        if wrote:
            sys.stdout.write("\n")
            sys.stdout.flush()
    if verbose and chat.last_stats:
        chat.last_stats.load = load_seconds
        notice(chat.last_stats.verbose_block())


def messages_from_stdin(single: bool):
    if single:
        text = sys.stdin.read().strip()
        if text:
            yield text
        return
    for line in sys.stdin:
        if line.strip():
            yield line.rstrip("\n")


def _end_on_signal(signum, frame):
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def signals_held():
    """Ignore Ctrl+C, SIGTERM and SIGHUP meanwhile: a release cut short leaves the device held."""
    names = [name for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {name: signal.signal(getattr(signal, name), signal.SIG_IGN) for name in names}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.backend == "hailo" and args.model:
        parser.error("argument --model: a GGUF model runs on the llama backend, not with --backend hailo")
    setup_logging(args.verbose)
    if args.list_models:
        print_model_list()
        return EXIT_OK
    signal.signal(signal.SIGTERM, _end_on_signal)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _end_on_signal)

    backend: Backend | None = None
    try:
        backend = open_backend(
            BackendChoice(backend=args.backend, hef_path=args.hef_path, gguf_path=args.model),
            notify=notice,
            interactive=sys.stdin.isatty() and sys.stdout.isatty(),
        )
        chat = Chat(backend, args.system_prompt, GenerationParams(temperature=args.temperature, max_tokens=args.max_tokens))
        if args.prompt is None and sys.stdin.isatty() and sys.stdout.isatty():
            from hailo_repl.app import run_repl

            history = not args.no_history and os.environ.get("HAILO_REPL_NOHISTORY", "") in ("", "0")
            return run_repl(chat, history=history, verbose=args.verbose)
        started = time.perf_counter()
        backend.load()
        load_seconds = time.perf_counter() - started
        if args.prompt is not None:
            inputs = [args.prompt]
        else:
            inputs = messages_from_stdin(args.single)
        for index, text in enumerate(inputs):
            run_turn(chat, text, args.verbose, load_seconds if index == 0 else 0.0)
        return EXIT_OK
    except (BackendError, ModelNotFoundError, ContextOverflowError) as error:
        notice(f"Error: {error}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        notice("Interrupted.")
        return 130
    except Exception as error:  # a bug: one line here, the traceback in the log
        logger.exception("unexpected error")
        notice(f"Error: unexpected {type(error).__name__}: {error} (details in {log_file()})")
        return EXIT_FAILURE
    finally:
        if backend is not None:
            with signals_held():
                backend.release()
