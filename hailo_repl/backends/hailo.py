"""The Hailo-10H backend: HailoRT's `hailo_platform.genai.LLM` on a shared VDevice.

What the device keeps decides the design. In HailoRT (hailo-ai/hailort v5.2.0,
hailort/libhailort/bindings/python/platform/hailo_platform/pyhailort/pyhailort.py,
`LLM.generate` docstring; template state in
hailort/libhailort/src/genai/llm/minja_wrapper/minja_wrapper.cpp) "the conversation
context is automatically maintained between calls": every generate() appends its
templated prompt and its reply to the on-device KV cache, and system messages are
refused after the first prompt of a context. So this backend remembers what the
device holds (its own replies included, by content) and sends only the messages
after that; when the conversation no longer starts with it (a dropped turn, /undo,
/retry, /load, /system, a failed generation) it clears the context and sends the
whole conversation once.

Other facts from the same source that shape the code:
- There is no abort() in Python: leaving the generation's `with` block while it is
  still generating aborts it (the C++ destructor), and the device appends its
  recovery sequence, a token this backend does not pass on.
- A full context is only a warning on the device (the KV cache slides), so the
  caller must keep usage within capacity; `count_tokens` gives it what to check.
- temperature <= 0 is an invalid argument: greedy decoding is `do_sample=False`.
- Only one generation may exist at a time; a lock makes that so.
- The bindings (hailort/libhailort/bindings/python/src/llm_api.cpp) hold the GIL in
  every call, a read() waiting for a token included: reads poll with a short timeout
  so the UI thread keeps running, and the model loads before the prompt is shown.
- Release order on every exit path: clear_context(), llm.release(), vdevice.release().
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from loguru import logger

from hailo_repl.backends.base import BackendError, GenerationParams, Message, ReplyStream, one_generation_at_a_time
from hailo_repl.streaming import clean_response

SHARED_VDEVICE_GROUP_ID = "SHARED"  # lets other Hailo apps use the chip at the same time
POLL_MS = 5  # longest a read() may hold the GIL (see _read_tokens)
POLL_GAP = 0.001  # seconds between polls with the GIL released
STALL_SECONDS = 60  # no token for this long: the device is reported as failed

VDEVICE_FAILED = (
    "Failed to create VDevice ({error}). Check that the Hailo-10H is connected and powered, "
    "that the driver is loaded (`lsmod | grep hailo`), that you may open the device "
    "(`ls -la /dev/hailo*`), and that no other process holds it exclusively."
)


def open_vdevice() -> Any:
    """A VDevice in the shared group; a BackendError naming what to check when none opens."""
    from hailo_platform import VDevice

    params = VDevice.create_params()
    params.group_id = SHARED_VDEVICE_GROUP_ID
    try:
        return VDevice(params)
    except Exception as error:  # HailoRT raises HailoRTException subclasses
        raise BackendError(VDEVICE_FAILED.format(error=error)) from None


def render_chatml(messages: Sequence[Message]) -> str:
    """The Qwen2.5 (ChatML) template, used to estimate what a prompt costs."""
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return body + "<|im_start|>assistant\n"


# LLM() raises a bare status number (its constructor is not wrapped); say what it means.
LOAD_STATUS_WORDS = {
    "13": "cannot open the file",
    "26": "not a valid HEF",
    "93": "the HEF was compiled for another Hailo device",
}


class HailoBackend:
    name = "hailo"
    # HailoRT's bindings hold the GIL while LLM() loads (llm_api.cpp has no
    # gil_scoped_release), so nothing else could run meanwhile: load before the prompt.
    loads_in_background = False
    context_is_estimate = False

    def __init__(self, hef_path: Path, vdevice: Any = None):
        self.hef_path = Path(hef_path)
        self.model_name = self.hef_path.stem
        self.last_prompt_tokens = 0
        self._vdevice = vdevice
        self._llm: Any = None  # hailo_platform.genai.LLM once loaded
        self._recovery_sequence: str | None = None
        self._timeout_error: type[Exception] = TimeoutError
        # The conversation the device's context holds, its own last reply included;
        # None when unknown (a failed generation): the next turn then starts afresh.
        self._held: list[Message] | None = []
        # Read on the generating thread only: on the device these calls wait behind a
        # running generation, holding the GIL, and the toolbar must never wait.
        self._usage = 0
        self._capacity = 0
        self._busy = threading.Lock()
        self.stall_seconds = STALL_SECONDS

    def load(self) -> None:
        from hailo_platform.genai import LLM
        from hailo_platform.pyhailort.pyhailort import HailoRTTimeout

        self._timeout_error = HailoRTTimeout
        if self._vdevice is None:
            self._vdevice = open_vdevice()
        try:
            llm = LLM(self._vdevice, str(self.hef_path))
        except Exception as error:
            reason = LOAD_STATUS_WORDS.get(str(error), str(error) or type(error).__name__)
            raise BackendError(f"Failed to load {self.hef_path} on the Hailo device: {reason}") from None
        self._llm = llm
        self._recovery_sequence = llm.get_generation_recovery_sequence()
        self._capacity = llm.max_context_capacity()
        self._usage = llm.get_context_usage_size()
        self._held = []

    @property
    def _model(self) -> Any:
        """The loaded LLM: a BackendError, not an AttributeError on None, before load() or after release()."""
        if self._llm is None:
            raise BackendError(f"{self.model_name} is not loaded")
        return self._llm

    def _unsent(self, messages: Sequence[Message]) -> list[Message] | None:
        """What the device lacks of `messages`, or None if its context must start afresh."""
        held = self._held
        if held is None or len(messages) <= len(held) or list(messages[: len(held)]) != held:
            return None
        new = list(messages[len(held) :])
        if held and any(m["role"] == "system" for m in new):
            return None  # a system message is refused after a context's first prompt
        return new

    def _prompt_tokens(self, messages: Sequence[Message]) -> int:
        return len(self._model.tokenize(render_chatml(messages)))

    def count_tokens(self, messages: Sequence[Message]) -> int:
        new = self._unsent(messages)
        if new is not None and self._held:
            return self._usage + self._prompt_tokens(new)
        return self._prompt_tokens(messages)

    @property
    def context_used(self) -> int:
        return self._usage

    @property
    def context_capacity(self) -> int:
        return self._capacity

    def stream(self, messages: Sequence[Message], params: GenerationParams, cancel: threading.Event) -> ReplyStream:
        with one_generation_at_a_time(self._busy):
            yield from self._generate(list(messages), params, cancel)

    def _generate(self, messages: list[Message], params: GenerationParams, cancel: threading.Event) -> ReplyStream:
        llm = self._model
        options: dict[str, Any] = {"max_generated_tokens": params.max_tokens}
        if params.temperature > 0:
            options.update(temperature=params.temperature, do_sample=True)
        else:
            options.update(do_sample=False)
        if params.top_p is not None:
            options["top_p"] = params.top_p
        reply: list[str] = []
        ended_cleanly = False
        try:
            new = self._unsent(messages)
            if new is None:
                llm.clear_context()
                self._held = []
                new = messages
            self._held = None  # unknown until this generation has ended
            self.last_prompt_tokens = self._prompt_tokens(new)
            with llm.generate(prompt=new, **options) as generation:
                for token in self._read_tokens(generation, cancel):
                    reply.append(token)
                    yield token
            ended_cleanly = True
        except GeneratorExit:
            ended_cleanly = True  # the reader stopped; leaving `with` aborted cleanly
            raise
        except BackendError:
            raise
        except Exception as error:
            logger.exception("hailo generation failed")
            raise BackendError(f"Hailo generation failed: {error or type(error).__name__}") from None
        finally:
            if ended_cleanly:  # the device holds the prompt and the reply as far as it went
                self._held = messages + [{"role": "assistant", "content": clean_response("".join(reply))}]
            try:
                self._usage = llm.get_context_usage_size()
            except Exception:  # a failed device must not hide the error being raised
                logger.exception("reading the context usage failed")

    def _read_tokens(self, generation: Any, cancel: threading.Event) -> Iterator[str]:
        """The generation's text pieces, read in short polls so the UI thread can run.

        Each read() holds the GIL while it waits, so it waits at most POLL_MS. A cancel
        takes effect at the next token: leaving the `with` block before the first one
        would make the abort wait, GIL held, for the whole prompt evaluation. A device
        that gives no token for `stall_seconds` is reported as failed.
        """
        last_token = time.monotonic()
        while generation.generation_status.name == "GENERATING":
            try:
                token = generation.read(POLL_MS)
            except self._timeout_error:
                if time.monotonic() - last_token > self.stall_seconds:
                    raise BackendError(f"the Hailo device gave no token for {self.stall_seconds} s") from None
                time.sleep(POLL_GAP)  # the GIL is free for this long: the UI thread's turn
                continue
            last_token = time.monotonic()
            if cancel.is_set():
                return
            if token and token != self._recovery_sequence:
                yield token

    def clear(self) -> None:
        if self._llm is not None:
            self._llm.clear_context()
            self._usage = self._llm.get_context_usage_size()
        self._held = []

    def release(self) -> None:
        """clear_context, llm.release, vdevice.release — each tried, in this order."""
        steps: list[tuple[str, Callable[[], object]]] = []
        if self._llm is not None:
            steps += [("clear_context", self._llm.clear_context), ("llm.release", self._llm.release)]
        if self._vdevice is not None:
            steps.append(("vdevice.release", self._vdevice.release))
        self._llm = None
        self._vdevice = None
        for label, step in steps:
            try:
                step()
            except Exception:
                logger.exception("{} failed during release", label)
