"""`hailo-repl doctor` on the hailo_platform double, and with no hailo_platform at all."""

import io
import os
import re
from pathlib import Path

import pytest
from conftest import run_cli

from hailo_repl.console import Console
from hailo_repl.doctor import Machine, diagnose

QWEN = "Qwen2.5-1.5B-Instruct"


@pytest.fixture
def machine(tmp_path) -> Machine:
    """A /dev with a Hailo node and a /sys/module with the driver, as on a working Pi."""
    dev, modules = tmp_path / "dev", tmp_path / "sys-module"
    dev.mkdir()
    (dev / "hailo0").write_bytes(b"")
    (modules / "hailo1x_pci").mkdir(parents=True)
    return Machine(dev_dir=dev, modules_dir=modules)


def doctor(backend: str = "auto", machine: Machine | None = None) -> tuple[bool, list[str]]:
    out = io.StringIO()
    can_chat = diagnose(Console(out), backend, machine)
    return can_chat, out.getvalue().splitlines()


def line_about(lines: list[str], words: str) -> str:
    (line,) = [line for line in lines if words in line]
    return line


def test_a_ready_machine_passes_every_check(isolated_home, hailo_resources, machine, fake_log, fake_script):
    hailo_resources(QWEN)
    fake_script({"replies": [["x"]], "prefill_ms_per_token": 1.0})  # loads are instant: they pay beyond ~100 tokens
    can_chat, lines = doctor("hailo", machine)
    assert can_chat
    assert all(line.startswith("✓ ") for line in lines), lines
    assert line_about(lines, "(hailo_platform)") == "✓ HailoRT 5.2.0 (hailo_platform)"
    assert line_about(lines, "openable") == f"✓ {machine.dev_dir / 'hailo0'} present and openable"
    assert line_about(lines, "driver") == "✓ driver hailo1x_pci loaded"
    assert lines[-1] == f"✓ hailo-repl will chat on the Hailo-10H with {QWEN}"
    events = [e["event"] for e in fake_log()]
    assert events[:2] == ["vdevice_open", "vdevice_release"]  # opened in the shared group, and released
    assert fake_log()[0]["group_id"] == "SHARED"
    # Then the HEF's self-check, run once, and everything released again.
    from hailo_repl.backends.hailo_selfcheck import renderer_fingerprint

    assert line_about(lines, "prompts sent as text") == (
        f"✓ {QWEN}: prompts sent as text match the message lists "
        "(the device's context after the texts is the same as after the lists; "
        "context after the lists 85 tokens, after the texts 85; texts tokenize to 85; "
        f"HailoRT 5.2.0, renderer {renderer_fingerprint()})"
    )
    # The figures the check measured, and the rule they give.
    figures = line_about(lines, "device context:")
    assert figures.startswith(f"✓ {QWEN}'s device context: a whole context "), figures
    assert re.search(
        r"prefill \d+\.\d+ ms a token: a context is kept and loaded when it holds more than [\d,]+ tokens", figures
    )
    assert "last save " in figures and "last load " in figures
    assert events.count("llm_open") == 1 and events.count("prefill") == 5
    assert events[-2:] == ["llm_release", "vdevice_release"]


def test_a_device_whose_text_path_differs_is_reported_and_later_chats_use_message_lists(
    isolated_home, hailo_resources, machine, fake_script, tmp_path
):
    hailo_resources(QWEN)
    fake_script({"replies": [["x"]], "template_drift": " (drift)"})  # the device renders a little more
    can_chat, lines = doctor("hailo", machine)
    assert can_chat  # the chat works all the same, on the message-list path
    line = line_about(lines, "prompts sent as text")
    assert line.startswith(f"✗ {QWEN}: prompts sent as text do not match the message lists (the device's context ")
    assert "hailo-repl sends whole message lists" in line


