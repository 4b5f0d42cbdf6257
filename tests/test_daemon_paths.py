"""Where the engine process listens and who may use it (hailo_repl.daemon.paths), its lock
(hailo_repl.daemon.lock), and the settings that choose it. The processes themselves are tested in
test_e2e_daemon.py."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap

import pytest

from hailo_repl.daemon import paths
from hailo_repl.daemon.lock import EngineLock, holder
from hailo_repl.daemon.paths import UnsafeSocketPath, check_socket, socket_dir, socket_path
from hailo_repl.settings import SETTINGS, SettingError


def test_the_socket_is_in_each_homes_own_state_folder(isolated_home):
    assert socket_path() == isolated_home / "state" / "hailo-repl" / "engine.sock"


def test_a_state_folder_too_long_for_a_socket_address_falls_back_to_a_private_tmp_folder(
    isolated_home, monkeypatch, tmp_path
):
    monkeypatch.setattr(paths, "FALLBACK_ROOT", tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    monkeypatch.setenv("XDG_STATE_HOME", str(deep))
    path = socket_path()
    assert path.parent == tmp_path / "tmp" / f"hailo-repl-{os.getuid()}"
    assert path.suffix == ".sock"
    monkeypatch.setenv("XDG_STATE_HOME", str(deep / "other"))
    assert socket_path() != path  # another home, another engine
    socket_dir(path)
    assert stat.S_IMODE(os.lstat(path.parent).st_mode) == 0o700


def test_a_fallback_folder_that_is_a_symlink_is_refused(isolated_home, monkeypatch, tmp_path):
    monkeypatch.setattr(paths, "FALLBACK_ROOT", tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    (tmp_path / "elsewhere").mkdir()
    paths.fallback_dir().symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeSocketPath, match="not a folder"):
        socket_dir(paths.fallback_dir() / "x.sock")


def test_a_state_folder_linked_to_the_users_folder_is_followed_and_what_it_points_to_made_private(
    isolated_home, tmp_path
):
    real = tmp_path / "elsewhere"
    real.mkdir(mode=0o755)
    state = isolated_home / "state" / "hailo-repl"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.symlink_to(real)
    assert socket_dir(socket_path()) == state
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o700


@pytest.mark.parametrize("kind", ["file", "symlink", "folder"])
def test_what_is_not_the_users_socket_is_refused_in_one_line_and_left_alone(tmp_path, kind):
    path = tmp_path / "engine.sock"
    if kind == "file":
        path.write_text("mine")
    elif kind == "symlink":
        path.symlink_to(tmp_path / "target")
    else:
        path.mkdir()
    with pytest.raises(UnsafeSocketPath) as refused:
        check_socket(path)
    assert "\n" not in str(refused.value) and str(path) in str(refused.value)
    assert os.path.lexists(path)


def test_a_socket_of_the_users_is_accepted(tmp_path):
    path = tmp_path / "engine.sock"
    assert check_socket(path) is False  # nothing there
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(path))
        assert check_socket(path) is True


HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from hailo_repl.daemon.lock import EngineLock
    lock = EngineLock(Path(sys.argv[1]))
    print(lock.take(wait=0), flush=True)
    time.sleep(60)
    """
)


def test_one_engine_holds_the_lock_and_a_killed_one_leaves_it_free(tmp_path):
    path = tmp_path / "state" / "engine.lock"
    first = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "True"
        found = holder(path)
        assert found is not None and found.pid == first.pid
        assert EngineLock(path).take(wait=0.1) is False  # a second engine is not needed
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert holder(path) is None  # the kernel let go of it with the process
    mine = EngineLock(path)
    assert mine.take(wait=0) is True
    assert holder(path).pid == os.getpid()
    mine.release()
    assert holder(path) is None


@pytest.mark.parametrize(
    ("text", "seconds"), [("300", 300), ("30s", 30), ("5m", 300), ("1h", 3600), ("0", 0), ("-1", -1), ("-5m", -1)]
)
def test_keep_alive_is_read_as_ollama_reads_its_keep_alive(text, seconds):
    assert SETTINGS["keep-alive"].parse(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "m", "1.5m", "5d"])
def test_a_keep_alive_that_is_no_duration_is_refused(text):
    with pytest.raises(SettingError, match="keep-alive must be a duration"):
        SETTINGS["keep-alive"].parse(text)


def test_the_engine_process_setting_is_a_choice_of_three(tmp_path):
    from conftest import run_cli

    result = run_cli("--daemon", "sometimes", "--show-config")
    assert result.returncode == 2 and "auto" in result.stderr and "never" in result.stderr
    result = run_cli("--show-config", env={"HAILO_REPL_DAEMON": "always", "HAILO_REPL_KEEP_ALIVE": "10m"})
    assert "daemon:" in result.stdout and "always" in result.stdout and "env HAILO_REPL_DAEMON" in result.stdout
    assert "600" in result.stdout
