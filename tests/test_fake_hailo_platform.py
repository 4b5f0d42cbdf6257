"""The double behaves as HailoRT's source says the real API does (see its docstring)."""

import os
import subprocess
import sys

import pytest
from hailo_platform import HailoRTException, VDevice
from hailo_platform.genai import LLM
from hailo_platform.pyhailort.pyhailort import (
    HailoRTInvalidArgumentException,
    HailoRTInvalidOperationException,
    HailoRTTimeout,
)
from terminal import with_fakes


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
    with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'get_context_usage_size'"):
        llm.get_context_usage_size()


def test_no_device(monkeypatch):
    monkeypatch.setenv("HAILO_FAKE_NO_DEVICE", "1")
    with pytest.raises(HailoRTException, match="HAILO_OUT_OF_PHYSICAL_DEVICES"):
        VDevice(VDevice.create_params())


def test_leaving_a_generation_early_aborts_and_adds_the_recovery_sequence(llm):
    before = llm.get_context_usage_size()
    with llm.generate(prompt=[{"role": "user", "content": "u"}]) as generation:
        next(iter(generation))
    assert generation._status.name == "ABORTED"
    assert llm.get_context_usage_size() > before


# ---- the double's unkind behaviours, each as HailoRT v5.2.0's source has it -------------
# (line numbers at tag v5.2.0, commit 41a720b; see the double's docstring for the paths)

USER = [{"role": "user", "content": "u"}]


def open_llm(hailo_resources, fake_script, script):
    directory = hailo_resources("Qwen2.5-1.5B-Instruct")
    fake_script(script)
    vdevice = VDevice(VDevice.create_params())
    return vdevice, LLM(vdevice, str(directory / "Qwen2.5-1.5B-Instruct.hef"))


@pytest.fixture
def scripted_llm(hailo_resources, fake_script):
    opened = []

    def open_with(script):
        vdevice, model = open_llm(hailo_resources, fake_script, script)
        opened.append((vdevice, model))
        return model

    yield open_with
    for vdevice, model in opened:
        model.release()
        vdevice.release()


def test_an_abort_keeps_unread_tokens_the_abort_token_and_the_recovery_sequence(scripted_llm, fake_log):
    """llm.cpp:941 Impl::abort joins the token thread, which reads on until the server answers
    ABORTED (llm_server.cpp:958 get_current_generation_status) with the recovery sequence."""
    import time

    llm = scripted_llm({"replies": [["a", "b", "c", "d", "e", "f"]], "delay_ms": 20})
    with llm.generate(prompt=USER) as generation:
        assert generation.read() == "a"
        # The device goes on generating while nobody reads: wait until the moment c is due
        # (the double's own schedule), so b and c are generated and unread.
        time.sleep(max(0.0, generation._ready[2] - time.monotonic()))
    assert generation._status.name == "ABORTED"
    (abort,) = fake_log.named("abort")
    assert abort["produced"] == 1 and abort["unread"] >= 2
    held = "".join(llm._llm.context)
    assert held.endswith("<|im_end|>")  # the recovery sequence
    assert "abc" in held and held.count("d") + held.count("e") >= 1  # unread, and one more during the abort


def test_a_dead_token_thread_surfaces_as_invalid_operation(scripted_llm):
    """llm.cpp:742 token_reader_thread breaks on a failed request and signals shutdown when
    the queue is empty; llm.cpp:884 Impl::read turns that into HAILO_INVALID_OPERATION (899)."""
    llm = scripted_llm([{"tokens": ["a", "b", "c"], "fail_after": 2}])
    with llm.generate(prompt=USER) as generation:
        assert [generation.read(), generation.read()] == ["a", "b"]
        with pytest.raises(HailoRTInvalidOperationException):
            generation.read(50)


def test_a_thread_that_died_with_tokens_queued_only_times_out(scripted_llm):
    """llm.cpp:812: shutdown is signalled only if the queue is empty, so a reader behind
    gets the queued tokens and then HAILO_TIMEOUT for ever."""
    llm = scripted_llm([{"tokens": ["a", "b", "c"], "fail_after": 2, "queued_at_death": True}])
    with llm.generate(prompt=USER) as generation:
        assert [generation.read(), generation.read()] == ["a", "b"]
        for _ in range(2):
            with pytest.raises(HailoRTTimeout):
                generation.read(20)


