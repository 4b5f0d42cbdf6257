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
- One request reaches the device at a time (hailort/common/genai/session_wrapper/
  session_wrapper.cpp, `SessionWrapper::execute`), and the server's clear_context takes
  its generation lock only per token (hailort/hailort_server/genai/llm/llm_server.cpp,
  handle_clear_context_request): a clear during a reply would silently empty the
  context mid-reply. clear() and release() therefore stop the reply and wait for it.
- An abort (llm.cpp, `LLMGeneratorCompletion::Impl::abort`) waits, GIL held, for the
  token request in flight, then for the server to notice; the context keeps every token
  generated meanwhile, read or not, and the recovery sequence. What the device holds
  after an abort is not known here, so the next turn starts afresh.
- save_context()/load_context() keep the context in a file (hailo_context.py): a resumed
  chat, and the system prompt of a new one, are loaded instead of read again. A load
  leaves the template's first-prompt state as it was (minja_wrapper.cpp `m_is_first`, reset
  only by `LLM::Impl::clear_context` in llm.cpp): after it, a templated prompt would be
  rendered as a context's first (Qwen's default system prompt mid-context), so until the
  next clear the prompts go as plain text, rendered by chat_template.py as minja_wrapper.cpp
  renders a later prompt (pyhailort.py `LLM.generate`: a str is inserted as is). That text
  path is used only on a HEF that has passed its self-check (hailo_selfcheck.py).
- save_context() hands over the whole KV cache (llm_server.cpp `LLMServer::get_context`),
  copied to and from Python with the GIL held (llm_api.cpp, pyhailort.py): seconds on a Pi.
  So the chat saves only when that costs the user nothing (chat.py `keep_device_context`),
  and the system prompt's context is kept as the model is released, never before a reply.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from hailo_repl.backends.hailo_context import (
    ContextFileError,
    ContextTags,
    hef_identity,
    messages_digest,
    read_context,
    tags_differ,
    write_context,
)
from hailo_repl.backends.hailo_keeping import (
    DeviceFigures,
    KeepingPolicy,
    make_room,
    memory_allows,
    with_prefill_sample,
)
from hailo_repl.backends.hailo_selfcheck import DEVICE_FACTS_NAME, DeviceFacts, Verdict, device_key, run_self_check
from hailo_repl.log import logger
from hailo_repl.streaming import clean_response

LOADING_NOTICE = "Loading the kept device context…"
# DeepSeek-R1-Distill's begin_of_reasoning token, with which its template ends a generation prompt.
REASONING_START = "<think>"
SHARED_VDEVICE_GROUP_ID = "SHARED"  # lets other Hailo apps use the chip at the same time
POLL_MS = 5  # longest a read() may hold the GIL (see _read_tokens)
POLL_GAP = 0.001  # seconds between polls with the GIL released
# HailoRT gives a token request this long before its token thread gives up
# (LONG_TIMEOUT, hailort/common/genai/session_wrapper/session_wrapper.hpp).
HAILORT_REQUEST_TIMEOUT = 120.0
STALL_NOTICE_SECONDS = 10.0  # no token for this long: say so
STALL_GIVE_UP_SECONDS = HAILORT_REQUEST_TIMEOUT + 10  # HailoRT's own timeout has passed: report the device failed
# After a Ctrl+C the abort, which holds the GIL, waits at least this long, so the prompt is
# drawn first, and then for the moment just before the next token is due (ABORT_EARLY of a
# token-time before): it then waits for little of the request in flight.
ABORT_AFTER_PROMPT_SECONDS = 0.05
ABORT_EARLY = 0.2

# get_context_usage_size() and max_context_capacity() first appear in HailoRT 5.1.1
# (pyhailort.py of v5.1.1; absent in v5.0.1 and v5.1.0).
MINIMUM_HAILORT = (5, 1, 1)
NEEDED_LLM_METHODS = ("get_context_usage_size", "max_context_capacity")

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


