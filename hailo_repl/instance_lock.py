"""Which of the user's hailo-repl processes hold a local device or finish a reply, so a new
one waits for them instead of failing to open the device, or resuming a chat without the reply.

One file per user, `state_dir()/hailo-repl.lock` (0600, replaced whole under
private_files.update_lock), lists those processes: each one's pid and the time it started
(/proc/<pid>/stat field 22, so a pid the system has since given to another program is not
taken for it), the device it holds, and, once its terminal has hung up mid-reply, the chat
whose reply it is finishing. What waits for what:

- The Hailo-10H: one process at a time opens it (VDevice), so a process registers before it
  opens it, and a new one waits while another live process holds it, chatting or finishing.
- llama.cpp on the CPU holds nothing exclusively: its chats run side by side, as they always
  could, and one registers only when its terminal hangs up mid-reply (the start stays as quick).
- A chat resumed (--resume) waits while another process finishes a reply in it, so the resume
  reads the whole reply (a chat's first reply may not be saved at all yet); -c, the latest
  chat, waits for every reply being finished, since any may be the latest. A chat open in
  another terminal does not make it wait: the second to save goes on as a new chat
  (sessions.py), as before.

An entry whose pid is gone, or whose pid started at another time, is stale: dropped at once.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from hailo_repl.log import logger
from hailo_repl.private_files import read_text_limited, update_lock, write_atomically

HAILO = "hailo"  # the Hailo-10H, which one process at a time opens
DEVICE_NAMES = {HAILO: "The Hailo-10H"}
POLL_SECONDS = 0.2  # how often a waiting process looks again (the holder's end is not announced)
FILE_LIMIT = 1 << 20  # a few hundred bytes a process


def process_start_time(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot: /proc/<pid>/stat field 22), None
    where /proc does not say (no such process, or not Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    # Field 2 is the command name in parentheses, which may hold spaces and parentheses itself.
    fields = text[text.rfind(b")") + 2 :].split()
    try:
        return int(fields[22 - 3])
    except (IndexError, ValueError):
        return None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    except OverflowError:
        return False
    return True


@dataclass(frozen=True)
class Holder:
    pid: int
    started: int | None  # process_start_time(pid) when it registered
    device: str | None  # HAILO, or None (a reply finishing on llama.cpp or a server)
    chat: str | None = None  # the chat whose reply it finishes
    finishing: bool = False  # its terminal hung up; it ends once the reply is saved

    def alive(self) -> bool:
        """Whether the process that registered is still running (not just its pid)."""
        if self.pid <= 0 or not _pid_exists(self.pid):
            return False
        now = process_start_time(self.pid)
        return now is None or self.started is None or now == self.started

    def blocks(self, device: str | None, chat: str | None) -> bool:
        """Whether a process needing `device` and `chat` (an id or its beginning, as --resume
        takes it; '' for the latest chat, which may be any) must wait for this one."""
        same_device = device is not None and device == self.device
        same_chat = chat is not None and self.finishing and self.chat is not None and self.chat.startswith(chat)
        return same_device or same_chat

    def waiting_line(self) -> str:
        """The one line a process waiting for this one shows."""
        if self.finishing:
            where = f"in chat {self.chat}" if self.chat else "(a chat not saved)"
            return (
                f"hailo-repl pid {self.pid} is finishing a reply {where} after its terminal hung up; "
                "waiting for it… (Ctrl+C gives up)"
            )
        device = DEVICE_NAMES.get(self.device or "", "The device")
        return (
            f"{device} is in use by hailo-repl pid {self.pid} (a chat in another terminal); "
            "waiting until it ends… (Ctrl+C gives up)"
        )


def _holder(entry: object) -> Holder | None:
    """An entry of the file as a Holder; None for one this version cannot read."""
    if not isinstance(entry, dict):
        return None
    pid, started, device, chat = (entry.get(key) for key in ("pid", "started", "device", "chat"))
    finishing = entry.get("finishing", False)
    if type(pid) is not int or not (started is None or type(started) is int) or type(finishing) is not bool:
        return None
    if not all(value is None or isinstance(value, str) for value in (device, chat)):
        return None
    return Holder(pid, started, device, chat, finishing)


class InstanceLock:
    """This process's entry in the user's lock file (one per process: `take` it before
    opening a local model, `release` it after the model is released)."""

    def __init__(self, path: Path, pid: int | None = None):
        self.path = path
        self.pid = os.getpid() if pid is None else pid
        self.started = process_start_time(self.pid)
        self._mine: Holder | None = None

    def take(
        self,
        device: str | None,
        chat: str | None = None,
        say: Callable[[str], None] = lambda line: None,
        register: bool = True,
    ) -> bool:
        """Wait while another live process holds `device` or finishes a reply in `chat`, saying
        once per holder why (`say`); then hold `device` (with `register`; without, only wait).
        True if it waited. A Ctrl+C meanwhile is a KeyboardInterrupt. A lock file that cannot be
        used costs only the wait: logged."""
        waited_for: set[Holder] = set()
        while True:
            blocking = self._blocking(self._read(), device, chat)
            if blocking is None and not register:
                return bool(waited_for)
            if blocking is None:
                mine = Holder(self.pid, self.started, device)
                try:
                    with self._entries() as entries:
                        blocking = self._blocking(entries, device, chat)
                        if blocking is None:
                            entries[:] = [h for h in entries if h.pid != self.pid] + [mine]
                except (OSError, TimeoutError) as error:
                    logger.warning("the lock file {} cannot be used ({}): not waiting for others", self.path, error)
                    return bool(waited_for)
                if blocking is None:
                    self._mine = mine
                    return bool(waited_for)
            if blocking not in waited_for:
                logger.info("waiting for {}", blocking)
                say(blocking.waiting_line())
                waited_for.add(blocking)
            time.sleep(POLL_SECONDS)

    def _blocking(self, entries: list[Holder], device: str | None, chat: str | None) -> Holder | None:
        return next((h for h in entries if h.pid != self.pid and h.blocks(device, chat) and h.alive()), None)

    def finishing(self, chat: str | None) -> None:
        """The terminal hung up mid-reply: from now on a process resuming `chat` waits too
        (a process that holds no device registers now)."""
        mine = replace(self._mine or Holder(self.pid, self.started, None), chat=chat, finishing=True)
        try:
            with self._entries() as entries:
                entries[:] = [h for h in entries if h.pid != self.pid] + [mine]
        except (OSError, TimeoutError) as error:
            logger.warning("the lock file {} cannot be used ({})", self.path, error)
            return
        self._mine = mine

    def release(self) -> None:
        """Let go of what this process holds (after the model is released)."""
        if self._mine is None:
            return
        self._mine = None
        try:
            with self._entries() as entries:
                entries[:] = [h for h in entries if h.pid != self.pid]
        except (OSError, TimeoutError) as error:
            logger.warning("the lock file {} cannot be used ({})", self.path, error)

    def holders(self) -> list[Holder]:
        """The live processes in the lock file (a read: nothing is changed)."""
        return [h for h in self._read() if h.alive()]

    def _read(self) -> list[Holder]:
        import json  # (not at the top: most chats never read the file, and a start imports little)

        try:
            data = json.loads(read_text_limited(self.path, FILE_LIMIT))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as error:  # garbled, or not a file: taken as empty, rewritten
            logger.warning("the lock file {} is not readable ({}): taken as empty", self.path, error)
            return []
        entries = data.get("holders") if isinstance(data, dict) else None
        return [h for h in map(_holder, entries if isinstance(entries, list) else []) if h is not None]

    @contextlib.contextmanager
    def _entries(self) -> Iterator[list[Holder]]:
        """The live entries, for the block to change; written back whole (the file removed when
        none is left), under the lock that keeps two processes from both writing their own."""
        with update_lock(self.path):
            before = self._read()
            entries = [h for h in before if h.alive()]
            yield entries
            if entries == before:
                return
            if entries:
                import json

                write_atomically(self.path, json.dumps({"holders": [asdict(h) for h in entries]}, indent=1) + "\n")
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