def test_a_stalled_request_gives_no_token_and_then_times_out(scripted_llm):
    """session_wrapper.hpp:30 LONG_TIMEOUT (2 minutes) bounds each token request
    (TimeoutGuard in llm.cpp:742); after it the thread is dead as above."""
    llm = scripted_llm({"replies": [{"tokens": ["late"], "stall_ms": 60_000}], "request_timeout_ms": 120})
    with llm.generate(prompt=USER) as generation:
        with pytest.raises(HailoRTTimeout):
            generation.read(50)
        with pytest.raises(HailoRTInvalidOperationException):
            generation.read(1000)


def test_an_abort_during_a_stall_waits_for_the_request(scripted_llm, fake_log):
    """session_wrapper.cpp:89 execute holds the session's mutex for a whole request, so
    the abort request (llm.cpp:941) waits for the stalled read request to end."""
    llm = scripted_llm([{"tokens": ["late", "more"], "stall_ms": 150}])
    with llm.generate(prompt=USER):
        pass
    (abort,) = [e for e in fake_log() if e["event"] == "abort"]
    assert abort["during_stall"] is True
    assert abort["generated"] >= 1  # the stalled token arrived before the abort went through


def test_clear_context_during_a_generation_silently_resets_it(scripted_llm, fake_log):
    """llm_server.cpp:635 handle_clear_context_request takes m_generation_mutex, which a read
    request (556) holds only while it runs: the context is emptied mid-reply."""
    llm = scripted_llm({"replies": [["a", "b", "c"]], "delay_ms": 10})
    with llm.generate(prompt=USER) as generation:
        assert generation.read() == "a"
        llm.clear_context()
        rest = "".join(generation)
    assert rest == "bc"
    assert "".join(llm._llm.context) == "bc"  # the prompt and "a" are gone
    assert any(e["event"] == "waited" and e["call"] == "clear_context" for e in fake_log())


@pytest.mark.parametrize(
    "call", ["tokenize", "get_context_usage_size", "max_context_capacity", "prompt_template", "get_stop_tokens"]
)
def test_every_call_during_a_generation_waits_for_the_request_in_flight(scripted_llm, fake_log, call):
    """session_wrapper.cpp:89: one request at a time on the session, whatever it is."""
    llm = scripted_llm({"replies": [["a", "b"]], "delay_ms": 10})
    with llm.generate(prompt=USER):
        getattr(llm, call)(*(["text"] if call == "tokenize" else []))
    assert [e["call"] for e in fake_log() if e["event"] == "waited"] == [call]


def test_a_reply_ending_exactly_at_the_limit_reports_max_tokens(scripted_llm):
    """llm_server.cpp:958 checks the token count before the stop sequence; the recovery
    sequence then comes as the last token."""
    llm = scripted_llm([["a", "b", "<|im_end|>"]])
    with llm.generate(prompt=USER, max_generated_tokens=3) as generation:
        pieces = list(generation)
        assert generation.generation_status.name == "MAX_TOKENS_REACHED"
    assert pieces == ["a", "b", "<|im_end|>", "<|im_end|>"]


@pytest.mark.parametrize(("argument", "value"), [("top_k", 0), ("frequency_penalty", 0.0), ("top_p", 1.5)])
def test_argument_checks(llm, argument, value):
    """llm.cpp:553 validate_generator_params: top_k >= 1, frequency_penalty != 0, top_p in [0, 1]."""
    with pytest.raises(HailoRTInvalidArgumentException):
        llm.generate(prompt=USER, **{argument: value})


def test_tools_only_on_the_first_prompt(llm):
    """minja_wrapper.cpp:78; pyhailort.py:4199 _convert_to_json_strings wants a list of dicts."""
    tools = [{"type": "function", "function": {"name": "f"}}]
    with pytest.raises(HailoRTException):
        llm.generate(prompt=USER, tools="not a list")
    llm.generate_all(prompt=USER, tools=tools)
    with pytest.raises(HailoRTInvalidOperationException):
        llm.generate(prompt=USER, tools=tools)


