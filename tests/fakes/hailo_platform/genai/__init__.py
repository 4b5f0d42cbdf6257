"""hailo_platform.genai double: `LLM` and its `LLMGeneratorCompletion`.

Behaviour follows HailoRT v5.2.0 (hailo-ai/hailort,
hailort/libhailort/bindings/python/platform/hailo_platform/pyhailort/pyhailort.py and
hailort/libhailort/src/genai/llm/*):
- The context lives on the device and each generate() appends to it: the prompt as
  templated plus every generated token. Usage is never capped: a full context is
  only a warning and the KV cache slides, so callers must watch usage themselves.
- The template state is per context: system messages are refused after the first
  prompt (HailoRTInvalidOperationException) until clear_context().
- A generation is cancelled by leaving its `with` block / release() while it is
  still generating; the device then appends the recovery sequence.
- temperature <= 0 and top_p outside [0, 1] are invalid arguments.
- Use after release() fails with AttributeError, as the real wrapper's None does.
- read(timeout_ms) raises HailoRTTimeout when no token is ready in time and changes
  nothing else; iterating reads with the default 10 s timeout.
- The bindings (hailort/libhailort/bindings/python/src/llm_api.cpp) do not release
  the GIL, so every wait here (loading, prefill, each token) holds it too: a caller
  whose UI thread must stay live has to poll with short timeouts, as on the device.
- Test-only: a scripted reply {"tokens": [...], "fail_after": N} makes read() raise
  HailoRTException after N tokens, to exercise a device failure mid-stream.
"""

import ctypes
import json
import os
import re
import threading
import time
import zlib

from hailo_platform.pyhailort._pyhailort import HailoRTException, HailoRTStatusException
from hailo_platform.pyhailort._pyhailort import LLMGeneratorCompletionStatus as Status
from hailo_platform.pyhailort.pyhailort import (
    HailoRTInvalidArgumentException,
    HailoRTInvalidOperationException,
    HailoRTTimeout,
)
from hailo_platform.recorder import record
from hailo_platform.vdevice import VDevice  # noqa: F401  (re-exported like the real genai)

DEFAULT_CAPACITY = 4096
DEFAULT_REPLY = ["<text>", "Hello", " from", " the", " fake", " Hailo", "-", "10H", ".", "</text>", "<|im_end|>"]
DEFAULT_RECOVERY = "<|im_end|>"
_WORDS = re.compile(r"\s*\w+|\s*[^\w\s]|\s+")


_libc = ctypes.PyDLL(None)  # PyDLL: calls keep the GIL, like HailoRT's bindings


def _wait_holding_gil(seconds):
    while seconds > 0:
        step = min(seconds, 0.5)
        _libc.usleep(int(step * 1_000_000))
        seconds -= step


def _load_script():
    path = os.environ.get("HAILO_FAKE_SCRIPT")
    if not path:
        return {"replies": [DEFAULT_REPLY]}
    with open(path, encoding="utf-8") as file:
        script = json.load(file)
    return {"replies": script} if isinstance(script, list) else script


def _render(messages):
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


class _Device:
    """What the real LLMWrapper keeps: the KV cache accounting and the template state."""

    def __init__(self, hef_path, script):
        self.hef_path = hef_path
        self.script = script
        self.capacity = int(script.get("context_capacity", DEFAULT_CAPACITY))
        self.recovery = script.get("recovery_sequence", DEFAULT_RECOVERY)
        self.usage = 0
        self.fresh = True  # the next prompt is the first of its context
        self.reply_index = 0
        self.live_completion = None
        self.warned_full = False


class LLMGeneratorCompletion:
    def __init__(self, device, tokens, delay_ms, max_tokens, fail_after=None, prefill_ms=0):
        self._device = device
        self._pending = list(tokens)
        self._fail_after = fail_after  # read() raises once this many tokens were read
        self._delay = delay_ms / 1000
        # When the next token is ready: after the prompt's evaluation, then one per delay.
        self._next_ready = time.monotonic() + prefill_ms / 1000 + self._delay
        self._max_tokens = max_tokens
        self._produced = 0
        self._status = Status.GENERATING
        self._recovering = False
        self._generator_completion = object()  # None once released
        self.thread = threading.get_ident()  # the thread that generates

    def _alive(self):
        if self._generator_completion is None:  # the real wrapper's attribute is None
            raise AttributeError("'NoneType' object has no attribute 'read'")

    @property
    def generation_status(self):
        self._alive()
        return self._status

    def read(self, timeout_ms=10000):
        self._alive()
        if self._status != Status.GENERATING:
            raise HailoRTInvalidOperationException("Invalid operation. See hailort.log for more information")
        wait = self._next_ready - time.monotonic()
        if wait > timeout_ms / 1000:
            _wait_holding_gil(timeout_ms / 1000)
            raise HailoRTTimeout("libhailort failed with error: 4 (HAILO_TIMEOUT)")
        _wait_holding_gil(wait)
        self._next_ready = time.monotonic() + self._delay
        if self._fail_after is not None and self._produced >= self._fail_after:
            # A scripted failure mid-stream; the generation stays open.
            raise HailoRTException("libhailort failed with error: 62 (HAILO_COMMUNICATION_CLOSED)")
        if self._recovering:
            # The recovery sequence is streamed as the last token before MAX_TOKENS_REACHED.
            self._device.usage += len(_tokenize(self._device.recovery))
            self._status = Status.MAX_TOKENS_REACHED
            return self._device.recovery
        token = self._pending.pop(0) if self._pending else ""
        self._produced += 1
        self._device.usage += 1
        if self._device.usage >= self._device.capacity:
            self._device.warned_full = True  # the real client only logs a warning
        if not self._pending:
            self._status = Status.LOGICAL_END_OF_GENERATION
        elif self._max_tokens is not None and self._produced >= self._max_tokens:
            self._recovering = True
        return token

    def read_all(self, timeout_ms=10000):
        return "".join(iter(self))

    def release(self):
        if self._generator_completion is None:
            return
        if self._status == Status.GENERATING:
            # The destructor aborts; the device appends the recovery sequence.
            self._device.usage += len(_tokenize(self._device.recovery))
            self._status = Status.ABORTED
            record("abort", produced=self._produced)
        self._generator_completion = None
        self._device.live_completion = None

    def __iter__(self):
        return self

    def __next__(self):
        if self.generation_status != Status.GENERATING:
            raise StopIteration
        return self.read()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _tokenize(text):
    return [zlib.crc32(piece.encode()) % 151_000 for piece in _WORDS.findall(text)]


