"""Reply rendering (code highlighting) and the toolbar's text."""

from prompt_toolkit.key_binding.vi_state import InputMode

from hailo_repl.context import ContextUsage
from hailo_repl.render import ReplyRenderer, color_wanted
from hailo_repl.toolbar import ModelState, ToolbarState, toolbar_fragments

REPLY = "Try this:\n```python\nprint('hi')\n```\nThat prints `hi`.\n"
NUMBERED = REPLY.replace("```python\n", "```python [1]\n")  # blocks are numbered for /copy N


def render(text, color=True, size=1):
    renderer = ReplyRenderer(color=color)
    pieces = [renderer.feed(text[i : i + size]) for i in range(0, len(text), size)]
    return pieces, "".join(pieces) + renderer.flush()


def strip_ansi(text):
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_code_blocks_are_highlighted_once_closed():
    pieces, out = render(REPLY)
    assert "\x1b[" in out
    assert strip_ansi(out) == NUMBERED
    # nothing of the block is shown before its closing fence arrives
    before_close = "".join(pieces[: REPLY.index("```\nThat")])
    assert "print" not in before_close


def test_text_outside_code_streams_immediately():
    pieces, _ = render("Hello world, no code here.", size=3)
    assert pieces[0] == "Hel"


def test_no_color_passes_text_through_with_the_block_numbers():
    _, out = render(REPLY, color=False)
    assert out == NUMBERED


def test_an_unclosed_block_is_shown_plain_at_the_end():
    _, out = render("```\nhalf a block", size=4)
    assert out == "``` \x1b[2m[1]\x1b[0m\nhalf a block"  # only the number is styled


def test_toolbar_shows_usage_with_its_level():
    state = ToolbarState("Qwen2.5-1.5B-Instruct", "hailo", ModelState.READY, ContextUsage(3700, 4096), 9.5)
    fragments = toolbar_fragments(state)
    assert ("class:toolbar.ctx.full", "ctx 3700/4096 (90%)") in fragments
    text = "".join(t for _, t in fragments)
    assert "Qwen2.5-1.5B-Instruct" in text and "Hailo-10H" in text and "9.5 tok/s" in text


def test_toolbar_while_loading():
    text = "".join(t for _, t in toolbar_fragments(ToolbarState("m", "llama", ModelState.LOADING)))
    assert "loading model" in text and "ctx" not in text


def test_the_toolbar_starts_with_the_vi_mode_when_vi_keys_are_on():
    state = ToolbarState("m", "hailo", ModelState.READY, vi_mode=InputMode.NAVIGATION)
    assert "".join(text for _, text in toolbar_fragments(state)).startswith(" NORMAL │ m · Hailo-10H")
    state.vi_mode = None
    assert "NORMAL" not in "".join(text for _, text in toolbar_fragments(state))


def test_color_auto_follows_no_color_and_always_or_never_win():
    assert color_wanted("auto", {}) and not color_wanted("auto", {"NO_COLOR": "1"})
    assert color_wanted("always", {"NO_COLOR": "1"})
    assert not color_wanted("never", {})
