"""The llama.cpp backend (llama-cpp-python): the embedded default when no Hailo device is found.

Why it is built the way it is:
- The chat template is rendered and tokenized here, so the tokens we count are the
  tokens llama.cpp evaluates; llama-cpp-python then reuses the KV cache for the
  longest common prefix, so a later turn only evaluates what is new.
- `verbose=False` makes llama-cpp-python dup2 /dev/null over fds 1 and 2 while the
  model loads, which would swallow a prompt drawn meanwhile; instead llama.cpp's log
  goes to our log file through `llama_log_set`, and the Python-side chatter is
  redirected there too.
- Cancellation: the stream loop checks the cancel event after each token, and
  `llama_set_abort_callback` stops a long prompt evaluation before the first token.
- The reply streams from `Llama.generate` (token ids), each token's text decoded once as it
  comes. `create_completion(stream=True)` (what `create_chat_completion` runs) detokenizes the
  whole reply so far after every token, to look for stop strings: O(n) a token (the 256th
  costs ~0.3 ms more, the 1,024th ~0.8 ms, on the reply's thread: benchmarks/README.md).
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hailo_repl.backends.base import BackendError, GenerationParams, Message, ReplyStream, one_generation_at_a_time
from hailo_repl.log import logger

DEFAULT_CONTEXT_SIZE = 4096

# Used when a GGUF carries no chat template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# ggml_log_level in ggml.h (shipped in the llama-cpp-python wheel as include/ggml.h):
# NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues the previous line).
_GGML_WARN, _GGML_ERROR, _GGML_CONT = 3, 4, 5
_last_level = 0


def _log_llama_warnings(level: int, text: bytes, data: object) -> None:
    """llama.cpp's warnings and errors go to the log file; its ~2,000 info lines a load do not."""
    global _last_level
    if level != _GGML_CONT:
        _last_level = level
    if _last_level == _GGML_WARN:
        logger.warning("llama.cpp: {}", text.decode(errors="replace").rstrip())
    elif _last_level == _GGML_ERROR:
        logger.error("llama.cpp: {}", text.decode(errors="replace").rstrip())


_log_callback = None  # one process-wide thunk: llama.cpp may log after any backend is gone


def _route_llama_log(llama_cpp: Any) -> None:
    import ctypes  # as llama_cpp is, in the load: not before the first prompt

    global _log_callback
    if _log_callback is None:
        _log_callback = llama_cpp.llama_log_callback(_log_llama_warnings)
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


class _LogWriter(io.TextIOBase):
    """A text stream that sends what is written to it to the log file."""

    def write(self, text: str) -> int:
        if text.strip():
            logger.debug("llama-cpp-python: {}", text.rstrip())
        return len(text)


