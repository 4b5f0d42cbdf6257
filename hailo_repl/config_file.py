"""config.yaml: where it is, reading it (pyyaml's safe loader, with line and column for
every complaint), writing a commented one, and saving one key back without losing the
rest of the file.

pyyaml does not keep comments, so a saved key is written by editing the file's text:
the value's span, which pyyaml's node marks give, is replaced, and nothing else changes.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hailo_repl.config import config_dir
from hailo_repl.private_files import (
    FileTooLarge,
    NotARegularFile,
    not_regular,
    private_dir,
    read_text_limited,
    update_lock,
    write_atomically,
)
from hailo_repl.settings import SETTINGS, SETTINGS_TABLE, FileValue, Setting, SettingError, yaml_text

if TYPE_CHECKING:
    import yaml  # imported where used: a chat without a config file never needs it

CONFIG_ENV = "HAILO_REPL_CONFIG"
CONFIG_NAME = "config.yaml"
CONFIG_READ_LIMIT = 1 << 20  # bytes: a config file is a few kB; a system prompt in it may be long
_READ_LIMIT_TEXT = f"{CONFIG_READ_LIMIT >> 20} MiB"  # as the refusals say it


class ConfigFileError(Exception):
    """A config file that cannot be read, parsed or saved; the message is one line."""


def config_path(given: str | None = None) -> tuple[Path, bool]:
    """The config file and whether the user named it: --config, then HAILO_REPL_CONFIG,
    then $XDG_CONFIG_HOME/hailo-repl/config.yaml."""
    named = given or os.environ.get(CONFIG_ENV)
    if named:
        return Path(named).expanduser(), True
    return config_dir() / CONFIG_NAME, False


def _at(path: Path, mark: yaml.Mark | None) -> str:
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)


def _yaml_error(path: Path, error: yaml.MarkedYAMLError, what: str = "") -> ConfigFileError:
    """The error at the line where the broken construct opened (pyyaml's context mark: an
    unclosed `[` is only noticed at the end of the file), with where it was noticed. A block
    mapping or list has nothing to close: its start (line 1 for the file's own mapping) is
    not where it broke, so a stray `- 3` is named at its own line."""
    opened, noticed = error.context_mark, error.problem_mark
    if opened is None or error.context is None or error.context.startswith("while parsing a block"):
        return ConfigFileError(f"{_at(path, noticed)}: {what}{error.problem}")
    where = ""
    if noticed is not None and (noticed.line, noticed.column) != (opened.line, opened.column):
        where = f" (at line {noticed.line + 1}, column {noticed.column + 1})"
    return ConfigFileError(f"{_at(path, opened)}: {what}{error.context} that starts here: {error.problem}{where}")


def _unknown_key(key: object) -> str:
    import difflib  # only for a mistyped key

    close = difflib.get_close_matches(str(key), list(SETTINGS), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else "`hailo-repl config` lists the keys"
    return f"unknown key '{key}' — {hint}"


def _mapping(path: Path, text: str) -> list[tuple[yaml.Node, yaml.Node]]:
    """The top-level key/value nodes of the file (none for an empty file)."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as error:
        raise _yaml_error(path, error, "not valid YAML: ") from None
    except yaml.YAMLError as error:
        raise ConfigFileError(f"{path}: not valid YAML: {error}") from None
    finally:
        loader.dispose()
    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode):
        raise ConfigFileError(f"{_at(path, root.start_mark)}: the file must be a mapping of `key: value` lines")
    return list(root.value)


def _construct(node: yaml.Node) -> Any:
    """A node's value, as yaml.safe_load would give it."""
    import yaml

    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def parse_config(path: Path, text: str) -> dict[str, FileValue]:
    """Every key of the file checked like its flag; ConfigFileError names file, line, column and key."""
    import yaml

    values: dict[str, FileValue] = {}
    for key_node, value_node in _mapping(path, text):
        try:
            key = _construct(key_node)
            value = _construct(value_node)
        except yaml.MarkedYAMLError as error:
            raise _yaml_error(path, error) from None
        setting = SETTINGS.get(key) if isinstance(key, str) else None
        if setting is None:
            raise ConfigFileError(f"{_at(path, key_node.start_mark)}: {_unknown_key(key)}")
        if key in values:
            raise ConfigFileError(f"{_at(path, key_node.start_mark)}: {key} is set twice (also at {values[key].where})")
        try:
            checked = setting.from_file(value)
        except SettingError as error:
            raise ConfigFileError(f"{_at(path, value_node.start_mark)}: {error}") from None
        values[key] = FileValue(checked, f"{path}:{key_node.start_mark.line + 1}")
    return values


def load_config(path: Path, required: bool = False) -> dict[str, FileValue]:
    """The file's settings; a missing file has none, unless the user named it (`required`)."""
    text = config_text(path, required)
    return parse_config(path, text) if text else {}  # no file, nothing to parse: pyyaml stays unimported


