"""Every setting, in one table that argparse, the config file, `/set` and `/help` read.

A setting's name is its long flag (`--max-tokens`), its key in config.yaml, its `/set`
name and, with `_` for `-`, its attribute (GenerationParams.max_tokens); its type, range
or choices, default, help text and environment variable are written here only. Adding a
setting is adding one entry to SETTINGS_TABLE.

Where a value comes from, highest first: the flag, the environment variable, the config
file, the default (`resolve`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from hailo_repl.servers import DEFAULT_CONTEXT_SIZE, HAILO_OLLAMA_DEFAULT_URL, OPENAI_DEFAULT_URL, REMOTE_BACKENDS
from hailo_repl.typed_numbers import whole_number

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Be concise and clear in your responses."
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


class SettingError(ValueError):
    """A value out of a setting's range, or not of its type; the message says what is allowed."""


def yaml_text(value: object) -> str:
    """A scalar as YAML writes it (true, 0.7, text), for messages about a file's values."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


# Each setting exists once, in SETTINGS_TABLE, and nothing changes it: eq=False (it equals only
# itself), and neither frozen nor a generated repr, which spares making those methods for each
# kind at every start (~1.4 ms of the five kinds' ~2.9 ms on Python 3.11).
@dataclass(eq=False, repr=False)
class Setting:
    """What every kind of setting has; the kinds below add their type's rules."""

    name: str  # as typed: the flag without dashes, the config key, and the /set name
    _: KW_ONLY
    help: str
    default: Any = None  # None: nothing chosen (`unset` says what happens then)
    unset: str = ""  # what a default of None means, in words: "the backend's"
    env: str | None = None  # the environment variable that sets it, if any
    live: bool = False  # /set can change it in a running chat
    flags: tuple[str, ...] = ()  # more spellings of the flag: ("--vi",)
    completion: str | None = None  # how a shell completes the value: "path", or "hef" (a path or a model name)
    metavar: str | None = None

    @property
    def attribute(self) -> str:
        return self.name.replace("-", "_")

    @property
    def allowed(self) -> str:
        """The values allowed, in words: 'a number from 0.0 to 2.0' ('': any text, as the help says)."""
        return ""

    def refuse(self, text: str) -> SettingError:
        return SettingError(f"{self.name} must be {self.allowed or 'text'}, not '{text}'")

    def parse(self, text: str) -> Any:
        """The value `text` (a flag's, an environment variable's or /set's) stands for."""
        return text

    def from_file(self, value: object) -> Any:
        """The value a YAML scalar stands for; SettingError, as for a flag, when not allowed."""
        if value is None and self.default is None:
            return None
        if value is None or isinstance(value, (dict, list)):
            what = "empty" if value is None else "a list" if isinstance(value, list) else "a mapping"
            raise SettingError(f"{self.name} must be {self.allowed or 'text'}, not {what}")
        return self.parse(value if isinstance(value, str) else yaml_text(value))

    def from_env(self, text: str) -> Any:
        return self.parse(text)

    def shown(self, value: Any) -> str:
        """A value as `hailo-repl config` and /set show it."""
        return f"({self.unset})" if value is None else yaml_text(value)


