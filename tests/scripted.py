"""The one scripted backend for tests: it follows the backend protocol and replies from a script."""

from __future__ import annotations

import threading
import time


class ScriptedBackend:
    """Each reply is a list of pieces (an Exception among them is raised there); when the
    script runs out, `default` is the reply. Records what it was sent."""

    name = "llama"
    model_name = "scripted-model"
    last_prompt_tokens = 3
    loads_in_background = True
    context_is_estimate = False

    def __init__(self, *replies, default=("ok",), delay=0.0, capacity=4096):
        self.replies = list(replies)
        self.default = list(default)
        self.delay = delay
        self.context_capacity = capacity
        self.prompts = []  # the contents of the messages of each stream() call
        self.loaded = threading.Event()
        self.produced = 0  # pieces yielded, over all replies
        self.cleared = 0

    def load(self):
        self.loaded.set()

    @property
    def context_used(self):
        return 100 * len(self.prompts)

    def stream(self, messages, params, cancel):
        self.prompts.append([m["content"] for m in messages])
        reply = self.replies.pop(0) if self.replies else self.default
        for piece in reply:
            if isinstance(piece, Exception):
                raise piece
            if cancel.is_set():
                return
            time.sleep(self.delay)
            self.produced += 1
            yield piece

    def count_tokens(self, messages):
        return sum(len(m["content"].split()) for m in messages)

    def clear(self):
        self.cleared += 1

    def release(self):
        pass
