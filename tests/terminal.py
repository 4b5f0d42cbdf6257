"""The installed hailo-repl in a real pseudo-terminal, for end-to-end tests and benchmarks.

prompt_toolkit asks the terminal where the cursor is (ESC[6n) when a prompt starts; a
terminal emulator answers at once. pexpect does not, and prompt_toolkit then neither
draws the bottom toolbar nor leaves raw mode until a 1 s timeout after each prompt
(so a Ctrl+C sent in that second would reach the next prompt as a key). `Terminal`
answers those requests whenever it waits for output, as a terminal would.

While a reply streams, the prompt is up and prompt_toolkit redraws only the cells that
change, so text on screen need not be contiguous in the bytes: `Terminal.screen` (pyte)
is what a terminal would show, scrollback included, and `expect_screen` waits on it.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import sys
import sysconfig
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pexpect
import pyte

CPR_REQUEST = r"\x1b\[6n"
PROMPT = "You: "
QWEN = "Qwen2.5-1.5B-Instruct"  # the model the e2e tests run on the double
TOOLBAR = re.compile(r" · .* │ ")  # the toolbar's "model · backend │ …"
REPLYING = re.compile(r"│ (generating|waiting for the first token) ")
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
    """The installed console script of this Python (beside it in a virtualenv, else in its scripts
    folder; not a pyenv shim), as a user runs it. Never a path made from another by string surgery."""
    for folder in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        script = folder / "hailo-repl"
        if script.exists():
            return [str(script)]
    found = shutil.which("hailo-repl")
    if not found:
        raise RuntimeError("hailo-repl is not installed: pip install -e '.[llama,test]'")
    return [found]


def wait_until(found: Callable[[], object], what: str, timeout: float = 30):
    """`found()`'s first true value, asked every 20 ms (a file written, a process gone, a lock
    taken by another process); an AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while not (result := found()):
        if time.monotonic() > deadline:
            raise AssertionError(f"waiting for {what}: timed out")
        time.sleep(0.02)
    return result


def exit_code_of(pid: int, timeout: float) -> int:
    """The exit code of child process `pid` once it ends; if it has not within `timeout`, it is
    killed (by its pid) and the test fails."""
    deadline = time.monotonic() + timeout
    while True:
        ended, status = os.waitpid(pid, os.WNOHANG)
        if ended:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"process {pid} had not ended after {timeout} s: killed")
        time.sleep(0.02)


class _TmuxLikeScreen(pyte.HistoryScreen):
    """pyte's screen, erasing as tmux does: "erase below" with the cursor at the top-left
    corner moves the screen's rows into the scrollback (tmux screen_write_clearendofscreen)
    instead of dropping them, so a program that erases its frame from there leaves a copy
    of it in the scrollback."""

    def erase_in_display(self, how: int = 0, *args, **kwargs) -> None:
        if how == 0 and self.cursor.x == 0 and self.cursor.y == 0:
            used = [y for y, row in enumerate(self.display) if row.strip()]
            for y in range(max(used, default=-1) + 1):
                row = type(self.buffer[y])(self.buffer[y].default)
                row.update(self.buffer[y])
                self.history.top.append(row)
        super().erase_in_display(how, *args, **kwargs)


class ScreenModel:
    """What a terminal shows of the program's output (pyte, with its scrollback, erasing as
    tmux does), for checks on the screen rather than on the bytes: a live prompt redraws
    only the cells that change."""

    def __init__(self, rows: int, cols: int):
        self.screen = _TmuxLikeScreen(cols, rows, history=100_000)
        self.stream = pyte.Stream(self.screen)

    def write(self, text: str) -> None:  # pexpect's logfile_read
        self.stream.feed(text)

    def flush(self) -> None:
        pass

    def resize(self, rows: int, cols: int) -> None:
        self.screen.resize(rows, cols)

    def _text(self, line) -> str:
        return "".join(line[x].data for x in range(self.screen.columns)).rstrip()

    def rows(self) -> list[str]:
        """The screen's rows now, top to bottom."""
        return [self._text(self.screen.buffer[y]) for y in range(self.screen.lines)]

    def scrollback(self) -> list[str]:
        """The rows scrolled off the top, then the screen's rows: everything, as a user scrolls back."""
        return [self._text(line) for line in self.screen.history.top] + self.rows()

    def last_row(self) -> str:
        """The screen's last row with something on it."""
        return next((row for row in reversed(self.rows()) if row.strip()), "")


