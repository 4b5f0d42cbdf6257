"""Command line: flags, backend choice, one-shot and line-by-line modes, exit codes."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hailo_repl import __version__
from hailo_repl.config import device_contexts_dir, instance_lock_file, log_file, sessions_dir
from hailo_repl.config_file import (
    CONFIG_ENV,
    CONFIG_NAME,
    ConfigFileError,
    config_path,
    load_config,
    scalar,
    write_init,
)
from hailo_repl.console import ArgumentParser, Console, no_wrap
from hailo_repl.entry import print_model_names, quiet_when_the_reader_goes, start_is_over
from hailo_repl.log import logger, setup_logging
from hailo_repl.servers import REMOTE_BACKENDS
from hailo_repl.settings import (
    GENERATION_SETTINGS,
    SETTINGS,
    SETTINGS_TABLE,
    ChoiceSetting,
    NumberSetting,
    ResolvedSettings,
    Setting,
    SettingError,
    SwitchSetting,
    resolve,
)
from hailo_repl.wrap import WordWrap, wrap_text

# The chat's own modules (backends, chat, saved chats, signals) are imported where they are
# used, so the quick answers (`--list-models -q` for shell completion, --show-config, --help)
# start about as fast as a bare interpreter, and the doctor, httpx and jinja2 stay out of a chat.
if TYPE_CHECKING:
    from hailo_repl.backends import BackendChoice
    from hailo_repl.backends.base import Backend
    from hailo_repl.chat import Chat
    from hailo_repl.instance_lock import InstanceLock
    from hailo_repl.sessions import ChatSummary, SessionStore

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # a bad flag, config file or environment variable, as argparse exits

# `hailo-repl NAME ARGS…`: commands other than the chat, each with its own parser.
# A name here is tried before the chat's flags are parsed.
SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {}


def _setting_type(setting: Setting) -> Callable[[str], Any]:
    """argparse's type= for a setting: its parse, with what is allowed in the error."""

    def parse(text: str) -> Any:
        try:
            return setting.parse(text)
        except SettingError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def add_setting_flags(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    """A flag for every setting (or those named in `only`), from the table. A flag not given is
    left out of the namespace (SUPPRESS), so the environment and the config file can fill it in."""
    for setting in SETTINGS_TABLE if only is None else [SETTINGS[name] for name in only]:
        names = [f"--{setting.name}", *setting.flags]
        default = setting.unset if setting.default is None else setting.shown(setting.default)
        allowed = f"; {setting.allowed}" if isinstance(setting, NumberSetting) else ""  # choices show themselves
        help_text = f"{setting.help}{allowed} (default: {default})".replace("%", "%%")
        common: dict[str, Any] = {"dest": setting.attribute, "default": argparse.SUPPRESS, "help": help_text}
        if isinstance(setting, SwitchSetting):
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **common)
        elif isinstance(setting, ChoiceSetting):
            parser.add_argument(*names, choices=setting.choices, **common)
        else:
            parser.add_argument(*names, type=_setting_type(setting), metavar=setting.metavar, **common)


def add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"the config file (default: ${CONFIG_ENV}, else ~/.config/hailo-repl/{CONFIG_NAME})",
    )


