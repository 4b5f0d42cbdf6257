"""Filtering of the model's token stream before it reaches the terminal.

`StreamingTextFilter` removes the markup Hailo's models wrap replies in
(`<text>`, `</text>`), whole `<tool_call>…</tool_call>` and
`<tool_response>…</tool_response>` blocks, and `<|im_end|>`-style special
tokens, however the stream is split into tokens; and it drops terminal control
characters so a model cannot move the cursor or change colours.

The filter decides at every `<` whether markup starts there. When the text it
has so far is only the beginning of a possible tag it waits for the next token;
every decision depends on the text alone, never on where tokens were split, so
feeding any split yields the same output as feeding the whole string.
"""

from __future__ import annotations

import re
from typing import Literal

# Tags dropped on their own; their content is kept.
WRAPPER_TAGS = ("<text>", "</text>")
# Blocks dropped with everything inside them.
HIDDEN_BLOCKS = {"<tool_call>": "</tool_call>", "<tool_response>": "</tool_response>"}
# Special tokens such as <|im_end|> or <|endoftext|>; the name is short and plain.
SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z0-9_.:\-]{1,40}\|>")
SPECIAL_TOKEN_PREFIX = re.compile(r"<(\|([A-Za-z0-9_.:\-]{0,40}(\|)?)?)?\Z")

_KEEP_CONTROLS = {"\n", "\t"}
# Format characters that change how text looks without being seen: bidi marks, embeddings,
# overrides and isolates (a reply could display otherwise than it reads), the zero-width
# space, word joiner and BOM. The zero-width joiner and non-joiner stay: emoji sequences
# (👨‍👩‍👧) and scripts such as Persian and the Indic ones need them.
_HIDDEN_FORMAT = frozenset("\u061c\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2066\u2067\u2068\u2069\ufeff")


def terminal_safe(text: str) -> str:
    """Text that did not come from hailo-repl, made safe to write to a terminal: C0/C1
    control characters (ESC, CR, BEL, …) and the hidden format characters above removed;
    newlines and tabs kept."""
    if text.isprintable() or text.replace("\n", "").replace("\t", "").isprintable():
        return text  # the common case (lines, and paragraphs): every character removed here is unprintable
    import unicodedata  # (here: loading it took ~0.3 ms of every start)

    return "".join(
        ch for ch in text if ch in _KEEP_CONTROLS or (unicodedata.category(ch) != "Cc" and ch not in _HIDDEN_FORMAT)
    )


def _markup_at(text: str) -> tuple[str, int] | None | Literal[True]:
    """What the markup starting at text[0] == '<' is.

    Returns ("drop", length) for a tag to remove, ("hide", length) for a hidden
    block's opening tag, None when no markup starts here, and True when `text`
    is still a prefix of some markup and more input is needed to decide.
    """
    for tag in WRAPPER_TAGS:
        if text.startswith(tag):
            return ("drop", len(tag))
    for tag in HIDDEN_BLOCKS:
        if text.startswith(tag):
            return ("hide", len(tag))
    match = SPECIAL_TOKEN.match(text)
    if match:
        return ("drop", match.end())
    could_grow = any(tag.startswith(text) for tag in (*WRAPPER_TAGS, *HIDDEN_BLOCKS))
    if could_grow or SPECIAL_TOKEN_PREFIX.match(text):
        return True
    return None


class StreamingTextFilter:
    """Turns raw model tokens into displayable text, one `feed()` per token."""

    def __init__(self) -> None:
        self._pending = ""  # text held back because it may be the start of markup
        self._closing_tag: str | None = None  # set while inside a hidden block

    def feed(self, token: str) -> str:
        self._pending += token
        out: list[str] = []
        while self._pending:
            if self._closing_tag is not None:
                if not self._skip_hidden_block():
                    break
                continue
            start = self._pending.find("<")
            if start < 0:
                out.append(self._pending)
                self._pending = ""
                break
            out.append(self._pending[:start])
            self._pending = self._pending[start:]
            markup = _markup_at(self._pending)
            if markup is True:
                break  # undecided: wait for more tokens
            if markup is None:
                out.append("<")
                self._pending = self._pending[1:]
                continue
            kind, length = markup
            if kind == "hide":
                self._closing_tag = HIDDEN_BLOCKS[self._pending[:length]]
            self._pending = self._pending[length:]
        return terminal_safe("".join(out))

    def _skip_hidden_block(self) -> bool:
        """Drop hidden text; True once the closing tag has been consumed."""
        assert self._closing_tag is not None
        end = self._pending.find(self._closing_tag)
        if end >= 0:
            self._pending = self._pending[end + len(self._closing_tag) :]
            self._closing_tag = None
            return True
        # Keep only a tail that could still be the start of the closing tag.
        keep = 0
        for size in range(min(len(self._closing_tag) - 1, len(self._pending)), 0, -1):
            if self._closing_tag.startswith(self._pending[-size:]):
                keep = size
                break
        self._pending = self._pending[len(self._pending) - keep :] if keep else ""
        return False

    def flush(self) -> str:
        """End of stream: text held back as a possible tag was plain text after all."""
        # Inside an unclosed hidden block the rest stays hidden.
        rest = self._pending if self._closing_tag is None else ""
        self._pending = ""
        self._closing_tag = None
        return terminal_safe(rest)


def filter_text(text: str) -> str:
    """The filter applied to a whole string at once."""
    stream = StreamingTextFilter()
    return stream.feed(text) + stream.flush()


def clean_response(raw: str) -> str:
    """The reply as stored in the conversation: markup removed, outer whitespace trimmed."""
    return filter_text(raw).strip()