class Terminal:
    """The installed hailo-repl in a pseudo-terminal. Every Terminal a test opens is closed when the
    test ends, passed or failed (`close_all`, called by an autouse fixture in conftest.py)."""

    opened: list[Terminal] = []  # not yet closed by close_all

    @classmethod
    def close_all(cls) -> None:
        while cls.opened:
            cls.opened.pop().close()

    def __init__(self, args: list[str], env: dict, rows: int = 30, cols: int = 110, timeout: float = 120):
        command = hailo_repl_command()
        self.rows = rows
        # The terminal's size is its own: not $COLUMNS and $LINES from the tests' environment
        # (pytest-xdist's workers have 80 and 24 there), unless the test gives them. A variable
        # given as None is left out (a setting at its default, not the suite's pin: conftest).
        inherited = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        environment = {**inherited, "TERM": "xterm-256color", **env}
        self.child = pexpect.spawn(
            command[0],
            command[1:] + args,
            env={name: value for name, value in environment.items() if value is not None},
            encoding="utf-8",
            dimensions=(rows, cols),
            timeout=timeout,
        )
        self.child.delaybeforesend = None  # keystrokes go at once, as typed
        self.transcript = io.StringIO()  # all the program wrote, for a failure to show
        self.screen = ScreenModel(rows, cols)
        self.child.logfile_read = _Both(self.transcript, self.screen)
        Terminal.opened.append(self)

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

    def expect_screen(self, pattern: str, timeout: float = 60) -> re.Match:
        """Wait until `pattern` shows on the screen (the rows now, not the scrollback)."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, "\n".join(self.screen.rows()))
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"waiting for {pattern!r} on screen: timed out; it showed:\n{self.screen_rows()}")
            self.pump(0.02)

    def expect_reply_end(self, timeout: float = 60) -> None:
        """Wait until no reply streams: the toolbar (the last row) says neither "generating" nor "waiting"
        (the terminal must be wide enough for the toolbar to show them: about 100 columns)."""
        deadline = time.monotonic() + timeout
        while REPLYING.search(self.screen.last_row()) or not TOOLBAR.search(self.screen.last_row()):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"waiting for the reply to end: timed out; the screen showed:\n{self.screen_rows()}"
                )
            self.pump(0.02)

    def wait_until(self, condition: Callable[[], object], what: str, timeout: float = 60) -> None:
        """Read what the program writes (answering cursor-position requests) until `condition()`
        holds: an event in the double's log, a terminal mode; an AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"waiting for {what}: timed out; the screen showed:\n{self.screen_rows()}")
            self.pump(0.01)

    def pump(self, seconds: float) -> None:
        """Read what the program writes for `seconds`, answering cursor-position requests."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                if self.child.expect([CPR_REQUEST, pexpect.TIMEOUT], timeout=left) == 0:
                    self.child.send(f"\x1b[{self.rows};1R")
            except pexpect.EOF:
                return

    def screen_rows(self) -> str:
        return "\n".join(self.screen.rows())

    def resize(self, rows: int, cols: int) -> None:
        """The terminal's window resized (SIGWINCH to the program)."""
        self.rows = rows
        self.screen.resize(rows, cols)
        self.child.setwinsize(rows, cols)

    def screen_text(self, size: int = 2000) -> str:
        """The last `size` characters the program wrote, escape sequences removed."""
        return ANSI_SEQUENCE.sub("", self.transcript.getvalue())[-size:]

    @property
    def before(self) -> str:
        return self.child.before if isinstance(self.child.before, str) else ""

    def send(self, text: str) -> None:
        self.child.send(text)

    def close_window(self) -> None:
        """The terminal's window closes mid-chat: its side of the pty goes (the program gets SIGHUP).
        Through the file object, so that nothing closes the descriptor's number again later."""
        self.child.ptyproc.fileobj.close()

    def interrupt(self) -> None:
        """Ctrl+C as typed: the tty's interrupt character (SIGINT unless a prompt is up)."""
        self.child.sendintr()

    def wait_for_exit(self) -> int | None:
        self.expect(pexpect.EOF)
        self.child.close()
        return self.child.exitstatus

    def exchange(self, text: str, answer: str) -> None:
        """Send `text`, see `answer` (a pattern), and wait until the reply has ended."""
        self.send(text + "\r")
        self.expect(answer)
        self.expect_reply_end()

    def quit(self) -> int | None:
        """End the chat with /quit; its exit status."""
        self.send("/quit\r")
        return self.wait_for_exit()

    def close(self) -> None:
        """Stop the program if it still runs, and what it started: the pty made it the leader of
        its own process group, whose id is its recorded pid."""
        if not self.child.closed:
            # SIGHUP (hailo-repl's clean end), SIGKILL if that fails. OSError: the test closed the
            # terminal's side itself (a window closing); ExceptionPexpect: the test reaped the process
            # itself (exit_code_of); the group's check below stops the rest.
            with contextlib.suppress(OSError, pexpect.ExceptionPexpect):
                self.child.close(force=True)
        if _process_group_alive(self.child.pid):  # (the pid stays reserved while its group lives)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.child.pid, signal.SIGKILL)


def _process_group_alive(group: int) -> bool:
    """Whether a process (not a zombie) is in process group `group` (/proc/PID/stat's 5th field)."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as file:
                    state, _parent, process_group = file.read().rsplit(")", 1)[1].split()[:3]
            except OSError:
                continue  # it ended meanwhile
            if int(process_group) == group and state != "Z":
                return True
    return False


class _Both:
    """A file-like that writes to two: the transcript and the screen model."""

    def __init__(self, *files):
        self.files = files

    def write(self, text: str) -> None:
        for file in self.files:
            file.write(text)

    def flush(self) -> None:
        pass
