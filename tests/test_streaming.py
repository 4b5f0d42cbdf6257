"""StreamingTextFilter: markup and control characters never reach the terminal, however tokens split."""

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hailo_repl.streaming import StreamingTextFilter, clean_response, filter_text


def stream(tokens):
    text_filter = StreamingTextFilter()
    return "".join(text_filter.feed(t) for t in tokens) + text_filter.flush()


def test_wrapper_tags_and_special_tokens_are_removed():
    assert filter_text("<text>Paris is the capital.</text><|im_end|>") == "Paris is the capital."


def test_tool_blocks_are_hidden_with_their_content():
    raw = 'Sure.<tool_call>{"name": "x"}</tool_call> Done<tool_response>42</tool_response>!'
    assert filter_text(raw) == "Sure. Done!"


def test_tags_split_across_tokens_are_still_removed():
    tokens = ["<te", "xt>Hel", "lo</t", "ext><|im", "_e", "nd|>"]
    assert stream(tokens) == "Hello"


def test_text_is_released_as_soon_as_it_cannot_be_markup():
    text_filter = StreamingTextFilter()
    assert text_filter.feed("a < b") == "a < b"
    assert text_filter.feed(" and <") == " and "  # the '<' might start a tag: held back
    assert text_filter.feed("= c") == "<= c"


def test_a_tag_prefix_at_the_end_of_the_stream_is_shown_as_text():
    assert stream(["x <te"]) == "x <te"


def test_an_unclosed_tool_call_stays_hidden():
    assert stream(["ok <tool_call>{", "secret"]) == "ok "


def test_a_closing_tag_split_in_two_ends_the_hidden_block():
    assert stream(["ok<tool_call>x</tool", "_call> after"]) == "ok after"
    assert stream(["ok<tool_response>42</", "tool_response>!"]) == "ok!"


@pytest.mark.parametrize("cut", range(1, len("</tool_call>")))
def test_a_closing_tag_split_at_any_point_ends_the_hidden_block(cut):
    closing = "</tool_call>"
    assert stream(["Sure.<tool_call>{}", closing[:cut], closing[cut:] + " Done."]) == "Sure. Done."


def test_a_closing_tag_one_character_a_token_ends_the_hidden_block():
    assert stream(["a<tool_call>secret", *"</tool_call>", "b"]) == "ab"


def test_the_text_after_a_split_closing_tag_shows_with_the_token_that_completes_it():
    text_filter = StreamingTextFilter()
    assert text_filter.feed("ok<tool_call>x</tool") == "ok"
    assert text_filter.feed("_call> after") == " after"  # at once, not at the end of the reply


def test_a_split_piece_that_only_looks_like_the_closing_tag_keeps_the_block_hidden():
    assert stream(["ok<tool_call>x</tool", "_cat> still hidden </tool_c", "ll> more", "</tool_call>end"]) == "okend"


def test_terminal_control_sequences_are_neutralised():
    shown = filter_text("\x1b[2J\x1b]0;pwned\x07red\rline\n\ttab\x9b")
    assert "\x1b" not in shown and "\x07" not in shown and "\r" not in shown and "\x9b" not in shown
    assert shown.endswith("redline\n\ttab")


def test_clean_response_keeps_the_reply_only():
    assert clean_response("  <text>\nHi there\n</text><|im_end|>\n") == "Hi there"


def test_other_angle_brackets_are_plain_text():
    assert filter_text("if a<b and c>d: <br> <|not a token") == "if a<b and c>d: <br> <|not a token"


MARKUP = [
    "<text>",
    "</text>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<|im_end|>",
    "<|endoftext|>",
    "<",
    "<|",
    "|>",
    ">",
    "\x1b[31m",
    "\r",
]
pieces = st.lists(st.one_of(st.sampled_from(MARKUP), st.text(max_size=6)), max_size=25)


@settings(max_examples=400, deadline=None)
@given(pieces, st.data())
def test_any_split_gives_the_same_output_as_the_whole(parts, data):
    whole = "".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=12)))
    tokens = [whole[a:b] for a, b in zip([0] + cuts, cuts + [len(whole)], strict=True)]
    assert stream(tokens) == filter_text(whole)


@settings(max_examples=300, deadline=None)
@given(pieces)
def test_output_never_contains_control_characters(parts):
    shown = filter_text("".join(parts))
    assert all(ch in "\n\t" or unicodedata.category(ch) != "Cc" for ch in shown)
