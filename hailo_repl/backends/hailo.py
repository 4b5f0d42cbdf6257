"""The Hailo-10H backend: HailoRT's `hailo_platform.genai.LLM` on a shared VDevice.

What the device keeps decides the design. In HailoRT (hailo-ai/hailort v5.2.0,
hailort/libhailort/bindings/python/platform/hailo_platform/pyhailort/pyhailort.py,
`LLM.generate` docstring; template state in
hailort/libhailort/src/genai/llm/minja_wrapper/minja_wrapper.cpp) "the conversation
context is automatically maintained between calls": every generate() appends its
templated prompt and its reply to the on-device KV cache, and system messages are
refused after the first prompt of a context. So this backend sends the device only
the messages it does not hold yet, and after anything that breaks that (a dropped
turn, /undo, a failed generation) it clears the context and sends the whole history.

Other facts from the same source that shape the code:
- There is no abort() in Python: leaving the generation's `with` block while it is
  still generating aborts it (the C++ destructor), and the device appends its
  recovery sequence, a token this backend does not pass on.
- A full context is only a warning on the device (the KV cache slides), so the
  caller must keep usage within capacity; `count_tokens` gives it what to check.
- temperature <= 0 is an invalid argument: greedy decoding is `do_sample=False`.
- Only one generation may exist at a time; a lock makes that so.
- Release order on every exit path: clear_context(), llm.release(), vdevice.release().
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator, Sequence

from loguru import logger

from hailo_repl.backends.base import BackendBusyError, BackendError, GenerationParams, Message

SHARED_VDEVICE_GROUP_ID = "SHARED"  # lets other Hailo apps use the chip at the same time

VDEVICE_FAILED = (
    "Failed to create VDevice ({error}). Check that the Hailo-10H is connected and powered, "
    "that the driver is loaded (`lsmod | grep hailo`), that you may open the device "
    "(`ls -la /dev/hailo*`), and that no other process holds it exclusively."
)


def open_vdevice():
    """A VDevice in the shared group; BackendError with the seed's checks when none opens."""
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


class HailoBackend:
    name = "hailo"

    def __init__(self, hef_path: Path, vdevice=None):
        self.hef_path = Path(hef_path)
        self.model_name = self.hef_path.stem
        self.last_prompt_tokens = 0
        self._vdevice = vdevice
        self._llm = None
        self._recovery_sequence: str | None = None
        # The prompt messages the device's context holds, followed there by the reply it
        # generated to them; None when unknown (then the next turn starts afresh).
        self._held: list[Message] | None = []
        self._busy = threading.Lock()

    def load(self) -> None:
        from hailo_platform.genai import LLM

        if self._vdevice is None:
            self._vdevice = open_vdevice()
        try:
            self._llm = LLM(self._vdevice, str(self.hef_path))
        except Exception as error:
            raise BackendError(f"Failed to load {self.hef_path} on the Hailo device: {error or type(error).__name__}") from None
        self._recovery_sequence = self._llm.get_generation_recovery_sequence()
        self._held = []

    def _unsent(self, messages: Sequence[Message]) -> list[Message] | None:
        """The messages after the device's last reply, or None if the device's history differs."""
        held = self._held
        if held is None:
            return None
        if not held:
            return list(messages)
        after_reply = len(held) + 1
        if len(messages) <= after_reply or list(messages[: len(held)]) != held:
            return None
        if messages[len(held)]["role"] != "assistant":
            return None
        return list(messages[after_reply:])

    def _prompt_tokens(self, messages: Sequence[Message]) -> int:
        return len(self._llm.tokenize(render_chatml(messages)))

    def count_tokens(self, messages: Sequence[Message]) -> int:
        new = self._unsent(messages)
        if new is not None and self._held:
            return self._llm.get_context_usage_size() + self._prompt_tokens(new)
        return self._prompt_tokens(messages)

    @property
    def context_used(self) -> int:
        return self._llm.get_context_usage_size() if self._llm else 0

    @property
    def context_capacity(self) -> int:
        return self._llm.max_context_capacity() if self._llm else 0

    def stream(
        self, messages: Sequence[Message], params: GenerationParams, cancel: threading.Event
    ) -> Iterator[str]:
        if not self._busy.acquire(blocking=False):
            raise BackendBusyError("a reply is already being generated")
        try:
            yield from self._generate(list(messages), params, cancel)
        finally:
            self._busy.release()

    def _generate(self, messages: list[Message], params: GenerationParams, cancel) -> Iterator[str]:
        new = self._unsent(messages)
        if new is None:
            self._llm.clear_context()
            new = messages
        self._held = None  # unknown until this generation has ended
        self.last_prompt_tokens = self._prompt_tokens(new)
        options: dict = {"max_generated_tokens": params.max_tokens}
        if params.temperature > 0:
            options.update(temperature=params.temperature, do_sample=True)
        else:
            options.update(do_sample=False)
        if params.top_p is not None:
            options["top_p"] = params.top_p
        try:
            with self._llm.generate(prompt=new, **options) as generation:
                for token in generation:
                    if cancel.is_set():
                        break
                    if token and token != self._recovery_sequence:
                        yield token
                    if cancel.is_set():
                        break  # leaving the with block aborts on the device
        except GeneratorExit:
            raise
        except Exception as error:
            logger.exception("hailo generation failed")
            raise BackendError(f"Hailo generation failed: {error or type(error).__name__}") from None
        self._held = messages  # the device holds them and (part of) its reply

    def clear(self) -> None:
        if self._llm is not None:
            self._llm.clear_context()
        self._held = []

    def release(self) -> None:
        """clear_context, llm.release, vdevice.release — each tried, in this order."""
        steps = []
        if self._llm is not None:
            steps += [("clear_context", self._llm.clear_context), ("llm.release", self._llm.release)]
        if self._vdevice is not None:
            steps.append(("vdevice.release", self._vdevice.release))
        for label, step in steps:
            try:
                step()
            except Exception:
                logger.exception("{} failed during release", label)
        self._llm = None
        self._vdevice = None