def config_text(path: Path, required: bool = False) -> str:
    """The file's text ("" when it is missing and not `required`), read as /load reads a
    chat: a regular file only (a FIFO would block), once, and no more than
    CONFIG_READ_LIMIT (pyyaml takes minutes and gigabytes over a huge file). /dev/null
    is no settings, as `--config /dev/null` means to pip and ssh users."""
    if os.path.realpath(path) == os.devnull:
        return ""
    try:
        return read_text_limited(path, CONFIG_READ_LIMIT)
    except FileNotFoundError:
        if required:
            raise ConfigFileError(
                f"{path}: no such config file (`hailo-repl config --init --config {path}` writes one)"
            ) from None
        return ""
    except NotARegularFile as error:
        raise ConfigFileError(f"{error}; the config file must be a file") from None
    except FileTooLarge:
        too_large = f"the config file is over {_READ_LIMIT_TEXT}, more than hailo-repl reads"
        raise ConfigFileError(f"{path}: {too_large}") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ConfigFileError(f"{path}: cannot read the config file: {reason}") from None


# ---- writing ----------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    """Atomically, 0600 (a symlink is followed), in a 0700 folder when it is hailo-repl's own."""
    if path.resolve().parent == config_dir().resolve():  # tightened even if made before
        private_dir(config_dir())
    write_atomically(path, text)


def scalar(value: Any) -> str:
    """A value as one line of YAML: as pyyaml writes it, or double-quoted (JSON's escapes
    are YAML's) where pyyaml would need several lines."""
    import json

    import yaml

    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        dumped = yaml.safe_dump(value, width=float("inf"), allow_unicode=True).removesuffix("\n...\n").rstrip("\n")
        return dumped if "\n" not in dumped else json.dumps(value, ensure_ascii=False)
    return yaml_text(value)


def _comment(setting: Setting) -> str:
    default = setting.unset if setting.default is None else scalar(setting.default)
    allowed = f"; {setting.allowed}" if setting.allowed else ""
    return f"# {setting.help}{allowed} (default: {default})"


def init_text() -> str:
    """A config file with every key, commented out at its default, and what each allows."""
    lines = [
        "# hailo-repl settings. Remove the `# ` before a key to set it; a flag or an",
        "# environment variable still wins over this file. `hailo-repl config` shows",
        "# what is in effect and where each value came from.",
    ]
    for setting in SETTINGS_TABLE:
        example = "" if setting.default is None else f" {scalar(setting.default)}"
        lines += ["", _comment(setting), f"# {setting.name}:{example}"]
    return "\n".join(lines) + "\n"


def write_init(path: Path) -> None:
    if path.exists():
        raise ConfigFileError(f"{path} exists already; it was left as it is")
    try:
        _write(path, init_text())
    except OSError as error:
        raise ConfigFileError(f"{path}: cannot write the config file: {error.strerror or error}") from None


def with_key(path: Path, text: str, setting: Setting, value: Any) -> str:
    """`text` with `setting` set to `value`: the value replaced where the key is, else the
    commented-out key (as `config --init` writes it) replaced, else a line added."""
    new = scalar(value)
    for key_node, value_node in _mapping(path, text):
        if _construct(key_node) == setting.name:
            start, end = value_node.start_mark.index, value_node.end_mark.index
            if start == end:  # `key:` with no value: the value goes after the colon
                new = " " + new
            old = text[start:end]
            line_ends = old[len(old.rstrip()) :]  # a block scalar's span ends after its newline
            return text[:start] + new + line_ends + text[end:]
    line = f"{setting.name}: {new}"
    commented = re.compile(rf"^#\s*{re.escape(setting.name)}:.*$", re.M)
    if commented.search(text):
        return commented.sub(lambda _: line, text, count=1)
    return text + ("" if text.endswith("\n") or not text else "\n") + line + "\n"


def save_setting(path: Path, setting: Setting, value: Any) -> None:
    """Write one key into the file atomically, keeping its comments and other keys; under the
    file's lock, so two processes saving at once (each its own key) both keep theirs."""
    refused = not_regular(path)
    if refused is not None:  # before the lock, which would be made beside a FIFO or in /dev
        raise ConfigFileError(f"{path}: {refused}; the config file must be a file")
    try:
        with update_lock(path):
            _save_setting_locked(path, setting, value)
    except OSError as error:  # the lock's: a read-only folder, or another process stuck holding it
        raise ConfigFileError(f"{path}: cannot write the config file: {error.strerror or error}") from None


def _save_setting_locked(path: Path, setting: Setting, value: Any) -> None:
    text = config_text(path)
    parse_config(path, text)  # a file with a mistake is reported as it is, not edited
    updated = with_key(path, text, setting, value)
    if len(updated.encode("utf-8")) > CONFIG_READ_LIMIT:  # never a file the next start would refuse
        too_large = f"with {setting.name} the config file would be over {_READ_LIMIT_TEXT}; not saved"
        raise ConfigFileError(f"{path}: {too_large}")
    try:
        saved = parse_config(path, updated).get(setting.name)
    except ConfigFileError:
        saved = None
    if saved is None or saved.value != value:  # e.g. a flow-style `{...}` file: leave it to the user
        raise ConfigFileError(f"{path}: cannot add {setting.name} to this file; add `{setting.name}: {scalar(value)}`")
    try:
        _write(path, updated)
    except OSError as error:
        raise ConfigFileError(f"{path}: cannot write the config file: {error.strerror or error}") from None
