"""Word-wrap for a terminal: lines broken at word boundaries, widths counted in cells.

`WordWrap` wraps text as it streams: each word is written once, when it is complete,
on the line it fits (so nothing is ever redrawn); spaces are written at once, except
the one that would reach the last column; a word longer than a whole line is cut at
the edge. Wide characters (CJK, most emoji) take two cells (prompt_toolkit's
`get_cwidth`) and are each a place where a line may break, as CJK text has no spaces.
The width is read again at each new line, so a resize applies from the next line. A tab
goes to the next multiple of TAB_STOP, as on a terminal.

`cell_rows` and `one_row` cut a line into rows as a terminal wraps it, for the pane's rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable

WIDE = 2
TAB_STOP = 8  # a terminal's tab stops (str.expandtabs's too)
ELLIPSIS = "…"
MIN_HANGING_TEXT = 20  # cells a hanging indent must leave for the text, else lines start at column 0
# A table row ("  /help      show the commands"): its continuation lines start under the
# text after the first gap of two or more spaces.
HANGING_COLUMN = re.compile(r"^\s*\S.*?\s{2,}(?=\S)")


class WordWrap:
    def __init__(self, width: Callable[[], int], column: int = 0, indent: int = 0):
        # Imported here: prompt_toolkit takes ~80 ms to import, and `hailo-repl --list-models -q`
        # (asked by shell completion on every Tab) must not pay for it.
        from prompt_toolkit.utils import get_cwidth

        self._cells = get_cwidth
        self._width_of = width
        self._width = max(1, width())
        self.column = column  # cells already on the current line
        self._indent = indent  # spaces that begin each line this wrap breaks
        self._word = ""  # the word being read: written once it is complete
        self._word_cells = 0
        self._at_edge = False  # a space reached the last column: the next word starts a line

    def feed(self, text: str) -> str:
        out: list[str] = []
        for char in text:
            if char == "\n":
                out.append(self._place_word() + "\n")
                self._start_line(0)
            elif char == " " or char == "\t":
                out.append(self._place_word())
                cells = TAB_STOP - self.column % TAB_STOP if char == "\t" else 1
                if self.column + cells < self._width:
                    self.column += cells
                    out.append(char)
                else:
                    self._at_edge = True
            elif self._cells(char) == WIDE:
                out.append(self._place_word())
                self._word, self._word_cells = char, WIDE
                out.append(self._place_word())
            else:
                cells = self._cells(char)
                if self._word_cells + cells > self._width - self._indent:
                    out.append(self._cut_long_word())
                self._word += char
                self._word_cells += cells
        return "".join(out)

    def flush(self) -> str:
        """The end of the text: its last word."""
        return self._place_word()

    def _start_line(self, column: int) -> None:
        self.column = column
        self._at_edge = False
        self._width = max(1, self._width_of())

    def _break(self) -> str:
        self._start_line(self._indent)
        return "\n" + " " * self._indent

    def _place_word(self) -> str:
        """Write the word read so far, on this line if it fits, else on the next."""
        if not self._word:
            return ""
        word, cells = self._word, self._word_cells
        self._word, self._word_cells = "", 0
        fits = not self._at_edge and self.column + cells <= self._width
        text = word if fits or self.column <= self._indent else self._break() + word
        self.column += cells
        return text

    def _cut_long_word(self) -> str:
        """A word as long as a whole line: it takes a line of its own, cut at the edge."""
        text = "" if self.column <= self._indent else self._break()
        text += self._word
        self._word, self._word_cells = "", 0
        return text + self._break()


def wrap_text(text: str, width: int) -> str:
    """`text` with each line wrapped to `width` cells; table rows keep their columns."""
    lines = []
    for line in text.split("\n"):
        hanging = HANGING_COLUMN.match(line)
        indent = len(hanging.group(0)) if hanging else len(line) - len(line.lstrip(" "))
        if indent > width - MIN_HANGING_TEXT:
            indent = 0
        wrap = WordWrap(lambda: width, indent=indent)
        lines.append(wrap.feed(line) + wrap.flush())
    return "\n".join(lines)


def cell_rows(line: str, width: int, last: int | None = None) -> list[str]:
    """`line` (no newline, tabs expanded) in rows of at most `width` cells, as a terminal wraps
    it: a wide character that does not fit starts the next row. With `last`, only the last
    rows, at most that many."""
    from prompt_toolkit.utils import get_cwidth

    width = max(width, WIDE)
    if line.isascii():  # a cell a character (the reply's text has no control characters): rows by slicing
        starts = range(0, max(len(line), 1), width)
        return [line[start : start + width] for start in starts[-last if last else 0 :]]
    rows, row, cells = [], "", 0
    for char in line:
        char_cells = get_cwidth(char)
        if cells + char_cells > width:
            rows.append(row)
            row, cells = "", 0
        row += char
        cells += char_cells
    rows.append(row)
    return rows[-last:] if last else rows


def one_row(line: str, width: int) -> str:
    """`line` if it fits in `width` cells, else as much of its start as fits with an ellipsis after it."""
    from prompt_toolkit.utils import get_cwidth

    cells = 0
    fits = 0  # characters that fit with the ellipsis after them
    for end, char in enumerate(line):
        cells += get_cwidth(char)
        if cells + len(ELLIPSIS) <= width:
            fits = end + 1
        if cells > width:
            return line[:fits] + ELLIPSIS
    return line