class LlamaBackend:
    name = "llama"
    loads_in_background = True  # llama.cpp releases the GIL while it loads
    context_is_estimate = False

    def __init__(self, model_path: Path, context_size: int = DEFAULT_CONTEXT_SIZE, threads: int | None = None):
        self.model_path = Path(model_path)
        self.model_name = self.model_path.name.removesuffix(".gguf").removesuffix(".Q4_1")
        self.context_size = context_size
        self.threads = threads or os.cpu_count() or 1
        self.last_prompt_tokens = 0
        self._llama: Any = None  # llama_cpp.Llama once loaded
        self._template: Any = None  # the chat template's formatter, ending in the assistant header
        self._busy = threading.Lock()
        self._cancel = threading.Event()  # the running generation's cancel event
        # Kept referenced: llama.cpp holds only the pointers.
        self._abort_callback = None
        self._no_abort_callback = None

    def load(self) -> None:
        import llama_cpp
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        _route_llama_log(llama_cpp)
        try:
            with contextlib.redirect_stderr(_LogWriter()):  # its Python-side prints go to stderr
                llama = Llama(
                    model_path=str(self.model_path),
                    n_ctx=self.context_size,
                    n_threads=self.threads,
                    n_threads_batch=self.threads,
                    verbose=True,  # see the module docstring: False would dup2 over the terminal
                )
        except (ValueError, RuntimeError, OSError) as error:
            raise BackendError(f"Failed to load {self.model_path}: {error}") from None
        llama.verbose = False  # no per-call prints on stderr from here on
        self._llama = llama

        template = llama.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
        eos = self._token_text(llama.token_eos())
        bos = self._token_text(llama.token_bos())
        self._template = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)
        self._abort_callback = llama_cpp.ggml_abort_callback(lambda _data: self._cancel.is_set())
        self._no_abort_callback = llama_cpp.ggml_abort_callback()  # a NULL pointer

    def _abort_on_cancel(self, enabled: bool) -> None:
        """ggml calls the abort callback at every graph node (~1,000 a token), each a
        trip into Python: it is installed for prompt evaluation only; during decoding
        the stream loop checks the cancel event after each token instead."""
        import llama_cpp

        callback = self._abort_callback if enabled else self._no_abort_callback
        llama_cpp.llama_set_abort_callback(self._model.ctx, callback, None)

    @property
    def _model(self) -> Any:
        """The loaded Llama: a BackendError, not an AttributeError on None, before load() or after release()."""
        if self._llama is None:
            raise BackendError(f"{self.model_name} is not loaded")
        return self._llama

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        text: str = self._model.detokenize([token], special=True).decode(errors="replace")
        return text

    def _tokens(self, messages: Sequence[Message]) -> list[int]:
        """The conversation rendered by the model's chat template, up to the reply's start."""
        text = self._template(messages=list(messages)).prompt
        tokens: list[int] = self._model.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return tokens

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self._tokens(messages))

    @property
    def context_used(self) -> int:
        return self._llama.n_tokens if self._llama is not None else 0

    @property
    def context_capacity(self) -> int:
        return self.context_size

    def stream(self, messages: Sequence[Message], params: GenerationParams, cancel: threading.Event) -> ReplyStream:
        with one_generation_at_a_time(self._busy):
            self._cancel = cancel
            self._abort_on_cancel(True)
            try:
                yield from self._generate(messages, params, cancel)
            finally:
                self._abort_on_cancel(False)

    def _generate(self, messages: Sequence[Message], params: GenerationParams, cancel: threading.Event) -> ReplyStream:
        import llama_cpp

        llama = self._model
        prompt = self._tokens(messages)
        cached = self._common_prefix(prompt)
        self.last_prompt_tokens = len(prompt) - cached
        if len(prompt) + params.max_tokens > self.context_size:
            raise BackendError(
                f"the conversation needs {len(prompt)} tokens plus {params.max_tokens} for the reply, "
                f"more than the context of {self.context_size}"
            )
        # What create_completion does with each token, less its stop strings (we have none): the
        # reply ends at an end-of-generation token or max-tokens; a character split across tokens
        # waits for its last byte (one cut off by the end is dropped, as bytes that are not UTF-8
        # are). Sampling as create_completion's defaults (top-k 40, min-p 0.05, no
        # repeat penalty); the seed is llama.cpp's own draw for each reply (LLAMA_DEFAULT_SEED).
        vocab = llama._model.vocab  # (what create_completion itself checks the end against)
        text = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        produced = 0
        try:
            top_p = params.top_p if params.top_p is not None else 0.95
            with contextlib.closing(llama.generate(prompt, temp=params.temperature, top_p=top_p)) as tokens:
                for token in tokens:
                    if not produced:
                        self._abort_on_cancel(False)  # the prompt is evaluated
                    if llama_cpp.llama_vocab_is_eog(vocab, token):
                        break
                    produced += 1
                    piece = text.decode(llama.detokenize([token]))
                    if piece:
                        yield piece
                    if produced >= params.max_tokens or cancel.is_set():
                        break
        except RuntimeError as error:
            if cancel.is_set():
                return  # llama_decode aborted by our callback: a cancel, not a failure
            raise BackendError(f"llama.cpp failed: {error}") from None

    def _common_prefix(self, tokens: list[int]) -> int:
        held = self._model.n_tokens
        cached = self._model.input_ids[:held]
        count = 0
        for a, b in zip(cached, tokens, strict=False):  # the shorter one ends the prefix
            if a != b:
                break
            count += 1
        return count

    def clear(self) -> None:
        if self._llama is not None:
            self._llama.reset()

    def release(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None
