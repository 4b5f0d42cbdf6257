"""The installed hailo-repl in a real pseudo-terminal, for end-to-end tests and benchmarks.

prompt_toolkit asks the terminal where the cursor is (ESC[6n) when a prompt starts; a
terminal emulator answers at once. pexpect does not, and prompt_toolkit then neither
draws the bottom toolbar nor leaves raw mode until a 1 s timeout after each prompt
(so a Ctrl+C sent in that second would reach the next prompt as a key). `Terminal`
answers those requests whenever it waits for output, as a terminal would.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import pexpect

CPR_REQUEST = r"\x1b\[6n"
FAKES = Path(__file__).parent / "fakes"  # the hailo_platform double
ANSI_SEQUENCE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[@-Z\\-_])")


def with_fakes(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment (or `env`) with the hailo_platform double first on PYTHONPATH,
    so `import hailo_platform` in hailo-repl finds it."""
    environment = dict(os.environ if env is None else env)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FAKES), environment.get("PYTHONPATH")]))
    return environment


CHATML_MESSAGE = re.compile(r"<\|im_start\|>(\w+)\n(.*?)(?=<\|im_end\|>|<\|im_start\|>|$)", re.DOTALL)


def device_messages(text: str) -> list[tuple[str, str]]:
    """(role, content) of each message in the double's context text (its default template is
    ChatML): what the device holds, whether it came as messages or as text after a loaded context."""
    return [(role, content) for role, content in CHATML_MESSAGE.findall(text) if content or role != "assistant"]


def user_messages_sent(generations: list[dict]) -> list[str]:
    """The newest user message of each generate() the double saw."""
    return [[c for r, c in device_messages(e["held"] + e["inserted"]) if r == "user"][-1] for e in generations]


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
            command[0],
            command[1:] + args,
            env={**os.environ, "TERM": "xterm-256color", **env},
            encoding="utf-8",
            dimensions=(rows, cols),
            timeout=timeout,
        )
        self.child.delaybeforesend = None  # keystrokes go at once, as typed
        self.transcript = io.StringIO()  # all the program wrote, for a failure to show
        self.child.logfile_read = self.transcript

    def expect(self, *patterns, timeout: float | None = -1) -> int:
        """Index of the first of `patterns` to appear (pexpect.EOF/TIMEOUT allowed).

        When neither the pattern nor an allowed EOF/TIMEOUT came, the error says what the
        screen showed last, not only that the wait ran out.
        """
        while True:
            try:
                index = self.child.expect([CPR_REQUEST, *patterns], timeout=timeout)
            except (pexpect.TIMEOUT, pexpect.EOF) as error:
                ended = "the program ended" if isinstance(error, pexpect.EOF) else "timed out"
                raise AssertionError(
                    f"waiting for {patterns!r}: {ended}; the screen showed last:\n{self.screen_text()}"
                ) from None
            if index == 0:
                # Answer as a terminal whose cursor is on its last row (a scrolled chat).
                self.child.send(f"\x1b[{self.rows};1R")
                continue
            return index - 1

    def screen_text(self, size: int = 2000) -> str:
        """The last `size` characters the program wrote, escape sequences removed."""
        return ANSI_SEQUENCE.sub("", self.transcript.getvalue())[-size:]

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
