"""Whole numbers as a user types them: the one digit rule for every place that reads one."""

from __future__ import annotations


def whole_number(text: str) -> int | None:
    """`text` as a whole number, read as int() reads it (the decimal digits of any script, so
    `٣` is 3; `1_000`; a sign), or None. (`str.isdigit()` is no test for it: `²` is a digit
    to it that int() refuses.)"""
    try:
        return int(text)
    except ValueError:
        return None
