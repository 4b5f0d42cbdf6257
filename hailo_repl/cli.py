"""The command line: `main()`, the subcommands (`config`, `completions`, `doctor`) and which was
asked for; the chat's parser is hailo_repl.cli_parser, the chat itself hailo_repl.cli_chat."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from hailo_repl.cli_chat import run_chat, settings_and_backend
from hailo_repl.cli_parser import SUBCOMMANDS, build_parser
from hailo_repl.cli_settings import (
    EXIT_OK,
    EXIT_USAGE,
    config_command,
    config_parser,
    show_config,
)
from hailo_repl.console import ArgumentParser
from hailo_repl.model_names import print_model_names
from hailo_repl.startup import quiet_when_the_reader_goes, start_is_over

# The chat itself (hailo_repl.cli_chat) imports its modules where they are used, so the quick
# answers (--show-config, --help) start about as fast as a bare interpreter.


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


class Subcommand:  # one per name in SUBCOMMANDS (not a dataclass: that cost ~0.2 ms at every start)
    """A subcommand whose parser the shell completions can see (a plain function also works)."""

    def __init__(self, run: Callable[[list[str]], int], help: str, parser: Callable[[], argparse.ArgumentParser]):
        self.run = run
        self.help = help
        self.parser = parser

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


def daemon_command(arguments: list[str]) -> int:
    from hailo_repl.daemon import cli

    return cli.main(arguments)


def daemon_parser() -> argparse.ArgumentParser:
    from hailo_repl.daemon import cli

    return cli.build_parser()


SUBCOMMANDS["doctor"] = Subcommand(doctor_command, "check what a chat needs, one line per check", doctor_parser)
SUBCOMMANDS["daemon"] = Subcommand(
    daemon_command, "the engine process that keeps chats going: status, or stop it", daemon_parser
)
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
    found = settings_and_backend(args)
    if found is None:
        return EXIT_USAGE
    settings, config_file, choice = found
    if args.show_config:
        print(show_config(settings, config_file))
        return EXIT_OK
    return run_chat(args, settings, config_file, choice)