class HelpFormatter(argparse.HelpFormatter):
    """argparse's, except that a word is never broken (at its hyphens, or for its length: a path
    such as ~/.local/share/hailo-repl/sessions stays whole, to be copied), and a text of several
    lines (the subcommands' table) is wrapped line by line, keeping its rows and columns."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap  # (argparse imports it where it wraps, too)

        text = " ".join(text.split())
        return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" not in text:
            return "\n".join(indent + line for line in self._split_lines(text, width - len(indent)))
        return "\n".join(indent + line for line in wrap_text(text, width - len(indent)).split("\n"))


def subcommands_help() -> str:
    """The subcommands, one a line, for the chat's --help (from SUBCOMMANDS, so none is left out)."""
    rows = [f"  hailo-repl {name:<12} {getattr(command, 'help', '')}" for name, command in SUBCOMMANDS.items()]
    return "\n".join(["subcommands (`hailo-repl NAME --help` for each; options may also come before the name):", *rows])


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="hailo-repl",
        description="Chat with an LLM on the Hailo-10H, or on the CPU with llama.cpp when no Hailo device is present.",
        epilog=subcommands_help(),
        formatter_class=HelpFormatter,
    )
    add_setting_flags(parser)
    add_config_flag(parser)
    parser.add_argument("--show-config", action="store_true", help="print the settings in effect and their origins")
    remote = parser.add_argument_group("remote engines (--backend ollama, hailo-ollama or openai)")
    remote.add_argument(
        "--api-key",
        help="sent as a bearer token (default for openai: OPENAI_API_KEY, but only to OPENAI_BASE_URL's server); "
        "a flag only, never read from the config file",
    )
    parser.add_argument("--list-models", action="store_true", help="list installed and registered models, then exit")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="with --list-models: only the names --hef-path takes, one a line"
    )
    parser.add_argument("-p", "--prompt", help="send one message, print the reply, and exit")
    parser.add_argument("--single", action="store_true", help="with piped input, send all of it as one message")
    saved = parser.add_argument_group("saved chats", f"every chat is saved after each turn in {sessions_dir()}")
    resume = saved.add_mutually_exclusive_group()
    resume.add_argument("-c", "--continue", action="store_true", help="continue the most recent chat")
    resume.add_argument("--resume", metavar="ID", help="continue the chat with this id (a prefix is enough)")
    saved.add_argument("--list-chats", action="store_true", help="list the saved chats, the newest first, then exit")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def flags_given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags, by setting name."""
    given = [setting for setting in SETTINGS_TABLE if hasattr(args, setting.attribute)]
    return {setting.name: getattr(args, setting.attribute) for setting in given}


def settings_in_effect(args: argparse.Namespace) -> tuple[ResolvedSettings, Path]:
    """Flags over environment over config file over defaults; ConfigFileError or
    SettingError (one line) when the file or a variable holds a value not allowed."""
    path, named = config_path(args.config)
    return resolve(flags_given(args), os.environ, load_config(path, required=named)), path


def show_config(settings: ResolvedSettings, path: Path) -> str:
    """The settings in effect and where each came from, as `git config --show-origin` does."""
    state = "" if path.exists() else " (not found)"
    rows = [f"# config file: {path}{state}"]
    shown = {
        setting.name: setting.shown(value) if (value := settings[setting.name]) is None else scalar(value)
        for setting in SETTINGS_TABLE
    }
    name_width = max(len(name) for name in shown) + 1
    value_width = min(max(len(text) for text in shown.values()), 40)
    for name, text in shown.items():
        rows.append(f"{name + ':':<{name_width}} {text:<{value_width}} # {settings.origins[name]}")
    return "\n".join(rows)


def config_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="hailo-repl config",
        description="Print the settings in effect and where each came from (flag, env, file, default); "
        "with --init, write a commented config file with every key at its default.",
    )
    parser.add_argument("--init", action="store_true", help="write a config file (never over an existing one)")
    add_config_flag(parser)
    add_setting_flags(parser)
    return parser


def config_command(arguments: list[str]) -> int:
    """`hailo-repl config [--init] [flags]`: show the settings in effect, or write a commented file."""
    args = config_parser().parse_args(arguments)
    notices = Console(sys.stderr)
    try:
        if args.init:
            path, _ = config_path(args.config)
            write_init(path)
            notices.info(f"Wrote {path}")
            return EXIT_OK
        settings, path = settings_in_effect(args)
    except (ConfigFileError, SettingError) as error:
        notices.fatal(str(error))
        return EXIT_USAGE
    print(show_config(settings, path))
    return EXIT_OK


def completions_parser() -> argparse.ArgumentParser:
    from hailo_repl.completions import SHELLS

    parser = ArgumentParser(
        prog="hailo-repl completions",
        description='Print a completion script: eval "$(hailo-repl completions bash)" in ~/.bashrc; '
        "README.md says where each shell keeps them.",
    )
    parser.add_argument("shell", choices=SHELLS)
    return parser


def completions_command(arguments: list[str]) -> int:
    """`hailo-repl completions bash|zsh|fish`: print the shell's completion script."""
    from hailo_repl.completions import completion_script

    args = completions_parser().parse_args(arguments)
    sys.stdout.write(completion_script(args.shell, completion_parser()))
    return EXIT_OK


@dataclass(eq=False, repr=False)  # one per name in SUBCOMMANDS; frozen would cost ~0.2 ms at every start
class Subcommand:
    """A subcommand whose parser the shell completions can see (a plain function also works)."""

    run: Callable[[list[str]], int]
    help: str
    parser: Callable[[], argparse.ArgumentParser]

    def __call__(self, arguments: list[str]) -> int:
        return self.run(arguments)


