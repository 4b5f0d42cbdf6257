"""The client's side of the engine process in this process: the model settled without opening a
device (backends.resolve_choice), the REPL's Engine before it is connected (daemon.client), and
/detach where there is no engine process. The processes are tested in test_e2e_daemon.py."""

from __future__ import annotations

import sys

import pytest
from scripted import CommandHarness

from hailo_repl.backends import BackendChoice, resolve_choice
from hailo_repl.backends.base import BackendError
from hailo_repl.daemon.client import EngineProcess, backend_named, model_named
from hailo_repl.daemon.protocol import OpenRequest
from hailo_repl.engine.api import EngineError, ErrorCode, ModelState


def no_download(name, directory):
    raise AssertionError("nothing to download")


@pytest.fixture
def two_hefs(hailo_resources):
    return hailo_resources("Qwen2.5-1.5B-Instruct", "Llama-3.2-3B-Instruct")


def test_a_hef_among_several_is_picked_here_and_no_device_is_opened(two_hefs, fake_log):
    asked = []

    def choose(names):
        asked.append(sorted(names))
        return "Llama-3.2-3B-Instruct"

    resolved = resolve_choice(BackendChoice(), lambda line: None, choose, no_download)
    assert asked == [["Llama-3.2-3B-Instruct", "Qwen2.5-1.5B-Instruct"]]
    assert resolved.hef_path == str(two_hefs / "Llama-3.2-3B-Instruct.hef")
    assert (backend_named(resolved), model_named(resolved)) == ("hailo", "Llama-3.2-3B-Instruct")
    assert "vdevice_open" not in fake_log.names()  # the engine process opens it


def test_one_hef_or_none_is_left_to_the_engine_which_may_go_on_with_llama(hailo_resources):
    hailo_resources("Qwen2.5-1.5B-Instruct")
    choice = BackendChoice()
    assert resolve_choice(choice, lambda line: None, None, no_download) is choice


def test_without_hailort_auto_goes_on_with_llama_and_says_so(monkeypatch, hailo_resources):
    monkeypatch.setitem(sys.modules, "hailo_platform", None)
    said = []
    resolved = resolve_choice(BackendChoice(), said.append, None, no_download)
    assert resolved.backend == "llama" and "using llama.cpp" in said[0]
    with pytest.raises(BackendError, match="hailo_platform is not installed"):
        resolve_choice(BackendChoice(backend="hailo"), said.append, None, no_download)


def test_before_it_is_connected_the_engine_process_answers_from_the_choice_and_refuses_the_rest():
    engine = EngineProcess(OpenRequest, "Qwen", "hailo", {"temperature": 0.2}, 300)
    status = engine.status()
    assert (status.model, status.backend, status.state) == ("Qwen", "hailo", ModelState.LOADING)
    assert status.loads_in_background  # the prompt is up before the engine is reached
    assert status.params == {"temperature": 0.2}
    assert engine.messages() == [] and engine.opened is None
    with pytest.raises(EngineError) as refused:
        engine.clear()
    assert refused.value.code is ErrorCode.NOT_LOADED
    engine.detach()  # (nothing to leave yet)


def test_a_socket_path_that_is_not_a_socket_fails_the_load_in_one_line(isolated_home):
    from hailo_repl.daemon.paths import socket_path

    socket_path().parent.mkdir(parents=True)
    socket_path().write_text("mine")
    engine = EngineProcess(OpenRequest, "m", "llama", {}, 300)
    with pytest.raises(EngineError) as refused:
        engine.load()
    assert refused.value.code is ErrorCode.LOAD_FAILED and "is not a socket: refused" in refused.value.line
    assert socket_path().read_text() == "mine"


def test_detach_in_a_chat_of_this_process_says_what_it_needs_and_the_chat_goes_on():
    harness = CommandHarness()
    written = harness.run("/detach")
    assert "/detach needs the engine process (--daemon always)" in written
    assert harness.outcome is None