def test_no_device(isolated_home, hailo_resources, monkeypatch, tmp_path):
    hailo_resources(QWEN)
    monkeypatch.setenv("HAILO_FAKE_NO_DEVICE", "1")
    machine = Machine(dev_dir=tmp_path / "empty-dev", modules_dir=tmp_path / "no-modules")
    can_chat, lines = doctor("hailo", machine)
    assert not can_chat
    assert line_about(lines, "hailo* device").startswith("✗ no ")
    assert "sudo modprobe hailo1x_pci" in line_about(lines, "not loaded")
    assert line_about(lines, "VDevice").startswith("✗ Failed to create VDevice")
    assert lines[-1].startswith("✗ the hailo backend cannot chat")
    # auto falls back to llama.cpp, which is ready here
    can_chat, lines = doctor("auto", machine)
    assert can_chat and lines[-1] == "✓ hailo-repl will chat on llama.cpp on the CPU with SmolLM2-135M-Instruct"


def test_no_models(isolated_home, hailo_resources, machine):
    directory = hailo_resources()
    can_chat, lines = doctor("hailo", machine)
    assert not can_chat
    assert line_about(lines, "No downloaded LLM models") == (
        f"✗ No downloaded LLM models found in {directory}. Download one with `hailo-download-resources`, "
        "or run `hailo-repl --hef-path Qwen2.5-1.5B-Instruct` to fetch the registered model."
    )


def test_an_old_hailort(isolated_home, hailo_resources):
    hailo_resources(QWEN)
    result = run_cli("doctor", "--backend", "hailo", fakes=True, env={"HAILO_FAKE_VERSION": "5.0.1"})
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert line_about(lines, "HailoRT 5.0.1").startswith(
        "✗ HailoRT 5.0.1 is installed; hailo-repl needs HailoRT 5.1.1 or later"
    )
    assert line_about(lines, "VDevice") == "✗ VDevice not tried: HailoRT is missing or too old (above)"
    assert result.stderr == ""


def test_without_hailo_platform_the_llama_fallback_decides(isolated_home):
    result = run_cli("doctor")  # PYTHONPATH without the double: no hailo_platform at all
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith("✓ Python 3.")
    assert line_about(lines, "hailo_platform").startswith("✗ hailo_platform is not installed")
    assert line_about(lines, "llama.cpp fallback").startswith("✓ llama.cpp fallback ready with SmolLM2-135M-Instruct")
    assert line_about(lines, "writable") == "✓ history, sessions and log folders writable"
    assert lines[-1] == "✓ hailo-repl will chat on llama.cpp on the CPU with SmolLM2-135M-Instruct"
    assert "Traceback" not in result.stderr
    assert run_cli("doctor", "--backend", "hailo").returncode == 1


def test_a_bad_flag_is_one_argparse_error(isolated_home):
    result = run_cli("doctor", "--backend", "tpu")
    assert result.returncode == 2
    assert "invalid choice: 'tpu'" in result.stderr and "Traceback" not in result.stderr


def test_folders_that_cannot_be_created_are_named(isolated_home, monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_DATA_HOME", str(blocker))
    _, lines = doctor("llama", Machine(dev_dir=Path("/nonexistent"), modules_dir=Path("/nonexistent")))
    line = line_about(lines, "not writable")
    assert line.startswith("✗ not writable: history ") and "sessions" in line and "log" not in line


def test_a_hailo_device_open_in_a_chat_is_named_not_opened_again(isolated_home, hailo_resources, machine, fake_log):
    hailo_resources(QWEN)
    from hailo_repl.config import instance_lock_file
    from hailo_repl.instance_lock import HAILO, InstanceLock

    chat = InstanceLock(instance_lock_file())  # (this process stands for the chat)
    chat.take(HAILO)
    chat.finishing("3f9a1c2e")
    try:
        can_chat, lines = doctor("hailo", machine)
    finally:
        chat.release()
    assert can_chat
    assert line_about(lines, "has it open") == (
        f"✓ the Hailo-10H opens: hailo-repl pid {os.getpid()} has it open (finishing a reply in chat 3f9a1c2e); "
        "run the doctor again once that chat ends for the checks that open it"
    )
    assert "vdevice_open" not in [e["event"] for e in fake_log()]
