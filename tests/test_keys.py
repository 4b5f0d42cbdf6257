"""The key table: /help, the welcome line and the README all show the one in keys.py."""

import re
from pathlib import Path

from hailo_repl.keys import KEYS, keys_help_text, keys_welcome_text

README = Path(__file__).parent.parent / "README.md"


def readme_key_rows() -> list[tuple[str, str]]:
    section = README.read_text().split("### Keys", 1)[1].split("\n\n", 2)[1]
    rows = [re.match(r"\| (.+?) \| (.+) \|$", line) for line in section.splitlines()[2:]]
    return [(row.group(1), row.group(2)) for row in rows if row]


def test_the_readme_key_table_is_the_key_table():
    assert readme_key_rows() == [(row.keys, row.does) for row in KEYS]


def test_help_lists_every_key_and_what_it_does():
    text = keys_help_text()
    for row in KEYS:
        assert re.search(rf"^  {re.escape(row.keys)} +{re.escape(row.does.replace('`', ''))}$", text, re.M)


def test_the_welcome_line_names_sending_newlines_stopping_and_quitting():
    assert keys_welcome_text() == (
        "Type a message and press Enter (Alt+Enter for a new line). "
        "Ctrl+C stops a reply; Ctrl+D or /quit ends the chat."
    )
