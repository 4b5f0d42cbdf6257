"""The installed hailo-repl in a real pseudo-terminal, for end-to-end tests and benchmarks.

prompt_toolkit asks the terminal where the cursor is (ESC[6n) when a prompt starts; a
terminal emulator answers at once. pexpect does not, and prompt_toolkit then neither
draws the bottom toolbar nor leaves raw mode until a 1 s timeout after each prompt
(so a Ctrl+C sent in that second would reach the next prompt as a key). `Terminal`
answers those requests whenever it waits for output, as a terminal would.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pexpect

CPR_REQUEST = r"\x1b\[6n"


def hailo_repl_command() -> list[str]:
    """The installed console script next to this Python (not a pyenv shim), as a user runs it."""
    script = Path(sys.executable).parent / "hailo-repl"
    if script.exists():
        return [str(script)]
    found = shutil.which("hailo-repl")
    if not found:
        raise RuntimeError("hailo-repl is not installed: pip install -e '.[llama,test]'")
    return [found]


class Terminal:
    def __init__(self, args: list[str], env: dict, rows: int = 30, cols: int = 110, timeout: float = 120):
        command = hailo_repl_command()
        self.rows = rows
        self.child = pexpect.spawn(
            command[0], command[1:] + args, env={**os.environ, "TERM": "xterm-256color", **env},
            encoding="utf-8", dimensions=(rows, cols), timeout=timeout,
        )
        self.child.delaybeforesend = None  # keystrokes go at once, as typed

    def expect(self, *patterns, timeout: float | None = -1) -> int:
        """Index of the first of `patterns` to appear (pexpect.EOF/TIMEOUT allowed)."""
        while True:
            index = self.child.expect([CPR_REQUEST, *patterns], timeout=timeout)
            if index == 0:
                # Answer as a terminal whose cursor is on its last row (a scrolled chat).
                self.child.send(f"\x1b[{self.rows};1R")
                continue
            return index - 1

    @property
    def before(self) -> str:
        return self.child.before if isinstance(self.child.before, str) else ""

    def send(self, text: str) -> None:
        self.child.send(text)

    def interrupt(self) -> None:
        """Ctrl+C as typed: the tty's interrupt character (SIGINT unless a prompt is up)."""
        self.child.sendintr()

    def wait_for_exit(self) -> int | None:
        self.expect(pexpect.EOF)
        self.child.close()
        return self.child.exitstatus
