"""The settings on the command line: a flag for each (from the settings table), the config
file's path, the settings in effect and where each came from, and the `config` subcommand."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hailo_repl.config_file import (
    CONFIG_ENV,
    CONFIG_NAME,
    ConfigFileError,
    config_path,
    load_config,
    scalar,
    write_init,
)
from hailo_repl.console import ArgumentParser, Console
from hailo_repl.settings import (
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

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # a bad flag, config file or environment variable, as argparse exits


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


def chat_failed(error: Exception, notices: Console) -> int:
    """A chat (in this process or the engine's) that ended on `error`: its one line, exit code 1;
    for a bug, a line naming it and the traceback in the log."""
    from hailo_repl.backends.base import BackendError
    from hailo_repl.config import log_file
    from hailo_repl.context import ContextOverflowError
    from hailo_repl.engine.api import EngineError
    from hailo_repl.log import logger
    from hailo_repl.models import ModelNotFoundError
    from hailo_repl.sessions import SessionNotFoundError

    if isinstance(error, (BackendError, ModelNotFoundError, ContextOverflowError, EngineError, SessionNotFoundError)):
        notices.fatal(str(error))
    else:
        logger.opt(exception=error).error("unexpected error")
        notices.fatal(f"unexpected {type(error).__name__}: {error} (details in {log_file()})")
    return EXIT_FAILURE
