"""The double behaves as HailoRT's source says the real API does (see its docstring)."""

import pytest
from hailo_platform import VDevice
from hailo_platform.genai import LLM
from hailo_platform.pyhailort.pyhailort import HailoRTInvalidArgumentException, HailoRTInvalidOperationException


@pytest.fixture
def llm(hailo_resources, fake_script):
    directory = hailo_resources("Qwen2.5-1.5B-Instruct")
    fake_script([["x", "y"]])
    vdevice = VDevice(VDevice.create_params())
    model = LLM(vdevice, str(directory / "Qwen2.5-1.5B-Instruct.hef"))
    yield model
    model.release()
    vdevice.release()


def test_context_persists_and_usage_counts_prompt_and_reply(llm):
    assert llm.generate_all(prompt=[{"role": "user", "content": "hello there"}]) == "xy"
    first = llm.get_context_usage_size()
    assert first == len(llm.tokenize("<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n")) + 2
    llm.generate_all(prompt=[{"role": "user", "content": "again"}])
    assert llm.get_context_usage_size() > first
    llm.clear_context()
    assert llm.get_context_usage_size() == 0


def test_system_messages_only_on_a_fresh_context(llm):
    llm.generate_all(prompt=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    with pytest.raises(HailoRTInvalidOperationException):
        llm.generate(prompt=[{"role": "system", "content": "s"}])
    llm.clear_context()
    llm.generate_all(prompt=[{"role": "system", "content": "s"}])


def test_invalid_sampling_arguments_are_refused(llm):
    with pytest.raises(HailoRTInvalidArgumentException):
        llm.generate(prompt=[{"role": "user", "content": "u"}], temperature=0)


def test_use_after_release_fails(llm):
    llm.release()
    with pytest.raises(AttributeError):
        llm.get_context_usage_size()


def test_no_device(monkeypatch):
    monkeypatch.setenv("HAILO_FAKE_NO_DEVICE", "1")
    with pytest.raises(Exception, match="HAILO_OUT_OF_PHYSICAL_DEVICES"):
        VDevice(VDevice.create_params())


def test_leaving_a_generation_early_aborts_and_adds_the_recovery_sequence(llm):
    before = llm.get_context_usage_size()
    with llm.generate(prompt=[{"role": "user", "content": "u"}]) as generation:
        next(iter(generation))
    assert generation._status.name == "ABORTED"
    assert llm.get_context_usage_size() > before