def completion_parser() -> argparse.ArgumentParser:
    """The chat's parser with the subcommands added, as the shell completions see it."""
    parser = build_parser()
    subcommands = parser.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    for name, command in SUBCOMMANDS.items():
        build = getattr(command, "parser", None)
        parents = [build()] if build else []
        subcommands.add_parser(name, help=getattr(command, "help", None), parents=parents, add_help=not parents)
    return parser


def doctor_command(arguments: list[str]) -> int:
    from hailo_repl import doctor

    return doctor.main(arguments)


def doctor_parser() -> argparse.ArgumentParser:
    from hailo_repl import doctor

    return doctor.build_parser()


SUBCOMMANDS["doctor"] = Subcommand(doctor_command, "check what a chat needs, one line per check", doctor_parser)
SUBCOMMANDS["config"] = Subcommand(
    config_command, "print the settings in effect and their origins, or --init a file", config_parser
)
SUBCOMMANDS["completions"] = Subcommand(
    completions_command, "print the completion script for bash, zsh or fish", completions_parser
)


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
    chat: Chat, text: str, notices: Console, verbose: bool, load_seconds: float = 0.0, wrap: bool = False
) -> None:
    """Stream one reply to stdout (word-wrapped with `wrap`); the timing block goes to stderr with --verbose."""
    cancel = threading.Event()
    wrote = False
    wrapper = WordWrap(lambda: shutil.get_terminal_size().columns) if wrap else None

    # closing(): on SIGTERM the reply is closed here, so the device's generation ends
    # before the backend is released.
    def notify(line: str) -> None:
        if wrote:  # the words the wrap holds first: the line never lands inside the reply
            sys.stdout.write(wrapper.feed("\n") if wrapper else "\n")
            sys.stdout.flush()
        notices.say(line)

    def end_the_reply() -> None:  # before the save, which may wait seconds for a lock
        nonlocal wrote
        if wrote:
            sys.stdout.write((wrapper.flush() if wrapper else "") + "\n")
            sys.stdout.flush()
            wrote = False

    try:
        with contextlib.closing(chat.reply(text, cancel, notify=notify, ended=end_the_reply)) as pieces:
            for piece in pieces:
                sys.stdout.write(wrapper.feed(piece) if wrapper else piece)
                sys.stdout.flush()
                wrote = True
    finally:
        end_the_reply()
    if verbose and chat.last_stats:
        chat.last_stats.load = load_seconds
        notices.say(chat.last_stats.verbose_block())


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


def backend_choice(settings: ResolvedSettings, api_key: str | None) -> BackendChoice:
    """The backend the settings ask for; SettingError (one line, exit 2) for a setting that
    does not fit it."""
    from hailo_repl.backends import BackendChoice
    from hailo_repl.models import check_gguf

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


def subcommand_in(arguments: list[str]) -> tuple[str, list[str]] | None:
    """The subcommand named in `arguments`, with the options before its name and those after,
    as git, docker and pip take `hailo-repl --backend hailo doctor`; None for a chat. The chat's
    parser tells a name from an option's value (`-p doctor` is a chat)."""
    if not any(word in SUBCOMMANDS for word in arguments):
        return None
    finder = build_parser()
    finder.add_argument("subcommand", nargs="?", help=argparse.SUPPRESS)
    finder.add_argument("after", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    found, _ = finder.parse_known_args(arguments)
    at = len(arguments) - len(found.after) - 1
    if found.subcommand not in SUBCOMMANDS or arguments[at] != found.subcommand:
        return None
    return found.subcommand, arguments[:at] + arguments[at + 1 :]


def streams_closed_at_start_as_devnull() -> None:
    """A standard stream closed before the start (`<&-`, `>&-`) is None in Python: it reads as
    empty and writes nowhere, as print() already treats it, instead of failing where first used."""
    for name, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, mode))  # noqa: SIM115 (the process's, until it ends)


def main(argv: Sequence[str] | None = None) -> int:
    """A chat or a subcommand (hailo_repl.entry runs it). A reader that goes away (`| head`)
    ends any of them quietly with 141, as other CLIs do."""
    streams_closed_at_start_as_devnull()
    return quiet_when_the_reader_goes(lambda: run(list(sys.argv[1:] if argv is None else argv)))


