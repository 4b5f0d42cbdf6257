"""The bottom toolbar: model, backend, context gauge and speed, as formatted-text tuples."""

from __future__ import annotations

from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.key_binding.vi_state import InputMode
from prompt_toolkit.styles import Style

from hailo_repl.context import ContextUsage
from hailo_repl.engine.api import ModelState
from hailo_repl.pane import ReplyProgress

__all__ = ["STYLE", "ModelState", "ToolbarState", "toolbar_fragments"]

BACKEND_LABELS = {
    "hailo": "Hailo-10H",
    "llama": "llama.cpp CPU",
    "ollama": "Ollama",
    "hailo-ollama": "hailo-ollama",
    "openai": "OpenAI API",
}

STYLE = Style.from_dict(
    {
        "bottom-toolbar": "noreverse bg:#262626 #d0d0d0",
        "toolbar.ctx.ok": "bg:#262626 #5fd75f bold",
        "toolbar.ctx.warn": "bg:#262626 #ffd75f bold",
        "toolbar.ctx.full": "bg:#262626 #ff5f5f bold",
        "toolbar.status": "bg:#262626 #87afff",
        "toolbar.vi": "bg:#262626 #d7afff bold",
        "toolbar.reply": "bg:#262626 #87afff",
        "prompt": "bold #5fafff",
        "queued": "#808080",
        "notice": "#d0d0d0",
    }
)


class ToolbarState:
    """What the bottom toolbar shows. (Not a dataclass: that took ~0.3 ms of every start.)"""

    def __init__(
        self,
        model: str,
        backend: str,
        status: ModelState,
        usage: ContextUsage | None = None,
        tokens_per_second: float | None = None,
        vi_mode: InputMode | None = None,
        reply: ReplyProgress | None = None,
    ) -> None:
        self.model = model
        self.backend = backend
        self.status = status
        self.usage = usage
        self.tokens_per_second = tokens_per_second
        self.vi_mode = vi_mode  # None: emacs keys
        self.reply = reply  # while a reply streams (or messages wait for it)


VI_MODE_LABELS = {
    InputMode.INSERT: "INSERT",
    InputMode.INSERT_MULTIPLE: "INSERT",
    InputMode.NAVIGATION: "NORMAL",
    InputMode.REPLACE: "REPLACE",
    InputMode.REPLACE_SINGLE: "REPLACE",
}


def toolbar_fragments(state: ToolbarState) -> StyleAndTextTuples:
    parts: StyleAndTextTuples = []
    if state.vi_mode is not None:
        parts += [("class:toolbar.vi", f" {VI_MODE_LABELS[state.vi_mode]} "), ("", "│")]
    parts.append(("", f" {state.model} · {BACKEND_LABELS.get(state.backend, state.backend)} "))
    if state.status is ModelState.LOADING:
        parts.append(("class:toolbar.status", "│ loading model… "))
    elif state.status is ModelState.FAILED:
        parts.append(("class:toolbar.ctx.full", "│ model failed to load "))
    if state.usage is not None and state.status is ModelState.READY:
        parts += [("", "│ "), (f"class:toolbar.ctx.{state.usage.level}", state.usage.short()), ("", " ")]
    if state.reply is not None:
        return parts + reply_fragments(state.reply)
    if state.tokens_per_second:
        parts.append(("", f"│ {state.tokens_per_second:.1f} tok/s "))
    return parts


def reply_fragments(reply: ReplyProgress) -> StyleAndTextTuples:
    """│ 41.2 tok/s │ generating 3s │ 1 queued"""
    parts: StyleAndTextTuples = []
    if reply.tokens_per_second:
        parts.append(("", f"│ {reply.tokens_per_second:.1f} tok/s "))
    doing = "generating" if reply.first_token else "waiting for the first token"
    parts.append(("class:toolbar.reply", f"│ {doing} {reply.seconds:.0f}s "))
    if reply.queued:
        parts.append(("class:toolbar.reply", f"│ {reply.queued} queued "))
    if reply.ends_after:
        parts.append(("class:toolbar.reply", "│ quits after the reply "))
    return parts