def test_a_plain_string_prompt_skips_the_template(llm):
    """pyhailort.py LLM.generate: a str is "inserted to the model as is" (llm_api.cpp writes it raw)."""
    llm.generate_all(prompt="Once upon a time")
    assert llm.get_context_usage_size() == len(llm.tokenize("Once upon a time")) + 2


def test_later_prompts_lose_what_the_template_adds_by_itself(scripted_llm):
    """minja_wrapper.cpp:41-47 renders a probe message once and cuts that length off each later prompt."""
    template = (
        "{% if messages[0]['role'] != 'system' %}<sys>default</sys>{% endif %}"
        "{% for m in messages %}{% if m['role'] == 'user' %}<u>{{ m['content'] }}</u>{% endif %}{% endfor %}"
    )
    llm = scripted_llm({"replies": [["x"]], "prompt_template": template})
    assert llm.prompt_template() == template
    llm.generate_all(prompt=USER)
    assert "".join(llm._llm.context) == "<sys>default</sys><u>u</u>x"
    llm.generate_all(prompt=[{"role": "user", "content": "v"}])
    assert "".join(llm._llm.context) == "<sys>default</sys><u>u</u>x<u>v</u>x"


def test_stop_tokens_and_create_params_have_the_real_types(llm):
    """pyhailort.py:4486-4506 stop tokens; pyhailort.cpp VDeviceParams: an enum, a list, a bool."""
    from hailo_platform.pyhailort.pyhailort import HailoSchedulingAlgorithm

    llm.set_stop_tokens(["</s>", "<|im_end|>"])
    assert llm.get_stop_tokens() == ["</s>", "<|im_end|>"]
    params = VDevice.create_params()
    assert params.scheduling_algorithm is HailoSchedulingAlgorithm.ROUND_ROBIN
    assert params.device_ids == [] and params.multi_process_service is False and params.group_id == "UNIQUE"
    params.scheduling_algorithm = "ROUND_ROBIN"
    with pytest.raises(TypeError):
        VDevice(params)


def test_llm_on_a_released_vdevice_is_refused_loudly(hailo_resources):
    """pyhailort.py:4160 passes vdevice._vdevice, None once released, as a null pointer."""
    directory = hailo_resources("Qwen2.5-1.5B-Instruct")
    vdevice = VDevice(VDevice.create_params())
    vdevice.release()
    with pytest.raises(AssertionError, match="null pointer"):
        LLM(vdevice, str(directory / "Qwen2.5-1.5B-Instruct.hef"))


@pytest.mark.parametrize(("content", "status"), [(b"HEF", "14"), (bytes(16), "92")])
def test_a_bad_hef_header_gives_the_status_hef_hash_gives(hailo_resources, content, status):
    """hef.cpp:4258 Hef::hash reads the header before anything: too short → 14, version < 3 → 92."""
    from hailo_platform.pyhailort.pyhailort import HailoRTStatusException

    directory = hailo_resources()
    (directory / "bad.hef").write_bytes(content)
    vdevice = VDevice(VDevice.create_params())
    with pytest.raises(HailoRTStatusException, match=f"^{status}$"):
        LLM(vdevice, str(directory / "bad.hef"))
    vdevice.release()


def test_hailort_5_0_1_has_no_context_usage_or_capacity(tmp_path):
    """get_context_usage_size and max_context_capacity first appear in pyhailort.py of v5.1.1."""
    import subprocess
    import sys

    from terminal import with_fakes

    probe = (
        "import hailo_platform; from hailo_platform.genai import LLM; "
        "print(hailo_platform.__version__, hasattr(LLM, 'get_context_usage_size'), hasattr(LLM, 'tokenize'))"
    )
    env = with_fakes({**os.environ, "HAILO_FAKE_VERSION": "5.0.1"})
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["5.0.1", "False", "True"]


# ---- save_context / load_context ---------------------------------------------------------

