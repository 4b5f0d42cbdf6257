"""Word-wrap: lines break at word boundaries, in terminal cells, as text streams."""

import io

from hypothesis import given, settings
from hypothesis import strategies as st
from prompt_toolkit.utils import get_cwidth

from hailo_repl.console import Console
from hailo_repl.render import ReplyRenderer
from hailo_repl.wrap import WordWrap, cell_rows, one_row, wrap_text

PREFIX = "Assistant: "


def stream(text, width, column=0, size=3):
    wrap = WordWrap(lambda: width, column)
    return "".join(wrap.feed(text[i : i + size]) for i in range(0, len(text), size)) + wrap.flush()


def cells(line):
    """The cells `line` takes on a terminal: wide characters two, a tab to the next multiple of 8."""
    column = 0
    for char in line:
        column += 8 - column % 8 if char == "\t" else get_cwidth(char)
    return column


def test_a_long_reply_breaks_between_words_not_inside_them():
    text = "Python is a language used for many things including web servers and data science."
    lines = (PREFIX + stream(text, 30, len(PREFIX))).split("\n")
    assert lines == [
        "Assistant: Python is a ",
        "language used for many things",  # its space would have reached the last column
        "including web servers and data",
        "science.",
    ]


def test_a_word_longer_than_a_line_is_cut_at_the_edge_on_its_own_line():
    out = stream("see https://example.com/a/very/long/path/indeed now", 20)
    assert out.split("\n") == ["see ", "https://example.com/", "a/very/long/path/ind", "eed now"]


def test_wide_characters_count_two_cells_and_break_anywhere():
    text = "中文文本没有空格所以每个字都可以换行。Emoji 🎉🎉 too."
    lines = (PREFIX + stream(text, 40, len(PREFIX), size=2)).split("\n")
    assert [cells(line) for line in lines] == [39, 25]  # at 39 cells the next character needs 2: next line
    assert "".join(lines) == PREFIX + text


def test_a_new_width_applies_from_the_next_line():
    widths = iter([20, 10, 10, 10])
    wrap = WordWrap(lambda: next(widths))
    out = wrap.feed("one two three four five six\nseven eight nine") + wrap.flush()
    # The first line was begun at 20 columns; the resize to 10 applies to lines after it.
    assert out.split("\n") == ["one two three four ", "five six", "seven ", "eight nine"]


def test_a_tab_takes_the_cells_to_the_next_tab_stop_as_on_a_terminal():
    assert stream("tab:\tone\ttwo\t\tthree", 20).split("\n") == ["tab:\tone\ttwo", "three"]
    lines = stream("\t\t\t" + "x" * 20 + " end", 40).split("\n")
    assert lines == ["\t\t\t", "x" * 20 + " end"]  # 24 + 20 cells: the word goes whole to the next line


def test_rows_are_cut_in_cells_as_a_terminal_wraps_them():
    cjk = "漢字かな交じり文" * 10  # 160 cells
    rows = cell_rows(cjk, 21)
    assert all(cells(row) <= 21 for row in rows) and "".join(rows) == cjk
    assert [cells(row) for row in rows[:2]] == [20, 20]  # the 11th wide character does not fit in 21 cells
    assert cell_rows(cjk, 21, last=3) == rows[-3:]
    assert cell_rows("a" * 25, 10, last=2) == ["a" * 10, "a" * 5]
    assert one_row("queued: " + "漢" * 20, 20) == "queued: 漢漢漢漢漢…"
    assert one_row("queued: short", 20) == "queued: short"
    assert cells(one_row("x" * 50, 20)) == 20


@settings(max_examples=300, deadline=None)
@given(
    words=st.lists(st.text(alphabet="abcdeé中文🎉-.,", min_size=1, max_size=12), min_size=1, max_size=40),
    separators=st.lists(st.sampled_from([" ", "  ", "\n", " \n", "\t", " \t\t"]), min_size=40, max_size=40),
    width=st.integers(min_value=12, max_value=80),
    size=st.integers(min_value=1, max_value=7),
)
def test_wrapping_only_adds_line_breaks_never_passes_the_width_and_keeps_words_whole(words, separators, width, size):
    text = "".join(word + separator for word, separator in zip(words, separators, strict=False))
    out = stream(text, width, size=size)
    assert all(cells(line) <= width for line in out.split("\n"))
    # Same text once spaces and line ends are set aside: nothing lost, nothing added.
    assert "".join(out.split()) == "".join(text.split())
    # Words of narrow letters shorter than a line are never split (wide ones may break anywhere).
    narrow = [w for w in text.split() if all(get_cwidth(c) == 1 for c in w)]
    assert all(w in out.split() or any(get_cwidth(c) == 2 for c in w) for w in narrow)


def test_code_blocks_are_not_rewrapped_and_prose_around_them_is():
    code_line = "    result = some_function(argument_one, argument_two, argument_three)"
    reply = f"Here is the code you asked for today:\n```python\n{code_line}\n```\nAnd that is the end of it all.\n"
    for color in (True, False):
        renderer = ReplyRenderer(color, WordWrap(lambda: 30, len(PREFIX)))
        out = "".join(renderer.feed(reply[i : i + 4]) for i in range(0, len(reply), 4)) + renderer.flush()
        plain = __import__("re").sub(r"\x1b\[[0-9;]*m", "", out)
        assert code_line in plain.split("\n")  # one line, as the model wrote it, wider than 30
        assert plain.startswith("Here is the code \nyou asked for today:\n")  # after the 11-cell prefix
        assert plain.endswith("```\nAnd that is the end of it all.\n")  # 30 cells: fits exactly


def test_own_lines_wrap_with_table_rows_keeping_their_column():
    console = Console(io.StringIO(), wrap_width=lambda: 60)
    console.info("Dropped the 3 oldest turn(s) to make room (the system prompt is kept).")
    console.say("  /clear        erase the conversation and reset the model's context window")
    assert console.stream.getvalue().split("\n") == [
        "[Info] Dropped the 3 oldest turn(s) to make room (the system",
        "prompt is kept).",
        "  /clear        erase the conversation and reset the model's",
        "                context window",
        "",
    ]


def test_own_lines_are_not_wrapped_when_word_wrap_is_off():
    line = "word " * 30
    console = Console(io.StringIO(), wrap_width=lambda: None)
    console.say(line)
    assert console.stream.getvalue() == line + "\n"
    assert wrap_text(line, 1000) == line
