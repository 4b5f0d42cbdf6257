"""The conversation as the Hailo device's context holds it, and the prompt that brings it up to date.

Every generate() appends its templated prompt and its reply to the device's KV cache (hailo-ai/hailort
v5.2.0, pyhailort.py `LLM.generate` docstring), and the template handler renders a context's first
prompt whole but a later one after a probe, less what the probe renders alone; system messages are
refused after the first (minja_wrapper.cpp `render`, `m_is_first`: set by LLM() and llm.cpp
`LLM::Impl::clear_context` only, unset by the first templated prompt). So the backend remembers what
the device holds, its own replies included by content, and sends only the messages after that;
when the conversation no longer starts with it, the context is cleared and the whole goes once.
"""

from __future__ import annotations

from collections.abc import Sequence

from hailo_repl.backends.base import Message
from hailo_repl.backends.chat_template import ChatTemplate
from hailo_repl.backends.hailo_device import compile_template, render_chatml


class DeviceConversation:
    def __init__(self) -> None:
        # The conversation the device's context holds, its own last reply included;
        # None when unknown (a failed or aborted generation): the next turn then starts afresh.
        self.held: list[Message] | None = []
        # minja_wrapper.cpp's m_is_first: the next templated prompt would be rendered as a
        # context's first. Reset by clear_context() only, unset by a templated prompt.
        self.template_first = True
        self._template_source: str | None = None  # LLM.prompt_template(), read as the model loads
        self._compiled: tuple[ChatTemplate | None] | None = None  # compiled on first use (jinja2 loads then)

    def model_loaded(self, template_source: str | None) -> None:
        """A model was loaded, with this chat template (None: unknown, ChatML is assumed)."""
        self._template_source, self._compiled = template_source, None
        self.cleared()

    def cleared(self) -> None:
        """The device's context was cleared: it holds nothing, and the next prompt is a first."""
        self.held = []
        self.template_first = True

    @property
    def template(self) -> ChatTemplate | None:
        """The HEF's chat template, compiled when first needed: not before the first prompt."""
        if self._compiled is None:
            self._compiled = (compile_template(self._template_source),)
        return self._compiled[0]

    def unsent(self, messages: Sequence[Message]) -> list[Message] | None:
        """What the device lacks of `messages`, or None if its context must start afresh."""
        held = self.held
        if held is None or len(messages) <= len(held) or list(messages[: len(held)]) != held:
            return None
        new = list(messages[len(held) :])
        if held and any(m["role"] == "system" for m in new):
            return None  # a system message is refused after a context's first prompt
        return new

    def prompt_text(self, messages: Sequence[Message], continuing: bool) -> str:
        """`messages` as the device templates them: the first prompt of a context whole; a
        later one rendered after the probe, less what the probe renders alone (minja_wrapper.cpp)."""
        if self.template is None:
            return render_chatml(messages)  # an estimate: ChatML has no text of its own to cut
        return self.template.later(messages) if continuing else self.template.first(messages)