QWEN_LIKE_TEMPLATE = (  # adds a default system prompt by itself, as Qwen2.5's does
    "{% if messages[0]['role'] != 'system' %}<sys>default</sys>{% endif %}"
    "{% for m in messages %}{% if m['role'] in ['system', 'user'] %}<{{ m['role'] }}>{{ m['content'] }}"
    "</{{ m['role'] }}>{% endif %}{% endfor %}"
)


def context_text(llm):
    return "".join(llm._llm.context)


def test_saved_context_is_bytes_with_hailorts_header(llm):
    """pyhailort.py:4548 returns bytes; context_structure.hpp:51-57 LLMContextHeader, :70 create_header."""
    import hashlib
    import struct

    llm.generate_all(prompt=USER)
    data = llm.save_context()
    assert isinstance(data, bytes)
    magic, major, minor, revision, protocol, model_hash = struct.unpack_from("<I3II128s", data)
    hef = os.path.join(os.environ["HAILO_RESOURCES_DIR"], "models/hailo10h/Qwen2.5-1.5B-Instruct.hef")
    with open(hef, "rb") as file:
        assert model_hash.rstrip(b"\0").decode() == hashlib.md5(file.read()).hexdigest()
    assert (magic, (major, minor, revision), protocol) == (0x01484546, (5, 2, 0), 0)


def test_a_load_replaces_the_context_whole(scripted_llm):
    """pyhailort.py:4575 "Loading a context will replace the current context completely";
    llm_server.cpp:1134 set_context restores cache and token history."""
    llm = scripted_llm({"replies": [["x"]]})
    llm.generate_all(prompt=USER)
    saved, usage = llm.save_context(), llm.get_context_usage_size()
    llm.generate_all(prompt=[{"role": "user", "content": "more"}])
    llm.load_context(saved)
    assert llm.get_context_usage_size() == usage
    assert context_text(llm) == "<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\nx"


def test_a_context_loads_on_another_llm_of_the_same_hef_and_another_hailort(hailo_resources, fake_script, monkeypatch):
    """context_structure.hpp:82 validate_header checks magic, protocol version and model hash, not the version."""
    import hailo_platform

    vdevice, first = open_llm(hailo_resources, fake_script, [["x"]])
    first.generate_all(prompt=USER)
    saved = first.save_context()
    first.release()
    monkeypatch.setattr(hailo_platform, "__version__", "5.3.0")
    second = LLM(vdevice, str(hailo_resources.directory / "Qwen2.5-1.5B-Instruct.hef"))
    second.load_context(saved)
    assert context_text(second) == "<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\nx"
    second.release()
    vdevice.release()


@pytest.mark.parametrize("damage", ["another hef", "magic", "protocol", "truncated", "empty"])
def test_a_context_that_fails_validation_is_refused_and_the_context_kept(hailo_resources, fake_script, damage):
    """llm_server.cpp:1134 set_context: short data, or validate_header failing, is HAILO_INVALID_ARGUMENT
    (pyhailort.py:128 → HailoRTInvalidArgumentException) before anything changes."""
    vdevice, llm = open_llm(hailo_resources, fake_script, [["x"]])
    llm.generate_all(prompt=USER)
    data = bytearray(llm.save_context())
    if damage == "another hef":
        (hailo_resources.directory / "Other.hef").write_bytes(b"another fake hef")
        llm.release()
        llm = LLM(vdevice, str(hailo_resources.directory / "Other.hef"))
    elif damage == "magic":
        data[0] ^= 0xFF
    elif damage == "protocol":
        data[16] = 1
    elif damage == "truncated":
        data = data[:-5]
    else:
        data = bytearray()
    before = context_text(llm)
    with pytest.raises(HailoRTInvalidArgumentException):
        llm.load_context(bytes(data))
    assert context_text(llm) == before
    llm.release()
    vdevice.release()