def run(arguments: list[str]) -> int:
    subcommand = subcommand_in(arguments)
    if subcommand is not None:
        name, rest = subcommand
        start_is_over()
        return SUBCOMMANDS[name](rest)
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.quiet and not args.list_models:
        parser.error("argument -q/--quiet: only with --list-models")
    if args.quiet:
        return print_model_names()
    if args.prompt is not None and not args.prompt.strip():
        parser.error("argument -p/--prompt: the message is empty")
    notices = Console(sys.stderr)  # stdout carries only replies
    try:
        settings, config_file = settings_in_effect(args)
        choice = backend_choice(settings, args.api_key)
    except (ConfigFileError, SettingError) as error:
        notices.fatal(str(error))
        return EXIT_USAGE
    if not settings["word-wrap"]:
        notices.wrap_width = no_wrap
    if args.show_config:
        print(show_config(settings, config_file))
        return EXIT_OK
    # What a chat needs (not imported at the top: see there).
    from hailo_repl.backends import open_backend
    from hailo_repl.backends.base import BackendError, GenerationParams
    from hailo_repl.chat import KEEPING_DEVICE_CONTEXT, Chat
    from hailo_repl.context import ContextOverflowError
    from hailo_repl.conversation import ConversationFileError
    from hailo_repl.dialogs import choose_model, download_with_progress
    from hailo_repl.models import ModelNotFoundError
    from hailo_repl.sessions import SessionNotFoundError, SessionStore
    from hailo_repl.signals import exit_on_termination, signals_held

    setup_logging(to_file=settings["history"])  # --no-history: nothing of the chat on disk
    choice.context_cache = device_contexts_dir() if settings["history"] else None
    from hailo_repl.backends.hailo_keeping import keeping_policy

    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    chatting = interactive and args.prompt is None  # the REPL: -p and pipes keep no device context
    choice.keeping = keeping_policy(settings.values, chatting, sessions_dir(), device_contexts_dir())
    if args.list_models and choice.backend in REMOTE_BACKENDS:
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
    backend: Backend | None = None
    chat: Chat | None = None
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
        chat = Chat(backend, settings["system-prompt"], params, store)
        if resumed is not None:
            chat.resume(resumed.id)
        if args.prompt is None and interactive:
            from hailo_repl.app import run_repl

            def finishing(chat: Chat = chat) -> None:  # the terminal hung up mid-reply
                if holds:
                    instance_lock().finishing(chat.session_id)

            # Its first frame ends the start.
            return run_repl(chat, settings, config_file, resumed=resumed, on_hang_up=finishing)
        start_is_over()
        if resumed is not None:
            notices.say(f"Continuing chat {resumed.id} ({resumed.turns} turns, {resumed.model}).")
        started = time.perf_counter()
        backend.load()
        load_seconds = time.perf_counter() - started
        inputs = [with_piped_input(args.prompt)] if args.prompt is not None else messages_from_stdin(args.single)
        for index, text in enumerate(inputs):
            wrap = settings["word-wrap"] and sys.stdout.isatty()  # a pipe or a file gets the reply as it came
            run_turn(chat, text, notices, settings["verbose"], load_seconds if index == 0 else 0.0, wrap)
        return EXIT_FAILURE if chat.unsaved else EXIT_OK  # (its [Error] line said why)
    except (
        BackendError,
        ModelNotFoundError,
        ContextOverflowError,
        ConversationFileError,
        SessionNotFoundError,
    ) as error:
        notices.fatal(str(error))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        notices.say("Interrupted.")
        return 130
    except BrokenPipeError:  # the reader went away, not a bug: main() ends the run quietly
        raise
    except Exception as error:  # a bug: one line here, the traceback in the log
        logger.exception("unexpected error")
        notices.fatal(f"unexpected {type(error).__name__}: {error} (details in {log_file()})")
        return EXIT_FAILURE
    finally:
        if backend is not None:
            with signals_held():  # SIGTERM and SIGHUP too: the device context is kept if there is time
                if chat is not None and chat.device_context_unsaved():
                    if chatting:  # the REPL: say why its exit waits (seconds on a Pi); -p and pipes keep none
                        with contextlib.suppress(OSError):
                            notices.info(KEEPING_DEVICE_CONTEXT)
                    chat.keep_device_context()
                (chat.backend if chat is not None else backend).release()  # /model may have replaced it
        if lock is not None:
            lock.release()  # once the device is free: a process waiting for it opens it next