@dataclass(eq=False, repr=False, kw_only=True)
class NumberSetting(Setting):
    """A setting whose value is a number within bounds."""

    whole: bool  # an int (True) or a float
    low: float  # the smallest value allowed (or the bound above which values are allowed)
    high: float | None  # the largest value allowed, or None for no limit
    low_allowed: bool  # whether `low` itself is allowed

    @property
    def allowed(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        if self.high is None:
            return f"{kind} {'from' if self.low_allowed else 'above'} {self.low}"
        if self.low_allowed:
            return f"{kind} from {self.low} to {self.high}"
        return f"{kind} above {self.low} up to {self.high}"

    def parse(self, text: str) -> float | int:
        value: float | int | None
        if self.whole:
            value = whole_number(text)
        else:
            try:
                value = float(text) + 0.0  # + 0.0 turns -0.0 into 0.0
            except ValueError:
                value = None
        if value is None:
            raise self.refuse(text)
        above_low = value >= self.low if self.low_allowed else value > self.low
        if not above_low or (self.high is not None and value > self.high):
            raise self.refuse(text)
        return value


@dataclass(eq=False, repr=False, kw_only=True)
class ChoiceSetting(Setting):
    """A setting whose value is one of a few words."""

    choices: tuple[str, ...]

    @property
    def allowed(self) -> str:
        return "one of " + ", ".join(self.choices)

    def parse(self, text: str) -> str:
        if text not in self.choices:
            raise self.refuse(text)
        return text


@dataclass(eq=False, repr=False, kw_only=True)
class SwitchSetting(Setting):
    """On or off: `--name` and `--no-name` as flags, true or false in the file."""

    env_means_off: bool = False  # the variable turns it off when set (HAILO_REPL_NOHISTORY=1)

    @property
    def allowed(self) -> str:
        return "true or false"

    def parse(self, text: str) -> bool:
        word = text.strip().lower()
        if word not in TRUE_WORDS + FALSE_WORDS:
            raise self.refuse(text)
        return word in TRUE_WORDS

    def from_env(self, text: str) -> bool:
        if self.env_means_off:  # as before: any value but 0 turns it off
            return text.strip().lower() in FALSE_WORDS
        return self.parse(text)


DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


@dataclass(eq=False, repr=False, kw_only=True)
class DurationSetting(Setting):
    """A time in whole seconds, typed as Ollama's OLLAMA_KEEP_ALIVE takes it: 300, 30s, 5m, 1h;
    a negative one means for ever."""

    @property
    def allowed(self) -> str:
        return "a duration: seconds, or a number with s, m or h (5m); negative: for ever"

    def parse(self, text: str) -> int:
        word = text.strip().lower()
        unit = word[-1:] if word[-1:] in DURATION_UNITS else ""
        number = whole_number(word[: len(word) - len(unit)])
        if number is None:
            raise self.refuse(text)
        return -1 if number < 0 else number * DURATION_UNITS[unit]

    def shown(self, value: Any) -> str:
        return "for ever" if value is not None and value < 0 else super().shown(value)


@dataclass(eq=False, repr=False, kw_only=True)
class TextSetting(Setting):
    """Free text, or a path that `check` turns into its value (raising ValueError with the reason)."""

    check: Callable[[str], Any] | None = None

    def parse(self, text: str) -> Any:
        if self.check is None:
            return text
        try:
            return self.check(text)
        except ValueError as error:
            raise SettingError(f"{self.name}: {error}") from None


GENERATION_SETTINGS = (
    NumberSetting(
        "temperature",
        help="randomness, 0 is greedy",
        default=0.7,
        whole=False,
        low=0.0,
        high=2.0,
        low_allowed=True,
        live=True,
    ),
    NumberSetting(
        "max-tokens",
        help="most tokens generated per reply",
        default=512,
        whole=True,
        low=0,
        high=None,
        low_allowed=False,
        live=True,
    ),
    NumberSetting(
        "top-p",
        help="nucleus sampling: draw only from the likeliest tokens up to this probability",
        unset="the backend's",
        whole=False,
        low=0.0,
        high=1.0,
        low_allowed=False,
        live=True,
    ),
)

SETTINGS_TABLE: tuple[Setting, ...] = (
    ChoiceSetting(
        "backend",
        help="where the model runs (auto: hailo when a device opens, else llama; "
        "ollama, hailo-ollama and openai chat with a server)",
        default="auto",
        choices=("auto", "hailo", "llama", *REMOTE_BACKENDS),
    ),
    TextSetting(
        "hef-path",
        help="HEF model: a path, a file name, or a model name such as Qwen2.5-1.5B-Instruct",
        unset="pick among downloaded models",
        completion="hef",
    ),
    TextSetting(
        "model",
        help="a GGUF file for the llama backend; the server's model name with a remote backend",
        unset="the bundled SmolLM2-135M-Instruct; with a server, ask it",
        completion="path",
        metavar="NAME|PATH.gguf",
    ),
    TextSetting(
        "url",
        help=f"with a remote backend, the server: for ollama its root (else OLLAMA_HOST, else "
        f"http://127.0.0.1:11434), for hailo-ollama else {HAILO_OLLAMA_DEFAULT_URL}, for openai the API base "
        f"(else OPENAI_BASE_URL, else {OPENAI_DEFAULT_URL})",
        unset="per backend, as the help says",
        metavar="URL",
    ),
    NumberSetting(
        "context-size",
        help="with a remote backend, the model's context on the server",
        unset=f"what the server says, else {DEFAULT_CONTEXT_SIZE}",
        whole=True,
        low=0,
        high=None,
        low_allowed=False,
        metavar="TOKENS",
    ),
    *GENERATION_SETTINGS,
    TextSetting("system-prompt", help="the model's instructions", default=DEFAULT_SYSTEM_PROMPT),
    SwitchSetting(
        "history",
        help="keep this chat on disk: the saved chat, the input history and the log (off: nothing is written)",
        default=True,
        env="HAILO_REPL_NOHISTORY",
        env_means_off=True,
    ),
    NumberSetting(
        "device-context-budget",
        help="MiB of disk the Hailo device contexts kept for a quick resume may take together (each is the "
        "whole KV cache, ~112 MiB for Qwen2.5-1.5B); the oldest go first; 0 keeps none",
        default=512,  # four Qwen2.5-1.5B contexts
        whole=True,
        low=0,
        high=None,
        low_allowed=True,
        metavar="MIB",
    ),
    SwitchSetting(
        "device-context-for-scripts",
        help="with -p and pipes, keep the Hailo device context too (interactive chats keep theirs "
        "where a load beats reading the chat again)",
        default=False,
    ),
    ChoiceSetting(
        "daemon",
        help="run the chat in hailo-repl's engine process, which outlives the terminal (a reply goes on "
        "after an SSH drop; `hailo-repl -c` attaches again): auto for interactive chats and, on the Hailo, "
        "-p and pipes; always for every chat; never: in this process only",
        default="auto",
        choices=("auto", "always", "never"),
        env="HAILO_REPL_DAEMON",
    ),
    DurationSetting(
        "keep-alive",
        help="how long the engine process keeps the model loaded after the last terminal left "
        "(seconds, or 5m, 1h; 0: release it at once; negative: until `hailo-repl daemon stop`)",
        default=300,
        env="HAILO_REPL_KEEP_ALIVE",
        metavar="DURATION",
    ),
    SwitchSetting(
        "verbose",
        help="print timings after each reply, as ollama run --verbose does (logs stay in the log file)",
        default=False,
    ),
    SwitchSetting("vi-mode", help="vi keys at the prompt", default=False, flags=("--vi",), live=True),
    ChoiceSetting(
        "color",
        help="colour in replies (auto: unless NO_COLOR is set)",
        default="auto",
        choices=("auto", "always", "never"),
    ),
    SwitchSetting("word-wrap", help="wrap replies and hailo-repl's lines at word boundaries", default=True, live=True),
)
SETTINGS = {setting.name: setting for setting in SETTINGS_TABLE}
LIVE_SETTINGS = {setting.name: setting for setting in SETTINGS_TABLE if setting.live}


def default_of(name: str) -> Any:
    """A setting's default, for GenerationParams' fields (Any: each field has its own type)."""
    return SETTINGS[name].default


# ---- where each value comes from --------------------------------------------------------

DEFAULT_ORIGIN = "default"


@dataclass
class FileValue:
    """A value read from the config file, with where it was written."""

    value: Any
    where: str  # "PATH:LINE"


@dataclass
class ResolvedSettings:
    """Every setting's value, and where it came from: flag, env NAME, file PATH:LINE, or default."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def resolve(
    flags: Mapping[str, Any], environ: Mapping[str, str], file_values: Mapping[str, FileValue]
) -> ResolvedSettings:
    """Layer the sources, highest first: flag, environment variable, config file, default.

    `flags` holds only the flags given (by setting name). An environment variable's bad
    value raises SettingError naming the variable.
    """
    resolved = ResolvedSettings()
    for setting in SETTINGS_TABLE:
        name = setting.name
        env_text = environ.get(setting.env, "") if setting.env else ""
        if name in flags:
            value, origin = flags[name], "flag"
        elif env_text:
            try:
                value, origin = setting.from_env(env_text), f"env {setting.env}"
            except SettingError as error:
                raise SettingError(f"{setting.env}: {error}") from None
        elif name in file_values:
            value, origin = file_values[name].value, f"file {file_values[name].where}"
        else:
            value, origin = setting.default, DEFAULT_ORIGIN
        resolved.values[name], resolved.origins[name] = value, origin
    return resolved