def test_a_load_leaves_the_template_state_so_a_templated_prompt_after_it_is_a_first_one(scripted_llm):
    """minja_wrapper.cpp:69-70 m_is_first is reset only by clear_context (llm.cpp:375 reset_state),
    never by a load (llm.cpp:400): on a fresh LLM the first templated prompt after a load gets what
    the template adds to a first prompt, here a default system prompt in the middle of the context."""
    llm = scripted_llm({"replies": [["x"]], "prompt_template": QWEN_LIKE_TEMPLATE})
    llm.generate_all(prompt=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    saved = llm.save_context()
    llm.clear_context()
    llm.load_context(saved)
    llm.generate_all(prompt=[{"role": "user", "content": "v"}])
    assert context_text(llm) == "<system>s</system><user>u</user>x<sys>default</sys><user>v</user>x"


def test_a_plain_string_prompt_leaves_the_template_state(scripted_llm):
    """llm.cpp LLMGenerator::Impl::write(const std::string&) never calls the template handler."""
    llm = scripted_llm({"replies": [["x"]], "prompt_template": QWEN_LIKE_TEMPLATE})
    llm.generate_all(prompt="<system>s</system>")
    llm.generate_all(prompt=[{"role": "system", "content": "t"}])  # still a first prompt: accepted
    assert context_text(llm) == "<system>s</system>x<system>t</system>x"
    with pytest.raises(HailoRTInvalidOperationException):
        llm.generate(prompt=[{"role": "system", "content": "t"}])


def test_zero_tokens_only_prefill_the_prompt(scripted_llm, fake_log):
    """llm.cpp:684 generate() waits for the empty answer; llm_server.cpp:1047 zero_tokens_back: no token,
    no recovery sequence in the context; the scripted replies are left for real generations."""
    llm = scripted_llm({"replies": [["x"]], "prompt_template": QWEN_LIKE_TEMPLATE})
    with llm.generate(prompt="<system>s</system>", max_generated_tokens=0) as generation:
        assert generation.generation_status.name == "MAX_TOKENS_REACHED"
    assert context_text(llm) == "<system>s</system>"
    assert llm.get_context_usage_size() == len(llm.tokenize("<system>s</system>"))
    assert llm.generate_all(prompt="<user>u</user>") == "x"


def test_with_exclusive_set_another_process_cannot_open_the_device_until_it_is_released(tmp_path, monkeypatch):
    monkeypatch.setenv("HAILO_FAKE_EXCLUSIVE", str(tmp_path / "device"))
    opening = (
        "from hailo_platform import VDevice\n"
        "try:\n    VDevice(VDevice.create_params()).release(); print('opened')\n"
        "except Exception as error:\n    print(error)\n"
    )

    def in_another_process() -> str:
        command = [sys.executable, "-c", opening]
        return subprocess.run(command, capture_output=True, text=True, env=with_fakes(), timeout=60).stdout

    first = VDevice(VDevice.create_params())
    second = VDevice(VDevice.create_params())  # the same process: the SHARED group shares it
    assert "HAILO_OUT_OF_PHYSICAL_DEVICES" in in_another_process()
    first.release()
    assert "HAILO_OUT_OF_PHYSICAL_DEVICES" in in_another_process()
    second.release()
    assert in_another_process() == "opened\n"


def test_a_list_prompt_whose_render_fails_still_ends_the_templates_first_prompt(scripted_llm):
    """minja_wrapper.cpp `render` sets m_is_first false before it renders: a failed render leaves
    the next prompt rendered as a later one (a system message then refused)."""
    llm = scripted_llm({"replies": [["x"]], "prompt_template": "{{ raise_exception('no') }}"})
    with pytest.raises(HailoRTException, match="HAILO_INTERNAL_FAILURE"):
        llm.generate(prompt=[{"role": "user", "content": "hi"}])
    with pytest.raises(HailoRTInvalidOperationException):
        llm.generate(prompt=[{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}])


def test_saving_or_loading_beside_a_live_generation_is_refused(scripted_llm):
    """llm.cpp uses the session outside its mutex for these: next to a generation they would
    interleave with its token thread (and a save waits with no timeout)."""
    llm = scripted_llm({"replies": [{"tokens": ["a", "b"], "delay_ms": 50}]})
    saved = llm.save_context()
    with llm.generate(prompt=[{"role": "user", "content": "hi"}]):
        with pytest.raises(AssertionError, match="undefined on the real device"):
            llm.save_context()
        with pytest.raises(AssertionError, match="undefined on the real device"):
            llm.load_context(saved)
