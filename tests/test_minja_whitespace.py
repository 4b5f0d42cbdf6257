"""The whitespace a template's tags leave or take, as HailoRT's minja does it, against ChatTemplate.

minja (google/minja 5856862, the commit HailoRT v5.2.0 pins in hailort/cmake/external/minja.cmake)
decides what of a template's text is kept in include/minja/minja.hpp: `Parser::tokenize` splits
the source at `{{`, `{%` and `{#` and reads each tag's `-` markers, and `Parser::parseTemplate`
trims each text token by its neighbours (a `-` strips every space; otherwise lstrip_blocks takes
the spaces and tabs that start a line before any tag, `{{` included, and trim_blocks one newline
after any tag but `{{ }}`; the template's last newline goes). Those rules are ported below, for
templates of text, `{{ 'X' }}`, `{% set %}`, `{% if true/false %}` and comments, and compared with
ChatTemplate on generated templates: this pins Jinja2's lexer too, which `jinja2>=3.0` lets move.
A slip here is a newline more or less in every prompt sent as text after a loaded context.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import pytest

from hailo_repl.backends.chat_template import ChatTemplate

# What a `-` strips: std::regex's \s (ECMAScript, on chars).
TRAILING_SPACES = re.compile(r"[ \t\n\r\f\v]+$")
LEADING_SPACES = re.compile(r"^[ \t\n\r\f\v]+")
TAG_OPEN = re.compile(r"\{\{|\{%|\{#")
COMMENT = re.compile(r"\{#(-?)([\s\S]*?)(-?)#\}")
EXPRESSION = re.compile(r"\{\{(-?)\s*'([^']*)'\s*(-?)\}\}")
BLOCK = re.compile(r"\{%(-?)\s*(if true|if false|endif|set v = 1)\s*(-?)%\}")


@dataclass
class Token:
    kind: str  # text, expression, block, comment
    value: str  # the text, the expression's string, or the block's words
    strip_before: bool = False  # a `-` at the tag's start: the text before loses its spaces
    strip_after: bool = False  # a `-` at its end: the text after loses them


def tokenize(source: str) -> list[Token]:
    """minja.hpp `Parser::tokenize`, for the tags these templates have."""
    tokens, at = [], 0
    while at < len(source):
        for kind, pattern in (("comment", COMMENT), ("expression", EXPRESSION), ("block", BLOCK)):
            match = pattern.match(source, at)
            if match:
                before, value, after = match.groups()
                tokens.append(Token(kind, value, before == "-", after == "-"))
                at = match.end()
                break
        else:
            found = TAG_OPEN.search(source, at)
            end = found.start() if found else len(source)
            assert end > at, f"not a tag these templates have: {source[at:]!r}"
            tokens.append(Token("text", source[at:end]))
            at = end
    return tokens


def minja_text(tokens: list[Token], index: int) -> str:
    """minja.hpp `Parser::parseTemplate` for the text token at `index` (trim_blocks and
    lstrip_blocks on, keep_trailing_newline off: chat-template.hpp's options)."""
    text = tokens[index].value
    before = tokens[index - 1] if index > 0 else None
    after = tokens[index + 1] if index + 1 < len(tokens) else None
    if after is not None and after.strip_before:
        text = TRAILING_SPACES.sub("", text)
    elif after is not None:  # lstrip_blocks, before any tag
        kept = len(text.rstrip(" \t"))
        if (kept == 0 and index == 0) or (kept > 0 and text[kept - 1] == "\n"):
            text = text[:kept]
    if before is not None and before.strip_after:
        text = LEADING_SPACES.sub("", text)
    elif before is not None and before.kind != "expression" and text.startswith("\n"):  # trim_blocks
        text = text[1:]
    if after is None:  # keep_trailing_newline off
        if text.endswith("\n"):
            text = text[:-1]
            if text.endswith("\r"):
                text = text[:-1]
    return text


def minja_render(source: str) -> str:
    tokens = tokenize(source)
    shown, active = [], [True]
    for index, token in enumerate(tokens):
        if token.kind == "block" and token.value.startswith("if"):
            active.append(active[-1] and token.value == "if true")
        elif token.kind == "block" and token.value == "endif":
            active.pop()
        elif not active[-1]:
            continue
        elif token.kind == "text":
            shown.append(minja_text(tokens, index))
        elif token.kind == "expression":
            shown.append(token.value)
    return "".join(shown)


TEXTS = ["a", "b", " ", "  ", "\t", "\n", "\n\n", " \n", "\n  ", "x y", "\t\n"]


def random_template(rng: random.Random) -> str:
    def tag(opening: str, words: str, closing: str) -> str:
        before = "-" if rng.random() < 0.3 else ""
        after = "-" if rng.random() < 0.3 else ""
        inner_before = rng.choice(["", " ", "  "]) if before or opening != "{#" else rng.choice([" ", ""])
        return f"{opening}{before}{inner_before}{words}{rng.choice(['', ' '])}{after}{closing}"

    pieces, open_ifs = [], 0
    for _ in range(rng.randint(1, 9)):
        choice = rng.random()
        if choice < 0.45:
            pieces.append("".join(rng.choice(TEXTS) for _ in range(rng.randint(1, 3))))
        elif choice < 0.6:
            pieces.append(tag("{{", f"'{rng.choice(['X', 'Y Z', ''])}'", "}}"))
        elif choice < 0.7:
            pieces.append(tag("{%", "set v = 1", "%}"))
        elif choice < 0.8:
            pieces.append(tag("{%", rng.choice(["if true", "if true", "if false"]), "%}"))
            open_ifs += 1
        elif choice < 0.9 and open_ifs:
            pieces.append(tag("{%", "endif", "%}"))
            open_ifs -= 1
        else:
            pieces.append(tag("{#", "note", "#}"))
    pieces.extend(tag("{%", "endif", "%}") + rng.choice(["", "\n", " "]) for _ in range(open_ifs))
    return "".join(pieces)


def test_the_port_follows_minjas_rules_on_known_cases():
    """Cases worked out by hand from minja.hpp, so the port itself is checked."""
    assert minja_render("a\n  {{ 'X' }}\n") == "a\nX"  # the last newline goes
    assert minja_render("a\n  {{ 'X' }}b") == "a\nXb"  # lstrip before `{{` too (Jinja2 alone keeps it)
    assert minja_render("{% if true %}\nA\n{% endif %}\n") == "A\n"  # trim_blocks after each block
    assert minja_render("{{ 'X' }}\nA") == "X\nA"  # but not after an expression
    assert minja_render("A  {{- 'X' -}}  \n B") == "AXB"
    assert minja_render("A\n\n") == "A\n"  # one trailing newline goes


@pytest.mark.parametrize("seed", [1, 7])
def test_chat_template_renders_text_tokens_as_minja_does(seed):
    rng = random.Random(seed)
    mismatches = []
    for _ in range(150):
        source = random_template(rng)
        expected = minja_render(source)
        got = ChatTemplate(source).render([], add_generation_prompt=False)
        if got != expected:
            mismatches.append((source, expected, got))
    assert mismatches == [], mismatches[:3]
