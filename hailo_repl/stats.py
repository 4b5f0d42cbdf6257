"""Timing of one reply, and its `--verbose` block in the style of `ollama run --verbose`."""

from __future__ import annotations

from dataclasses import dataclass


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    return f"{seconds:.2f}s"


def _rate(tokens: int, seconds: float) -> str:
    return f"{tokens / seconds:.2f} tokens/s" if seconds > 0 else "n/a"


@dataclass
class ReplyStats:
    """The counts and timings of one reply."""

    prompt_tokens: int = 0  # tokens evaluated as prompt (cached prefix excluded)
    generated_tokens: int = 0
    time_to_first_token: float = 0.0  # seconds from request to first token
    total: float = 0.0  # seconds from request to the last token
    load: float = 0.0  # seconds spent loading the model (first reply only)

    @property
    def generation_time(self) -> float:
        return max(self.total - self.time_to_first_token, 0.0)

    @property
    def tokens_per_second(self) -> float:
        # The first token is produced by prompt evaluation; the rate counts the others.
        if self.generated_tokens <= 1 or self.generation_time <= 0:
            return 0.0
        return (self.generated_tokens - 1) / self.generation_time

    def verbose_block(self) -> str:
        return "\n".join(
            [
                f"total duration:       {_duration(self.total + self.load)}",
                f"load duration:        {_duration(self.load)}",
                f"prompt eval count:    {self.prompt_tokens} token(s)",
                f"prompt eval duration: {_duration(self.time_to_first_token)}",
                f"prompt eval rate:     {_rate(self.prompt_tokens, self.time_to_first_token)}",
                f"eval count:           {self.generated_tokens} token(s)",
                f"eval duration:        {_duration(self.generation_time)}",
                f"eval rate:            {_rate(max(self.generated_tokens - 1, 0), self.generation_time)}",
                f"time to first token:  {_duration(self.time_to_first_token)}",
            ]
        )