class LLM:
    def __init__(self, vdevice, model_path, lora_name="", optimize_memory_on_device=False):
        if vdevice._vdevice is None:
            raise AttributeError("'NoneType' object has no attribute 'create'")
        if not os.path.isfile(model_path):
            raise HailoRTStatusException("13")  # HAILO_OPEN_FILE_FAILURE, unwrapped
        script = _load_script()
        _wait_holding_gil(script.get("load_ms", 0) / 1000)  # loading a HEF takes seconds
        self._llm = _Device(model_path, script)
        record("llm_open", hef=os.path.basename(model_path))

    def generate(
        self,
        prompt,
        tools=None,
        temperature=None,
        top_p=None,
        top_k=None,
        frequency_penalty=None,
        max_generated_tokens=None,
        do_sample=None,
        seed=None,
    ):
        device = self._llm
        if device.live_completion is not None:
            raise AssertionError(
                "fake hailo_platform: generate() while a completion is alive is undefined behaviour on the real device"
            )
        if temperature is not None and temperature <= 0:
            raise HailoRTInvalidArgumentException("temperature must be > 0")
        if top_p is not None and not 0 <= top_p <= 1:
            raise HailoRTInvalidArgumentException("top_p must be within [0, 1]")
        if isinstance(prompt, str):
            text = prompt
        elif isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
            if not prompt:
                raise HailoRTInvalidArgumentException("empty prompt")
            if not device.fresh and any(m.get("role") == "system" for m in prompt):
                raise HailoRTInvalidOperationException("System role messages can only be provided on the first prompt")
            text = _render(prompt) + "<|im_start|>assistant\n"
        else:
            raise HailoRTException("prompt must be a list of dicts")
        device.fresh = False
        device.usage += len(_tokenize(text))
        replies = device.script["replies"]
        reply = replies[device.reply_index % len(replies)]
        device.reply_index += 1
        tokens = reply["tokens"] if isinstance(reply, dict) else reply
        delay = (reply.get("delay_ms") if isinstance(reply, dict) else None) or device.script.get("delay_ms", 0)
        options = reply if isinstance(reply, dict) else {}
        record(
            "generate",
            prompt=prompt,
            temperature=temperature,
            max_generated_tokens=max_generated_tokens,
            do_sample=do_sample,
            usage_before_reply=device.usage,
        )
        completion = LLMGeneratorCompletion(
            device, tokens, delay, max_generated_tokens, options.get("fail_after"), options.get("prefill_ms", 0)
        )
        device.live_completion = completion
        return completion

    def generate_all(
        self,
        prompt,
        tools=None,
        temperature=None,
        top_p=None,
        top_k=None,
        frequency_penalty=None,
        max_generated_tokens=None,
        do_sample=None,
        seed=None,
        timeout_ms=600000,
    ):
        with self.generate(
            prompt, tools, temperature, top_p, top_k, frequency_penalty, max_generated_tokens, do_sample, seed
        ) as completion:
            return completion.read_all(timeout_ms)

    def tokenize(self, text):
        if self._llm is None:
            raise AttributeError("'NoneType' object has no attribute 'tokenize'")
        return _tokenize(text)

    def get_context_usage_size(self):
        live = self._llm.live_completion
        if live is not None and live.thread != threading.get_ident():
            # On the device this call waits behind the running generation, holding the GIL.
            raise AssertionError(
                "fake hailo_platform: get_context_usage_size() from another "
                "thread during a generation would block that thread"
            )
        return self._llm.usage

    def max_context_capacity(self):
        return self._llm.capacity

    def clear_context(self):
        if self._llm.live_completion is not None:
            raise HailoRTException("Failed to clear context. Make sure there is no other generation in progress")
        self._llm.usage = 0
        self._llm.fresh = True
        record("clear_context")

    def save_context(self):
        return json.dumps({"usage": self._llm.usage}).encode()

    def load_context(self, context_data):
        self._llm.usage = json.loads(bytes(context_data))["usage"]  # template state is not reset
        record("load_context")

    def get_generation_recovery_sequence(self):
        return self._llm.recovery

    def set_generation_recovery_sequence(self, sequence):
        self._llm.recovery = sequence

    def release(self):
        if self._llm is not None:
            self._llm = None
            record("llm_release")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
