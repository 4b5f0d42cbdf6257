"""The Hailo-10H backend: HailoRT's `hailo_platform.genai.LLM` on a shared VDevice.

Every generate() adds to the device's context, so this backend sends only what it lacks
(hailo_conversation.py); when the conversation no longer starts with what it holds (a dropped turn,
/undo, /retry, /load, /system, a failed or stopped generation: what an abort leaves, llm.cpp
`LLMGeneratorCompletion::Impl::abort`, is not known) it clears the context and sends the whole
conversation once. A full context is only a warning there (the cache slides): the caller keeps usage
within capacity with `count_tokens`. One request reaches the device at a time (session_wrapper.cpp
`SessionWrapper::execute`) and a clear during a reply would empty it mid-reply (llm_server.cpp
handle_clear_context_request): clear() and release() stop the reply first; release goes
clear_context(), llm.release(), vdevice.release().

A loaded context (hailo_saves.py, where hailo_keeping.py says it pays) leaves the template's
first-prompt state as it was (minja_wrapper.cpp `m_is_first`, reset only by llm.cpp
`LLM::Impl::clear_context`), so until the next clear prompts go as text rendered by chat_template.py
as minja renders a later prompt (a str is inserted as is), on a HEF that has passed its self-check
(hailo_selfcheck.py) only. The bindings (llm_api.cpp) hold the GIL in every call: the model loads
before the prompt is shown, and replies are read in short polls (hailo_stream.py). The device and
the HEF: hailo_device.py.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hailo_repl.backends.base import (
    BackendError,
    GenerationParams,
    Message,
    Notice,
    ReplyStream,
    one_generation_at_a_time,
)
from hailo_repl.backends.chat_template import ChatTemplate
from hailo_repl.backends.hailo_conversation import DeviceConversation
from hailo_repl.backends.hailo_device import (
    hailort_too_old,
    installed_hailort_version,
    open_llm,
    open_vdevice,
    splits_at_reasoning,
)
from hailo_repl.backends.hailo_keeping import KeepingPolicy
from hailo_repl.backends.hailo_saves import KeptContexts
from hailo_repl.backends.hailo_selfcheck import DEVICE_FACTS_NAME, DeviceFacts, Verdict, check_and_remember, device_key
from hailo_repl.backends.hailo_stream import TokenPace, TokenReader, generation_options
from hailo_repl.log import logger
from hailo_repl.streaming import clean_response

LOADING_NOTICE = "Loading the kept device context…"


class HailoBackend:
    name = "hailo"
    # HailoRT's bindings hold the GIL while LLM() loads (llm_api.cpp has no
    # gil_scoped_release), so nothing else could run meanwhile: load before the prompt.
    loads_in_background = False
    context_is_estimate = False

    def __init__(
        self,
        hef_path: Path,
        vdevice: Any = None,
        context_cache: Path | None = None,
        facts_file: Path | None = None,
        keeping: KeepingPolicy | None = None,
    ):
        """`context_cache`: where system prompts' contexts are kept; `facts_file`: what the device
        has shown (hailo_selfcheck.py), by default in `context_cache`. None: nowhere (--no-history).
        `keeping`: which contexts may be kept, within what budget (hailo_keeping.py)."""
        self.hef_path = Path(hef_path)
        self.context_cache = context_cache
        self.keeping = keeping or KeepingPolicy(cache_directory=context_cache)
        self.model_name = self.hef_path.stem
        self.last_prompt_tokens = 0
        self.reader = TokenReader()
        self._vdevice = vdevice
        self._llm: Any = None  # hailo_platform.genai.LLM once loaded
        self.conversation = DeviceConversation()  # what the device's context holds
        facts = DeviceFacts(facts_file or (context_cache / DEVICE_FACTS_NAME if context_cache else None))
        self.kept = KeptContexts(self.hef_path, self.keeping, context_cache, facts)
        # Whether prompts may go as text (after a loaded context): the HEF passed the self-check.
        self._text_path_ok = False
        self._checked_at_load = False  # whether this load ran the self-check (not a remembered verdict)
        self._check_detail = ""  # the figures behind _text_path_ok, for the doctor
        # Read on the generating thread only: on the device these calls wait behind a
        # running generation, holding the GIL, and the toolbar must never wait.
        self._usage = 0
        self._capacity = 0
        self._busy = threading.Lock()
        self._reply_cancel: threading.Event | None = None  # the running reply's, for clear() and release()

    def load(self) -> None:
        too_old = hailort_too_old()
        if too_old:
            raise BackendError(too_old)
        from hailo_platform.pyhailort.pyhailort import HailoRTInvalidOperationException, HailoRTTimeout

        self.reader.timeout_error, self.reader.thread_ended_error = HailoRTTimeout, HailoRTInvalidOperationException
        if self._vdevice is None:
            self._vdevice = open_vdevice()  # a fresh one: LLM() on a released VDevice would crash HailoRT
        self._llm = llm = open_llm(self._vdevice, self.hef_path)
        self.reader.recovery_sequence = llm.get_generation_recovery_sequence() or ""
        try:
            template_source = llm.prompt_template()
        except Exception:
            logger.opt(exception=True).info("prompt_template() failed; estimating with ChatML")
            template_source = None
        self.conversation.model_loaded(template_source)
        self._capacity = llm.max_context_capacity()
        self.kept.key = device_key(self.hef_path, installed_hailort_version())
        self._text_path_ok = self.kept.facts.path is not None and self._text_path_checked(llm)
        self._usage = llm.get_context_usage_size()
        if self._usage:  # not empty (a self-check whose last clear failed): the first turn clears it
            self.conversation.held = None

    def keep_as(self, keeping: KeepingPolicy) -> None:
        self.keeping = self.kept.keeping = keeping
        if keeping.keep_chats and self._llm is not None and not self._text_path_ok:
            # A script's chat skipped the self-check at load (nothing kept): a terminal's runs it now.
            with self._no_reply_running():
                self._text_path_ok = self.kept.facts.path is not None and self._text_path_checked(self._llm)
                if self._checked_at_load:
                    self.conversation.held = None  # the check used the context: the next turn starts afresh

    def _text_path_checked(self, llm: Any, again: bool = False) -> bool:
        """Whether this HEF has passed the self-check with this HailoRT and renderer (run and
        remembered on first use, where contexts may be kept: -p and pipes skip it)."""
        known = None if again else self.kept.facts.get(self.kept.key, "text_path")
        self._checked_at_load = known is None and (again or self.keeping.keep_chats)
        template = self.conversation.template if self._checked_at_load else None  # jinja2 only for a check
        if template is not None:
            verdict = check_and_remember(llm, template, self.kept.facts, self.kept.key, self.model_name)
            known = {"passed": verdict.passed, "detail": verdict.detail}
        self._check_detail = str((known or {}).get("detail", ""))
        passed = bool((known or {}).get("passed"))
        if not passed:
            why = (
                "not checked yet, and nothing is kept here"
                if known is None and self.conversation.template is not None
                else "its chat template cannot be rendered here"
                if known is None
                else f"prompts sent as text did not match them in the self-check ({self._check_detail})"
            )
            logger.info("sending whole message lists to {}: {}", self.model_name, why)
        return passed

    def self_check(self) -> Verdict:
        """Run the self-check again on the loaded model and remember it (hailo-repl doctor)."""
        with self._no_reply_running():
            llm = self._model
            if self.conversation.template is None:
                return Verdict(False, "the HEF's chat template cannot be rendered here")
            if not self._checked_at_load:
                self._text_path_ok = self._text_path_checked(llm, again=True)
                self.conversation.cleared()
            return Verdict(self._text_path_ok, self._check_detail)

    @property
    def _model(self) -> Any:
        """The loaded LLM: a BackendError, not an AttributeError on None, before load() or after release()."""
        if self._llm is None:
            raise BackendError(f"{self.model_name} is not loaded")
        return self._llm

    def _prompt_tokens(self, messages: Sequence[Message], continuing: bool) -> int:
        return len(self._model.tokenize(self.conversation.prompt_text(messages, continuing)))

    def count_tokens(self, messages: Sequence[Message]) -> int:
        new = self.conversation.unsent(messages)
        if new is not None and self.conversation.held:
            return self._usage + self._prompt_tokens(new, continuing=True)
        return self._prompt_tokens(messages, continuing=False)

    @property
    def context_used(self) -> int:
        return self._usage

    @property
    def context_capacity(self) -> int:
        return self._capacity

    def stream(self, messages: Sequence[Message], params: GenerationParams, cancel: threading.Event) -> ReplyStream:
        with one_generation_at_a_time(self._busy):
            self._reply_cancel = cancel
            try:
                yield from self._generate(list(messages), params, cancel)
            finally:
                self._reply_cancel = None

    def _generate(self, messages: list[Message], params: GenerationParams, cancel: threading.Event) -> ReplyStream:
        llm, device = self._model, self.conversation
        options = generation_options(params)
        reply: list[str] = []
        ended_by_itself = False
        try:
            if device.unsent(messages) is None:
                self._clear_context(llm)
            start = None if device.held else self.kept.start_for(llm, messages, self._text_template)
            if start is not None:
                yield Notice(LOADING_NOTICE)  # seconds with the GIL held: say so first
                if self.kept.load(llm, start, messages):
                    device.held = list(start[1])
            held = device.held or []
            new = messages[len(held) :]
            continuing = bool(held)
            # After a load the template still takes the next prompt for a first one: plain text then.
            prompt: str | list[Message] = device.prompt_text(new, True) if continuing and device.template_first else new
            device.held = None  # unknown until this generation has ended
            self.last_prompt_tokens = self._prompt_tokens(new, continuing)
            pace = TokenPace()
            started = time.monotonic()
            with llm.generate(prompt=prompt, **options) as generation:
                device.template_first = device.template_first and isinstance(prompt, str)
                for token in self.reader.read(generation, cancel, pace):
                    if not isinstance(token, Notice):
                        reply.append(token)
                    yield token
                ended_by_itself = generation.generation_status.name != "GENERATING"
                if pace.count:
                    self.kept.note_prefill(self.last_prompt_tokens, (pace.first - started) * 1000)
                if not ended_by_itself:
                    # Leaving `with` aborts, holding the GIL for a token-time or two: the
                    # UI thread draws the prompt first, and the abort is timed to wait little.
                    time.sleep(pace.seconds_until_abort(time.monotonic()))
        except BackendError:
            raise
        except GeneratorExit:
            raise  # the reader stopped; leaving `with` aborted
        except Exception as error:
            logger.exception("hailo generation failed")
            raise BackendError(f"Hailo generation failed: {error or type(error).__name__}") from None
        finally:
            if ended_by_itself and splits_at_reasoning(device.template, new):
                device.held = None  # it kept only what came before the user's own "<think>": start afresh
            elif ended_by_itself:  # the device holds the prompt and the whole reply
                device.held = messages + [{"role": "assistant", "content": clean_response("".join(reply))}]
            try:
                self._usage = llm.get_context_usage_size()
            except Exception:  # a failed device must not hide the error being raised
                logger.exception("reading the context usage failed")

    @contextlib.contextmanager
    def _no_reply_running(self) -> Iterator[None]:
        """Stop the running reply, if any, and hold the generation lock until done: on the
        device a clear during a reply empties the context mid-reply, and a release aborts it."""
        cancel = self._reply_cancel
        if cancel is not None:
            cancel.set()
        with self._busy:
            yield

    def _clear_context(self, llm: Any) -> None:
        llm.clear_context()
        self.conversation.cleared()

    @property
    def _text_template(self) -> ChatTemplate | None:
        """The template prompts may be rendered with as text: None until the HEF passed its self-check."""
        return self.conversation.template if self._text_path_ok else None

    def context_to_keep(self, messages: Sequence[Message]) -> bool:
        held = self.conversation.held
        if not self.keeping.keep_chats or self._llm is None or not held or held != list(messages):
            return False
        return self._text_path_ok and self.kept.pays(self._usage)

    def save_context(self, path: Path, messages: Sequence[Message]) -> bool:
        """Keep the device's context in `path` when it holds exactly `messages` (a completed turn)
        and keeping it pays (context_to_keep), within the budget (hailo_saves.py). A save holds
        the GIL for seconds on a Pi: the chat calls this only when waiting costs the user nothing."""
        if not self._busy.acquire(blocking=False):  # a reply runs (or a stalled one waits): not now
            return False
        try:
            if not self.context_to_keep(messages):
                return True  # nothing complete to keep, or nothing a load would pay for
            return self.kept.save(self._llm, path, list(messages))
        finally:
            self._busy.release()

    def offer_context(self, path: Path, messages: Sequence[Message]) -> None:
        self.kept.offered = (path, list(messages))

    def clear(self) -> None:
        with self._no_reply_running():
            if self._llm is not None:
                self._clear_context(self._llm)
                self._usage = self._llm.get_context_usage_size()
            self.conversation.held = []
            self.kept.offered = None

    def release(self) -> None:
        """clear_context, llm.release, vdevice.release — each tried, in this order, after any reply has stopped."""
        with self._no_reply_running():
            if self._llm is not None:
                self.kept.keep_system_prompt(self._llm, self._text_template)
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
