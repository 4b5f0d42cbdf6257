"""The chat's command line: its parser (a flag for each setting, the chat's own options) and the
table of subcommands its --help lists. hailo_repl.cli fills the table and runs what was asked;
the doctor reads the chat's options here to name one it does not take."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from hailo_repl import __version__
from hailo_repl.cli_settings import add_config_flag, add_setting_flags
from hailo_repl.config import sessions_dir
from hailo_repl.console import ArgumentParser
from hailo_repl.wrap import wrap_text

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
