"""The user's lock file (hailo_repl.instance_lock): who waits for whom, and what is stale.
The processes themselves are tested in test_e2e_hangup.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
import time

import pytest

from hailo_repl import instance_lock
from hailo_repl.instance_lock import HAILO, Holder, InstanceLock, process_start_time


@pytest.fixture
def path(tmp_path):
    return tmp_path / "state" / "hailo-repl.lock"


def entries(path) -> list[dict]:
    return json.loads(path.read_text())["holders"] if path.exists() else []


def other_live_process() -> tuple[subprocess.Popen, int]:
    """A live process that is not this one, and its start time."""
    sleeper = subprocess.Popen(["sleep", "30"])
    started = None
    while started is None:
        started = process_start_time(sleeper.pid)
    return sleeper, started


@pytest.fixture
def sleeper():
    process, started = other_live_process()
    yield process.pid, started
    process.kill()
    process.wait()


def test_the_start_time_is_that_of_the_process_not_only_its_pid(sleeper):
    pid, started = sleeper
    assert process_start_time(pid) == started
    assert process_start_time(os.getpid()) is not None and process_start_time(os.getpid()) <= started
    assert Holder(pid, started, HAILO).alive()
    assert not Holder(pid, started + 1, HAILO).alive()  # the pid given to another program since


def test_a_process_name_with_spaces_and_parentheses_is_read_past(tmp_path):
    program = tmp_path / "a (b) c"
    program.symlink_to("/bin/sleep")
    process = subprocess.Popen([str(program), "30"])
    try:
        started = None
        while started is None:
            started = process_start_time(process.pid)
        assert abs(started - process_start_time(os.getpid())) < 10**9  # a time, not another field
        assert Holder(process.pid, started, HAILO).alive()
    finally:
        process.kill()
        process.wait()


def test_taking_writes_a_private_file_and_releasing_removes_it(path):
    lock = InstanceLock(path)
    assert lock.take(HAILO) is False
    me = {"pid": os.getpid(), "started": process_start_time(os.getpid()), "device": HAILO}
    assert entries(path) == [me | {"chat": None, "finishing": False}]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lock.finishing("3f9a1c2e")
    assert entries(path) == [me | {"chat": "3f9a1c2e", "finishing": True}]
    lock.release()
    assert not path.exists()
    assert [p.name for p in path.parent.iterdir()] == []  # no lock of the lock left either


def test_a_live_holder_of_the_hailo_is_waited_for_and_named_once(path, sleeper, monkeypatch):
    pid, started = sleeper
    other = InstanceLock(path, pid=pid)
    other.started = started
    other.take(HAILO)
    monkeypatch.setattr(instance_lock, "POLL_SECONDS", 0.01)
    said: list[str] = []
    threading.Timer(0.3, other.release).start()
    begun = time.monotonic()
    assert InstanceLock(path).take(HAILO, say=said.append) is True
    assert time.monotonic() - begun >= 0.25
    assert said == [
        f"The Hailo-10H is in use by hailo-repl pid {pid} (a chat in another terminal); "
        "waiting until it ends… (Ctrl+C gives up)"
    ]
    assert [e["pid"] for e in entries(path)] == [os.getpid()]


def test_a_chat_waits_only_for_a_reply_being_finished_in_it(path, sleeper):
    pid, started = sleeper
    chatting = Holder(pid, started, None, "3f9a1c2e", finishing=False)
    finishing = Holder(pid, started, None, "3f9a1c2e", finishing=True)
    assert not chatting.blocks(None, "3f9a1c2e")  # an open chat elsewhere: the second to save forks, as before
    assert finishing.blocks(None, "3f9a1c2e") and finishing.blocks(None, "3f9a")  # --resume takes a prefix
    assert finishing.blocks(None, "")  # -c: the latest chat may be this one
    assert not finishing.blocks(None, "8b41") and not finishing.blocks(None, None)  # another chat, a new one
    assert not finishing.blocks("llama", None) and Holder(pid, started, HAILO).blocks(HAILO, None)
    assert "hailo-repl pid" in finishing.waiting_line() and "chat 3f9a1c2e" in finishing.waiting_line()


def test_stale_entries_are_dropped_at_once_without_a_word(path, sleeper):
    pid, started = sleeper
    ended = subprocess.Popen(["true"])
    ended.wait()
    path.parent.mkdir(parents=True)
    stale = [
        {"pid": ended.pid, "started": None, "device": HAILO, "chat": "3f9a1c2e", "finishing": True},
        {"pid": pid, "started": started - 1, "device": HAILO, "chat": None, "finishing": False},
    ]
    path.write_text(json.dumps({"holders": stale}))
    said: list[str] = []
    assert InstanceLock(path).take(HAILO, "3f9a1c2e", say=said.append) is False
    assert said == []
    assert [e["pid"] for e in entries(path)] == [os.getpid()]


GARBLED = ["{not json", '{"holders": 3}', "[1, 2]", '{"holders": [{"pid": "x", "started": 1, "device": "hailo"}, 7]}']


@pytest.mark.parametrize("content", GARBLED)
def test_a_garbled_lock_file_is_taken_as_empty_and_rewritten(path, content):
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert InstanceLock(path).take(HAILO) is False
    assert [e["pid"] for e in entries(path)] == [os.getpid()]


def test_a_lock_file_that_cannot_be_written_costs_only_the_wait(path, log_lines):
    path.mkdir(parents=True)  # a folder where the file should be
    lock = InstanceLock(path)
    assert lock.take(HAILO) is False  # the chat goes on
    assert path.is_dir() and not any(path.iterdir())  # nothing written in its place
    lock.release()  # and nothing to let go of at its end
    assert not any(path.iterdir())
    assert any("cannot be used" in line for line in log_lines)


def test_only_waiting_writes_nothing(path, sleeper):
    assert InstanceLock(path).take(HAILO, "3f9a", register=False) is False
    assert not path.parent.exists()  # --no-history: nothing on disk