def version_text(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def installed_hailort_version() -> str:
    import hailo_platform

    return str(getattr(hailo_platform, "__version__", "unknown"))


def hailort_too_old() -> str | None:
    """Why the installed HailoRT cannot run this backend (one line), or None if it can."""
    from hailo_platform.genai import LLM

    installed = installed_hailort_version()
    parsed = tuple(int(part) for part in re.findall(r"\d+", installed)[:3])
    missing = [name for name in NEEDED_LLM_METHODS if not hasattr(LLM, name)]
    if not missing and (not parsed or parsed >= MINIMUM_HAILORT):
        return None
    return (
        f"HailoRT {installed} is installed; hailo-repl needs HailoRT {version_text(MINIMUM_HAILORT)} or later "
        f"(for LLM.{'/'.join(NEEDED_LLM_METHODS)}). Install a newer HailoRT, or use --backend llama"
    )


def render_chatml(messages: Sequence[Mapping[str, object]], add_generation_prompt: bool = True) -> str:
    """The Qwen2.5 (ChatML) template: the estimate when the model's own cannot be read."""
    body = "".join(
        f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
        for m in messages
        if m["role"] in ("system", "user", "assistant")
    )
    return body + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def compile_template(source: str | None) -> ChatTemplate | None:
    """The HEF's own chat template, or None when it cannot be used (token counts are then
    estimated with ChatML, and nothing is sent as text)."""
    if not source:
        return None
    try:
        template = ChatTemplate(source)
        template.probe  # noqa: B018  (HailoRT renders it as the LLM is made; it must render here too)
    except Exception:
        logger.opt(exception=True).info("the HEF's chat template cannot be rendered here; estimating with ChatML")
        return None
    return template


# LLM() raises a bare status number (its constructor is not wrapped in pyhailort.py):
# what it means and what to do. 14 and 92 come from the header read before loading
# (hef.cpp, Hef::hash); 26 and 93 from the device parsing the HEF afterwards.
LOAD_STATUS_WORDS = {
    "13": "cannot open the file (check the path and that you may read it)",
    "14": "the file could not be read whole (a truncated download? download it again)",
    "26": "not a valid HEF (a damaged file? download it again)",
    "92": "a HEF format this HailoRT does not support (use a HEF built for HailoRT "
    "{hailort} from Hailo's Model Zoo GenAI)",
    "93": "the HEF was compiled for another Hailo device (use a Hailo-10H HEF)",
}


class RecoveryFilter:
    """Keeps the recovery sequence out of a reply. HailoRT sends it after a reply stopped by
    max_generated_tokens, one token a read, the last with the final status (llm_server.cpp
    `LLMServer::handle_read_request`, m_recovery.delivery_queue): pieces that could begin it are
    held back until they either make it whole as the generation ends (dropped) or do not."""

    def __init__(self, sequence: str):
        self.sequence = sequence
        self.held: list[str] = []

    def feed(self, piece: str, ended: bool) -> list[str]:
        """What to pass on after `piece`; `ended`: the generation's status is final with it."""
        if not piece:
            return []
        candidate = "".join(self.held) + piece
        if self.sequence and self.sequence.startswith(candidate):
            if candidate == self.sequence and ended:
                self.held = []
                return []
            self.held.append(piece)
            return []
        passed, self.held = self.held, []
        if self.sequence and self.sequence.startswith(piece):
            self.held = [piece]
            return passed
        return [*passed, piece]

    def flush(self) -> list[str]:
        """The pieces held when the generation ended without completing the sequence: the reply's."""
        held, self.held = self.held, []
        return held


class TokenPace:
    """When a generation's tokens arrive, to time its abort."""

    def __init__(self) -> None:
        self.first = 0.0
        self.last = 0.0
        self.count = 0

    def arrived(self, moment: float) -> None:
        self.first = self.first if self.count else moment
        self.last = moment
        self.count += 1

    def seconds_until_abort(self, now: float) -> float:
        """How long to wait before aborting: see ABORT_AFTER_PROMPT_SECONDS."""
        earliest = now + ABORT_AFTER_PROMPT_SECONDS
        interval = (self.last - self.first) / (self.count - 1) if self.count > 1 else 0.0
        if interval <= 0:
            return ABORT_AFTER_PROMPT_SECONDS
        due = self.last + interval * (1 - ABORT_EARLY)
        if due < earliest:
            due += math.ceil((earliest - due) / interval) * interval
        return due - now


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
        self._key = ""  # device_key: whose facts, set as the model loads
        self.model_name = self.hef_path.stem
        self.last_prompt_tokens = 0
        self._vdevice = vdevice
        self._llm: Any = None  # hailo_platform.genai.LLM once loaded
        self._recovery_sequence: str | None = None
        self._timeout_error: type[Exception] = TimeoutError  # HailoRT's, once loaded
        self._thread_ended_error: type[Exception] = EOFError  # read() after HailoRT's token thread ended
        self._template_source: str | None = None  # LLM.prompt_template(), read as the model loads
        self._compiled: tuple[ChatTemplate | None] | None = None  # compiled on first use (jinja2 loads then)
        self._facts = DeviceFacts(facts_file or (context_cache / DEVICE_FACTS_NAME if context_cache else None))
        # Whether prompts may go as text (after a loaded context): the HEF passed the self-check.
        self._text_path_ok = False
        self._checked_at_load = False  # whether load() ran the self-check (not a remembered verdict)
        self._check_detail = ""  # the figures behind _text_path_ok, for the doctor
        self._system_to_keep: list[Message] | None = None  # a system prompt whose context is not kept yet
        self._saved: tuple[Path, str] | None = None  # the last context saved: (file, digest of its messages)
        # The conversation the device's context holds, its own last reply included;
        # None when unknown (a failed or aborted generation): the next turn then starts afresh.
        self._held: list[Message] | None = []
        # minja_wrapper.cpp's m_is_first: the next templated prompt would be rendered as a
        # context's first. Reset by clear_context() only, unset by a templated prompt.
        self._template_first = True
        self._offered: tuple[Path, list[Message]] | None = None  # a resumed chat's saved context
        # Read on the generating thread only: on the device these calls wait behind a
        # running generation, holding the GIL, and the toolbar must never wait.
        self._usage = 0
        self._capacity = 0
        self._busy = threading.Lock()
        self._reply_cancel: threading.Event | None = None  # the running reply's, for clear() and release()
        self.stall_notice_seconds = STALL_NOTICE_SECONDS
        self.stall_give_up_seconds = STALL_GIVE_UP_SECONDS

    def load(self) -> None:
        too_old = hailort_too_old()
        if too_old:
            raise BackendError(too_old)
        from hailo_platform.genai import LLM
        from hailo_platform.pyhailort.pyhailort import HailoRTInvalidOperationException, HailoRTTimeout

        self._timeout_error = HailoRTTimeout
        self._thread_ended_error = HailoRTInvalidOperationException
        if self._vdevice is None:
            self._vdevice = open_vdevice()  # a fresh one: LLM() on a released VDevice would crash HailoRT
        try:
            llm = LLM(self._vdevice, str(self.hef_path))
        except Exception as error:
            words = LOAD_STATUS_WORDS.get(str(error))
            reason = words.format(hailort=installed_hailort_version()) if words else str(error) or type(error).__name__
            raise BackendError(f"Failed to load {self.hef_path} on the Hailo device: {reason}") from None
        self._llm = llm
        self._recovery_sequence = llm.get_generation_recovery_sequence()
        try:
            self._template_source, self._compiled = llm.prompt_template(), None
        except Exception:
            logger.opt(exception=True).info("prompt_template() failed; estimating with ChatML")
            self._template_source, self._compiled = None, None
        self._capacity = llm.max_context_capacity()
        self._key = device_key(self.hef_path, installed_hailort_version())
        self._text_path_ok = self._facts.path is not None and self._text_path_checked(llm)
        self._usage = llm.get_context_usage_size()
        # A context not empty now (a self-check whose last clear failed): the first turn clears it.
        self._held = [] if self._usage == 0 else None
        self._template_first = True

    def _text_path_checked(self, llm: Any, again: bool = False) -> bool:
        """Whether this HEF has passed the self-check with this HailoRT and renderer (run and
        remembered on first use, where contexts may be kept: -p and pipes skip it); the log says
        why not, once per load."""
        known = None if again else self._facts.get(self._key, "text_path")
        if known is None and not again and not self.keeping.keep_chats:
            logger.info("sending whole message lists to {}: not checked yet, and nothing is kept here", self.model_name)
            return False
        self._checked_at_load = known is None
        if known is None:
            if self._template is None:
                logger.info(
                    "sending whole message lists to {}: its chat template cannot be rendered here", self.model_name
                )
                return False
            started = time.monotonic()
            verdict = run_self_check(llm, self._template, self._facts.path.parent if self._facts.path else None)
            known = {"passed": verdict.passed, "detail": verdict.detail}
            if verdict.ran:  # one that could not run is tried again at the next load
                self._facts.remember(self._key, "text_path", known)
                for name, figures in verdict.figures.items():
                    self._facts.remember(self._key, name, figures)
            logger.info(
                "self-check of {} with HailoRT {} ({:.1f} s): {}; {}",
                self.model_name,
                installed_hailort_version(),
                time.monotonic() - started,
                "passed" if verdict.passed else "FAILED",
                verdict.detail,
            )
        self._check_detail = str(known.get("detail", ""))
        if not known.get("passed"):
            logger.info(
                "sending whole message lists to {}: prompts sent as text did not match them in the self-check ({})",
                self.model_name,
                known.get("detail"),
            )
        return bool(known.get("passed"))

    def self_check(self) -> Verdict:
        """Run the self-check again on the loaded model and remember it (hailo-repl doctor)."""
        with self._no_reply_running():
            llm = self._model
            if self._template is None:
                return Verdict(False, "the HEF's chat template cannot be rendered here")
            if not self._checked_at_load:
                self._text_path_ok = self._text_path_checked(llm, again=True)
                self._held, self._template_first = [], True
            return Verdict(self._text_path_ok, self._check_detail)

    @property
    def _template(self) -> ChatTemplate | None:
        """The HEF's chat template, compiled when first needed: not before the first prompt."""
        if self._compiled is None:
            self._compiled = (compile_template(self._template_source),)
        return self._compiled[0]

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

    def _prompt_text(self, messages: Sequence[Message], continuing: bool) -> str:
        """`messages` as the device templates them: the first prompt of a context whole; a
        later one rendered after the probe, less what the probe renders alone (minja_wrapper.cpp)."""
        if self._template is None:
            return render_chatml(messages)  # an estimate: ChatML has no text of its own to cut
        return self._template.later(messages) if continuing else self._template.first(messages)

    def _prompt_tokens(self, messages: Sequence[Message], continuing: bool) -> int:
        return len(self._model.tokenize(self._prompt_text(messages, continuing)))

    def count_tokens(self, messages: Sequence[Message]) -> int:
        new = self._unsent(messages)
        if new is not None and self._held:
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
        llm = self._model
        options: dict[str, Any] = {"max_generated_tokens": params.max_tokens}
        if params.temperature > 0:
            options.update(temperature=params.temperature, do_sample=True)
        else:
            options.update(do_sample=False)
        if params.top_p is not None:
            options["top_p"] = params.top_p
        reply: list[str] = []
        ended_by_itself = False
        try:
            if self._unsent(messages) is None:
                self._clear_context(llm)
            start = None if self._held else self._saved_start(messages)
            if start is not None:
                yield Notice(LOADING_NOTICE)  # seconds with the GIL held: say so first
                if not self._load(llm, start[0], start[1], messages, start[2]) and start[2] is not None:
                    self._system_to_keep = start[1]  # the system prompt's: kept again at release
            held = self._held or []
            new = messages[len(held) :]
            continuing = bool(held)
            # After a load the template still takes the next prompt for a first one: plain text then.
            prompt: str | list[Message] = self._prompt_text(new, True) if continuing and self._template_first else new
            self._held = None  # unknown until this generation has ended
            self.last_prompt_tokens = self._prompt_tokens(new, continuing)
            pace = TokenPace()
            started = time.monotonic()
            with llm.generate(prompt=prompt, **options) as generation:
                self._template_first = self._template_first and isinstance(prompt, str)
                for token in self._read_tokens(generation, cancel, pace):
                    if not isinstance(token, Notice):
                        reply.append(token)
                    yield token
                ended_by_itself = generation.generation_status.name != "GENERATING"
                if pace.count:
                    self._note_prefill(self.last_prompt_tokens, (pace.first - started) * 1000)
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
            if ended_by_itself and self._splits_at_reasoning(new):
                self._held = None  # it kept only what came before the user's own "<think>": start afresh
            elif ended_by_itself:  # the device holds the prompt and the whole reply
                self._held = messages + [{"role": "assistant", "content": clean_response("".join(reply))}]
            try:
                self._usage = llm.get_context_usage_size()
            except Exception:  # a failed device must not hide the error being raised
                logger.exception("reading the context usage failed")

    def _splits_at_reasoning(self, sent: Sequence[Message]) -> bool:
        """Whether a message sent holds a literal REASONING_START on a reasoning HEF (its template
        ends a generation prompt in it): the device then keeps only what came before it once the
        generation ends (llm_server.cpp `handle_prefill_phase` looks for the reasoning token in the
        whole prompt; `handle_reasoning_generation_completion` restores the cache saved there)."""
        if not any(REASONING_START in m["content"] for m in sent):
            return False
        template = self._template
        probe: list[Message] = [{"role": "user", "content": "x"}]
        return REASONING_START in (template.first(probe) if template is not None else render_chatml(probe))

    def _read_tokens(self, generation: Any, cancel: threading.Event, pace: TokenPace) -> Iterator[str]:
        """The generation's text pieces (and Notices), read in short polls so the UI thread can run.

        Each read() holds the GIL while it waits, so it waits at most POLL_MS. A cancel
        takes effect at the next token: leaving the `with` block before it comes would
        make the abort wait, GIL held, for the request in flight — the whole prompt
        evaluation, or a stalled request until HailoRT gives it up. So a stalled device
        gets a notice, not an abort; HailoRT ends the request after 2 minutes
        (HAILORT_REQUEST_TIMEOUT) and its dead token thread then surfaces as
        HailoRTInvalidOperationException from read() (llm.cpp, token_reader_thread and
        `Impl::read`). A thread that died with tokens still queued never says so
        (read() only times out), hence the last resort of `stall_give_up_seconds`.
        """
        last_token = time.monotonic()
        noticed = False
        recovery = RecoveryFilter(self._recovery_sequence or "")
        while generation.generation_status.name == "GENERATING":
            try:
                token = generation.read(POLL_MS)
            except self._timeout_error:
                silent = time.monotonic() - last_token
                if silent > self.stall_give_up_seconds:
                    logger.error("hailo generation failed: no token for {:.0f} s", silent)
                    stalled = f"the device gave no token for {silent:.0f} s"
                    raise BackendError(f"Hailo generation failed: {stalled}") from None
                if silent > self.stall_notice_seconds and not noticed and not cancel.is_set():
                    noticed = True
                    yield Notice(
                        f"The Hailo device has given no token for {silent:.0f} s (another process using it? "
                        f"a stalled device?). HailoRT gives up after {HAILORT_REQUEST_TIMEOUT:.0f} s; "
                        "Ctrl+C brings the prompt back meanwhile."
                    )
                time.sleep(POLL_GAP)  # the GIL is free for this long: the UI thread's turn
                continue
            except self._thread_ended_error:
                logger.exception("hailo generation failed: HailoRT's token thread ended")
                raise BackendError(
                    "Hailo generation failed: the device stopped generating "
                    "(HailoRT's token thread ended; details in hailort.log)"
                ) from None
            last_token = time.monotonic()
            pace.arrived(last_token)
            if cancel.is_set():
                return
            yield from recovery.feed(token, ended=generation.generation_status.name != "GENERATING")
        yield from recovery.flush()

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
        self._held = []
        self._template_first = True

    def _tags(self, messages: Sequence[Message], rendered: str | None = None) -> ContextTags:
        """`rendered`: the text the context holds, where the messages alone do not settle it."""
        digest = messages_digest(messages)
        if rendered is not None:
            digest = hashlib.sha256(f"{digest}\n{rendered}".encode()).hexdigest()
        return ContextTags(hef_identity(self.hef_path), installed_hailort_version(), digest)

    def _figures(self) -> DeviceFigures:
        return DeviceFigures.from_facts(self._facts.entry(self._key))

    def _note_prefill(self, tokens: int, milliseconds: float) -> None:
        """A prompt's time to first token, kept where it widens the range of prefills seen: the
        marginal rate between the shortest and the longest decides whether a load pays."""
        samples = with_prefill_sample(self._facts.get(self._key, "prefill"), tokens, milliseconds)
        if samples is not None and self._facts.path is not None:
            self._facts.remember(self._key, "prefill", samples)

    def _keeping_pays(self, tokens: int) -> bool:
        """Whether a context of `tokens` is worth keeping: the device's figures say a load beats
        reading them again (hailo_keeping.py `DeviceFigures.load_wins`; unmeasured: no)."""
        return self._text_path_ok and self._figures().load_wins(tokens)

    def context_to_keep(self, messages: Sequence[Message]) -> bool:
        held = self._held
        if not self.keeping.keep_chats or self._llm is None or not held or held != list(messages):
            return False
        return self._keeping_pays(self._usage)

    def save_context(self, path: Path, messages: Sequence[Message]) -> bool:
        """Keep the device's context in `path` when it holds exactly `messages` (a completed turn)
        and keeping it pays (context_to_keep); within the budget, the oldest kept contexts go.

        HailoRT hands over the whole KV cache, whatever its fill (llm_server.cpp
        `LLMServer::get_context`), as a list of ints that pyhailort.py `LLM.save_context` makes
        bytes: seconds with the GIL held on a Pi, so the chat calls this only when waiting costs
        the user nothing (chat.py). Size and time go to the log and the facts file."""
        if not self._busy.acquire(blocking=False):  # a reply runs (or a stalled one waits): not now
            return False
        try:
            held = self._held
            if self._llm is None or not held or held != list(messages) or not self.context_to_keep(messages):
                return True  # nothing complete to keep, or nothing a load would pay for
            if self._saved == (path, messages_digest(held)):
                return True  # already there
            return self._write_context(path, self._tags(held))
        finally:
            self._busy.release()

    def _write_context(self, path: Path, tags: ContextTags) -> bool:
        """Save the device's context to `path` within the budget and the memory available; False
        when it was not kept (the log says why). The caller holds the generation lock."""
        llm = self._model
        figures = self._figures()
        expected = figures.context_bytes or 0
        policy = self.keeping
        if policy.chat_directory is None and path.parent != policy.cache_directory:
            policy = dataclasses.replace(policy, chat_directory=path.parent)
        if not make_room(policy, expected, replacing=path):
            logger.info("not keeping the device context: {} bytes exceed the device-context budget", expected)
            return True  # it never will fit: not worth a retry
        if not memory_allows(expected, "saving"):
            return False
        try:
            started = time.monotonic()
            data = llm.save_context()
            read = time.monotonic()
            write_context(path, tags, data)
        except Exception:  # the chat itself is saved; only a quicker resume is lost
            logger.exception("saving the device context to {} failed", path)
            return False
        written = time.monotonic()
        self._saved = (path, tags.messages)
        make_room(policy, 0)  # another process may have kept some meanwhile
        self._remember_figures("save", len(data), read - started, written - read)
        logger.info(
            "saved the device context to {}: {} bytes, {:.0f} ms from the device, {:.0f} ms to write",
            path,
            len(data),
            (read - started) * 1000,
            (written - read) * 1000,
        )
        return True

    def _remember_figures(self, what: str, size: int, device_seconds: float, file_seconds: float) -> None:
        figures = {"bytes": size, "device_ms": round(device_seconds * 1000), "file_ms": round(file_seconds * 1000)}
        self._facts.remember(self._key, what, figures)

    def offer_context(self, path: Path, messages: Sequence[Message]) -> None:
        self._offered = (path, list(messages))

    def _saved_start(self, messages: list[Message]) -> tuple[Path, list[Message], str | None] | None:
        """The kept context to start the empty one from: the resumed chat's, else the system
        prompt's (kept for this HEF), where the device's figures say loading it beats reading what
        it holds (this runs between Enter and the first token). As (file, the messages it holds,
        their rendered text where the messages alone do not settle it); None: read them all."""
        offered, self._offered = self._offered, None
        if not self._text_path_ok or self._template is None:  # text prompts need the check passed
            if offered is not None:
                logger.info("not loading {}: {} has not passed the self-check", offered[0], self.model_name)
            return None
        if not self._figures().measured:
            if offered is not None:
                logger.info("not loading {}: the device's load and prefill times are not measured yet", offered[0])
            return None
        if offered is not None and self._load_pays(offered[1], None):
            return offered[0], offered[1], None
        if self.context_cache is None or len(messages) < 2 or messages[0]["role"] != "system":
            return None
        system = messages[:1]
        # The text, not only the message: Llama 3.x puts today's date in it (strftime_now), so a
        # context kept on another day is made again, as HailoRT would render it today.
        rendered = self._system_text(system)
        if not self._load_pays(system, rendered):
            return None
        path = self._system_context_path(self.context_cache, system)
        if not path.exists():  # kept as the model is released (keep_system_prompt_context)
            self._system_to_keep = system
            return None
        return path, system, rendered

    def _load(
        self, llm: Any, path: Path, held: list[Message], messages: list[Message], rendered: str | None = None
    ) -> bool:
        """Load the context in `path` if it holds `held` (rendered as `rendered`, if given), which
        `messages` go on from; the log says why not."""
        why: str | None = "the chat changed since it was saved"
        data: bytes | memoryview = b""
        started = loaded = time.monotonic()
        if len(messages) > len(held) and messages[: len(held)] == held:
            try:
                if not memory_allows(path.stat().st_size if path.exists() else 0, "loading"):
                    raise ContextFileError("too little memory available")
                tags, data = read_context(path)
                why = tags_differ(tags, self._tags(held, rendered))
            except ContextFileError as error:
                why = str(error)
        if why is None:
            try:
                read = time.monotonic()
                llm.load_context(data)  # pyhailort.py `LLM.load_context`: list(data), GIL held
                loaded = time.monotonic()
            except Exception as error:
                why = f"HailoRT refused it ({error or type(error).__name__})"
                self._clear_context(llm)  # whatever a failed load left behind
        if why is not None:
            logger.info("not loading {} (the model reads the messages instead): {}", path, why)
            return False
        self._held = list(held)
        self._saved = (path, messages_digest(held))
        self._remember_figures("load", len(data), loaded - read, read - started)
        logger.info(
            "loaded the device context of {} messages from {}: {} bytes, {:.0f} ms to read, {:.0f} ms to the device",
            len(held),
            path,
            len(data),
            (read - started) * 1000,
            (loaded - read) * 1000,
        )
        return True

    def _load_pays(self, held: list[Message], rendered: str | None) -> bool:
        """Whether loading a context of `held` (as `rendered`) beats prefilling it; the log says why not."""
        text = rendered if rendered is not None else self._prompt_text(held, continuing=False)
        tokens = len(self._model.tokenize(text))
        if self._keeping_pays(tokens):
            return True
        logger.info("reading {} tokens again instead of loading their context: {}", tokens, self._figures().summary())
        return False

    def _system_text(self, system: list[Message]) -> str:
        assert self._template is not None
        return self._template.render(system, add_generation_prompt=False)

    def _system_context_path(self, cache: Path, system: list[Message]) -> Path:
        key = hashlib.sha256(f"{hef_identity(self.hef_path)}\n{messages_digest(system)}".encode()).hexdigest()
        return cache / f"{self.model_name}-{key[:16]}.ctx"

    def _keep_system_prompt_context(self, llm: Any) -> None:
        """As the model is released (its context is lost then anyway): read the system prompt
        used alone, a prefill (max_generated_tokens=0: llm_server.cpp `handle_generation_completion`
        adds no token and no recovery sequence), and keep its context for the next new chat."""
        system, self._system_to_keep = self._system_to_keep, None
        if system is None or self.context_cache is None or self._template is None or not self.keeping.keep_chats:
            return
        prefix = self._system_text(system)  # _load_pays said a load of it pays, or it was not kept
        probe: list[Message] = [{"role": "user", "content": "x"}]
        if prefix + self._template.later(probe) != self._template.first([*system, *probe]):
            logger.info("the chat template does not split after the system prompt: its context is not kept")
            return
        path = self._system_context_path(self.context_cache, system)
        try:
            llm.clear_context()
            with llm.generate(prompt=prefix, max_generated_tokens=0):
                pass
        except Exception:
            logger.exception("reading the system prompt alone, to keep its context in {}, failed", path)
            return
        self._write_context(path, self._tags(system, prefix))

    def clear(self) -> None:
        with self._no_reply_running():
            if self._llm is not None:
                self._clear_context(self._llm)
                self._usage = self._llm.get_context_usage_size()
            self._held = []
            self._offered = None

    def release(self) -> None:
        """clear_context, llm.release, vdevice.release — each tried, in this order, after any reply has stopped."""
        with self._no_reply_running():
            if self._llm is not None:
                self._keep_system_prompt_context(self._llm)
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
