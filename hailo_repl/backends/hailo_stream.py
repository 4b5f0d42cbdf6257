"""Reading a reply from the Hailo-10H: tokens in short polls, a stall told and given up on, the
recovery sequence kept out, and the moment to abort (hailo-ai/hailort v5.2.0)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hailo_repl.backends.base import BackendError, GenerationParams, Notice
from hailo_repl.log import logger

POLL_MS = 5  # longest a read() may hold the GIL (see TokenReader.read)
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


def generation_options(params: GenerationParams) -> dict[str, Any]:
    """LLM.generate's keywords. temperature <= 0 is an invalid argument there (llm.cpp
    `LLM::Impl::validate_generator_params`): greedy decoding is do_sample=False."""
    options: dict[str, Any] = {"max_generated_tokens": params.max_tokens}
    if params.temperature > 0:
        options.update(temperature=params.temperature, do_sample=True)
    else:
        options.update(do_sample=False)
    if params.top_p is not None:
        options["top_p"] = params.top_p
    return options


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


@dataclass
class TokenReader:
    """How a generation's tokens are read: HailoRT's exceptions (known once hailo_platform is
    imported), its recovery sequence, and how long a silent device is waited for."""

    timeout_error: type[Exception] = TimeoutError  # HailoRTTimeout
    thread_ended_error: type[Exception] = EOFError  # HailoRTInvalidOperationException: the token thread ended
    recovery_sequence: str = ""
    stall_notice_seconds: float = STALL_NOTICE_SECONDS
    stall_give_up_seconds: float = STALL_GIVE_UP_SECONDS

    def read(self, generation: Any, cancel: threading.Event, pace: TokenPace) -> Iterator[str]:
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
        recovery = RecoveryFilter(self.recovery_sequence)
        while generation.generation_status.name == "GENERATING":
            try:
                token = generation.read(POLL_MS)
            except self.timeout_error:
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
            except self.thread_ended_error:
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
