"""Context accounting: how full the model's window is, and what to drop when it fills.

Pure functions only; the backends say how many tokens a conversation costs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # (the backends package is not on the path to the first prompt)
    from hailo_repl.backends.base import Message

WARN_PERCENT = 70
FULL_PERCENT = 90
# Once turns must be dropped, drop until the conversation takes this share of the room
# the reply leaves, not just enough: the history then starts where the backend's cached
# copy does for the next several turns, instead of being re-read whole on every turn.
DROP_TO_PERCENT = 50
# More characters than this per token of the context, and a chat is too long to try whole.
CHARACTERS_PER_TOKEN_AT_MOST = 16


class ContextUsage(NamedTuple):
    """How much of the model's context the chat fills."""

    used: int
    capacity: int
    estimated: bool = False  # a guess (a server that does not count), shown with a "~"

    @property
    def percent(self) -> int:
        return 100 * self.used // self.capacity if self.capacity else 0

    @property
    def level(self) -> str:
        """'ok', 'warn' or 'full' — the toolbar's green, yellow and red."""
        if self.percent >= FULL_PERCENT:
            return "full"
        if self.percent >= WARN_PERCENT:
            return "warn"
        return "ok"

    def short(self) -> str:
        return f"ctx {'~' if self.estimated else ''}{self.used}/{self.capacity} ({self.percent}%)"

    def bar(self, width: int = 30) -> str:
        """The /context line, as hailo-apps' print_context_usage draws it: [Info] Context: [████░░…] 847/4096 (20%)."""
        # Floor division as in hailo-apps' print_context_usage; clamped, since the
        # device's usage can pass its capacity (its KV cache slides).
        filled = min(width, width * self.used // self.capacity) if self.capacity else 0
        estimate = ", estimated" if self.estimated else ""
        gauge = f"[{'█' * filled}{'░' * (width - filled)}]"
        return f"[Info] Context: {gauge} {self.used}/{self.capacity} ({self.percent}%{estimate})"


class ContextOverflowError(Exception):
    """Even the system prompt and the newest message alone do not fit."""


class FittedHistory(NamedTuple):
    """The messages that fit the context, and how many old turns were left out."""

    messages: list[Message]
    dropped_turns: int


RECENT_TURNS = 3  # the turns shown when a saved chat is resumed, or to a terminal arriving mid-chat


def split_turns(messages: Sequence[Message]) -> tuple[list[Message], list[list[Message]]]:
    """Leading system messages, then turns: each a user message and what answers it."""
    system = []
    index = 0
    while index < len(messages) and messages[index]["role"] == "system":
        system.append(messages[index])
        index += 1
    turns: list[list[Message]] = []
    for message in messages[index:]:
        if message["role"] == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return system, turns


def fit_history(
    messages: Sequence[Message],
    count_tokens: Callable[[Sequence[Message]], int],
    capacity: int,
    reserve: int,
) -> FittedHistory:
    """Keep the conversation plus `reserve` tokens within `capacity`, dropping the oldest turns.

    Nothing is dropped while it fits; when it does not, the oldest turns go until the
    conversation takes at most DROP_TO_PERCENT of `capacity - reserve` (hysteresis: the
    next several turns then fit without a full re-read), or only the newest turn is left.
    The system prompt and the newest turn are always kept; `reserve` is room for the reply
    (max tokens). Raises ContextOverflowError when even those do not fit.

    Keeping fewer turns never costs more tokens, so the most turns within a limit are
    found by doubling from the newest turn and then bisecting: O(log k) counts of about k
    turns each, where k is what fits. A long chat is never counted whole unless it all
    fits, so a long /load costs little more than a short chat (trying each number of dropped
    turns in turn was quadratic in the chat's length).
    """
    system, turns = split_turns(messages)

    def newest(count: int) -> list[Message]:
        return system + [m for turn in turns[len(turns) - count :] for m in turn]

    def within(count: int, limit: int) -> bool:
        return count_tokens(newest(count)) + reserve <= limit

    def most_turns_within(limit: int, most: int) -> int:
        """The most newest turns, up to `most`, that fit within `limit` (0 if not even one)."""
        if not within(1, limit):
            return 0
        enough, too_many = 1, 2  # within(enough); too_many is past `most` or does not fit
        while too_many <= most and within(too_many, limit):
            enough, too_many = too_many, 2 * too_many
        too_many = min(too_many, most + 1)
        while too_many - enough > 1:
            middle = (enough + too_many) // 2
            if within(middle, limit):
                enough = middle
            else:
                too_many = middle
        return enough

    # A chat short enough that it may well fit is counted whole first: one count, where the
    # search would take several. (Only speed depends on this: the search finds the same.)
    if sum(len(m["content"]) for m in messages) <= CHARACTERS_PER_TOKEN_AT_MOST * capacity:
        if within(len(turns), capacity):
            return FittedHistory(list(messages), 0)
    fitting = most_turns_within(capacity, len(turns))
    if fitting == len(turns):
        return FittedHistory(list(messages), 0)
    if fitting == 0:
        system_tokens = count_tokens(system) if system else 0
        raise ContextOverflowError(_what_does_not_fit(system_tokens, count_tokens(newest(1)), reserve, capacity))
    goal = reserve + (capacity - reserve) * DROP_TO_PERCENT // 100  # read at each call: the benchmark tries 100
    kept = most_turns_within(goal, fitting) or 1  # the newest turn alone, past the goal, if it fits at all
    return FittedHistory(newest(kept), len(turns) - kept)


SHORTER_REPLY = "allow a shorter reply (--max-tokens, /set max-tokens)"


def _what_does_not_fit(system: int, newest_turn: int, reserve: int, capacity: int) -> str:
    """Why the system prompt and the newest message (`newest_turn` tokens with it) cannot fit,
    naming the one that is too long: the system prompt alone may be."""
    if system + reserve > capacity:
        fix = "shorten it (--system-prompt, /system)" + ("" if system >= capacity else f", or {SHORTER_REPLY}")
        needs = f"the system prompt needs {system} tokens plus {reserve} for the reply"
        return f"{needs}, but the context holds {capacity}; {fix}"
    besides = f" besides the system prompt's {system}" if system else ""
    return (
        f"the message needs {newest_turn - system} tokens{besides}, plus {reserve} for the reply, "
        f"but the context holds {capacity}; shorten it, or {SHORTER_REPLY}"
    )
