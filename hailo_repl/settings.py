"""The generation settings: one table that argparse, `/set` and GenerationParams read.

Each setting's name is its flag (`--max-tokens`), its `/set` name and the attribute of
GenerationParams (`max_tokens`); its range, default and help text are written here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class SettingError(ValueError):
    """A value out of a setting's range, or not of its type; the message says what is allowed."""


@dataclass(frozen=True)
class NumberSetting:
    name: str  # as typed: the flag without dashes, and the /set name
    whole: bool  # an int (True) or a float
    default: float | int | None  # None: the backend's own default
    low: float  # the smallest value allowed (or the bound above which values are allowed)
    high: float | None  # the largest value allowed, or None for no limit
    low_allowed: bool  # whether `low` itself is allowed
    help: str

    @property
    def attribute(self) -> str:
        return self.name.replace("-", "_")

    @property
    def allowed(self) -> str:
        """The range in words: 'a number from 0.0 to 2.0'."""
        kind = "a whole number" if self.whole else "a number"
        if self.high is None:
            return f"{kind} {'from' if self.low_allowed else 'above'} {self.low}"
        if self.low_allowed:
            return f"{kind} from {self.low} to {self.high}"
        return f"{kind} above {self.low} up to {self.high}"

    def parse(self, text: str) -> float | int:
        """The value `text` stands for; SettingError names the range when it is not allowed."""
        try:
            value: float | int = int(text) if self.whole else float(text) + 0.0  # + 0.0 turns -0.0 into 0.0
        except ValueError:
            raise SettingError(f"{self.name} must be {self.allowed}, not '{text}'") from None
        above_low = value >= self.low if self.low_allowed else value > self.low
        if not above_low or (self.high is not None and value > self.high):
            raise SettingError(f"{self.name} must be {self.allowed}, not '{text}'")
        return value


GENERATION_SETTINGS = (
    NumberSetting(
        "temperature", whole=False, default=0.7, low=0.0, high=2.0, low_allowed=True, help="randomness, 0 is greedy"
    ),
    NumberSetting(
        "max-tokens",
        whole=True,
        default=512,
        low=0,
        high=None,
        low_allowed=False,
        help="most tokens generated per reply",
    ),
    NumberSetting(
        "top-p",
        whole=False,
        default=None,
        low=0.0,
        high=1.0,
        low_allowed=False,
        help="nucleus sampling: draw only from the likeliest tokens up to this probability",
    ),
)


@dataclass(frozen=True)
class SwitchSetting:
    """An on/off setting: `/set word-wrap off`, `--no-word-wrap`."""

    name: str
    default: bool
    help: str

    ON = ("on", "true", "yes", "1")
    OFF = ("off", "false", "no", "0")

    @property
    def attribute(self) -> str:
        return self.name.replace("-", "_")

    @property
    def allowed(self) -> str:
        return "on or off"

    def parse(self, text: str) -> bool:
        word = text.strip().lower()
        if word in self.ON:
            return True
        if word in self.OFF:
            return False
        raise SettingError(f"{self.name} must be {self.allowed}, not '{text}'")


# How replies are shown (not sent to the model): the REPL's DisplaySettings holds them.
DISPLAY_SETTINGS = (
    SwitchSetting("word-wrap", default=True, help="wrap replies and hailo-repl's lines at word boundaries"),
)
SETTINGS: dict[str, NumberSetting | SwitchSetting] = {
    setting.name: setting for setting in (*GENERATION_SETTINGS, *DISPLAY_SETTINGS)
}


def default_of(name: str) -> Any:
    """A setting's default, for GenerationParams' fields (Any: each field has its own type)."""
    return SETTINGS[name].default


@dataclass
class DisplaySettings:
    """The display settings' current values (DISPLAY_SETTINGS gives their names and defaults)."""

    word_wrap: bool = default_of("word-wrap")
