"""Command line: the flags and settings, the subcommands, exit codes; the chat itself is hailo_repl.cli_chat."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hailo_repl import __version__
from hailo_repl.cli_chat import backend_choice, run_chat
from hailo_repl.cli_settings import (
    EXIT_OK,
    EXIT_USAGE,
    add_config_flag,
    add_setting_flags,
    config_command,
    config_parser,
    settings_in_effect,
    show_config,
)
from hailo_repl.config import sessions_dir
from hailo_repl.config_file import ConfigFileError
from hailo_repl.console import ArgumentParser, Console
from hailo_repl.model_names import print_model_names
from hailo_repl.settings import SettingError
from hailo_repl.startup import quiet_when_the_reader_goes, start_is_over
from hailo_repl.wrap import wrap_text

# The chat itself (hailo_repl.cli_chat) imports its modules where they are used, so the quick
# answers (--show-config, --help) start about as fast as a bare interpreter.

# `hailo-repl NAME ARGS…`: commands other than the chat, each with its own parser.
# A name here is tried before the chat's flags are parsed.
SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {}


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
    try:
        settings, config_file = settings_in_effect(args)
        choice = backend_choice(settings, args.api_key)
    except (ConfigFileError, SettingError) as error:
        Console(sys.stderr).fatal(str(error))
        return EXIT_USAGE
    if args.show_config:
        print(show_config(settings, config_file))
        return EXIT_OK
    return run_chat(args, settings, config_file, choice)
