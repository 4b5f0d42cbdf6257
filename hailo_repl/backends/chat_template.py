"""A HEF's chat template rendered byte for byte as HailoRT renders it: with google/minja.

HailoRT renders a message-list prompt itself (hailo-ai/hailort v5.2.0,
hailort/libhailort/src/genai/llm/minja_wrapper/minja_wrapper.cpp, `PromptTemplateHandler`,
with google/minja at commit 5856862, hailort/cmake/external/minja.cmake). After a loaded
context hailo-repl sends prompts as text it renders here, so this must produce the same
bytes: a different render fails silently (the model just reads other text). The hailo
backend and the hailo_platform double (tests/fakes) both render with this module.

What minja does that a default Jinja2 environment does not (google/minja at that commit:
include/minja/chat-template.hpp `chat_template::chat_template` and `chat_template::apply`,
include/minja/minja.hpp `Context::builtins` and `Parser::parseTemplate`):
- the template is parsed with trim_blocks, lstrip_blocks and keep_trailing_newline off, and
  minja's lstrip also takes a line's indentation before `{{ … }}` (Jinja2's only before
  `{% … %}` and `{# … #}`): `minja_source` makes Jinja2 see that;
- bos_token and eos_token are empty: minja_wrapper.cpp constructs `m_templ(prompt_template, "", "")`;
- strftime_now(format) gives the local time now (Llama 3.x puts today's date in its system
  block); raise_exception(message) fails the render;
- trim and str.strip/lstrip/rstrip strip only " \\t\\n\\r"; tojson keeps key order and escapes
  nothing;
- the polyfills: a template that drops system messages gets them folded into the next user
  message, one that renders only typed content gets [{"type": "text", "text": …}]. minja's
  other polyfills need tools, tool calls or tool messages, which hailo-repl never sends.
- `{% generation %}` blocks render their body (removed here, as minja's
  scripts/fetch_templates_and_goldens.py does for Jinja2).

jinja2 is imported when a template is first compiled, not when hailo-repl starts.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

MINJA_SPACES = " \t\n\r"  # minja.hpp `strip`: what trim and str.strip remove
# minja_wrapper.cpp `empty_role`: rendered alone once (what the template adds by itself, e.g.
# Qwen's default system prompt) and cut off the front of every later prompt of a context.
PROBE = {"role": "TMP", "content": "TMP"}
_USER_NEEDLE = "<User Needle>"  # chat_template's capability probes
_SYSTEM_NEEDLE = "<System Needle>"

Messages = Sequence[Mapping[str, Any]]


class TemplateError(Exception):
    """The template does not compile or does not render; the message says why."""


def _minja_strip(text: str, chars: str | None = None, left: bool = True, right: bool = True) -> str:
    charset = chars or MINJA_SPACES
    if left:
        text = text.lstrip(charset)
    return text.rstrip(charset) if right else text


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(format: str) -> str:
    return time.strftime(format, time.localtime())


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def minja_source(source: str) -> str:
    """The template as Jinja2 must read it to strip the whitespace minja strips: a line's
    indentation before `{{` goes (minja.hpp `Parser::parseTemplate`: lstrip_blocks applies to
    the text before any tag), and `{% generation %}` markers go."""
    import jinja2

    source = source.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    # Jinja2's own lexer finds the tags (not a `{{` inside a string or a comment); the text it
    # drops (whitespace a `-` strips) would be dropped by the compile anyway.
    tokens = list(jinja2.Environment(keep_trailing_newline=True).lexer.tokeniter(source, None))
    pieces = []
    for index, (_, kind, value) in enumerate(tokens):
        before_expression = index + 1 < len(tokens) and tokens[index + 1][1:] == ("variable_begin", "{{")
        if kind == "data" and before_expression:
            kept = value.rstrip(" \t")
            if kept.endswith("\n") or (not kept and index == 0):
                value = kept
        pieces.append(value)
    return "".join(pieces)


class ChatTemplate:
    """One chat template, compiled once; render() as minja's chat_template::apply() with its
    default options, first()/later() as HailoRT renders a context's first and later prompts."""

    def __init__(self, source: str):
        import jinja2.ext
        import jinja2.sandbox

        class MinjaEnvironment(jinja2.sandbox.SandboxedEnvironment):
            def getattr(self, obj: Any, attribute: str) -> Any:
                if isinstance(obj, str) and attribute in ("strip", "lstrip", "rstrip"):
                    sides = {"strip": (True, True), "lstrip": (True, False), "rstrip": (False, True)}[attribute]
                    return lambda chars=None: _minja_strip(obj, chars, *sides)
                return super().getattr(obj, attribute)

        environment = MinjaEnvironment(
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            extensions=[jinja2.ext.loopcontrols],
        )
        environment.filters["trim"] = lambda text: text if text is None else _minja_strip(str(text))
        environment.filters["tojson"] = _tojson
        environment.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
        try:
            self._template = environment.from_string(minja_source(source))
        except jinja2.TemplateError as error:
            raise TemplateError(f"the chat template does not compile: {error}") from None
        self._jinja_error: type[Exception] = jinja2.TemplateError
        # chat_template's constructor: what the template does with a system message and with
        # plain string contents (rendered without polyfills).
        self.requires_typed_content = _USER_NEEDLE not in self._try_raw(
            [{"role": "user", "content": _USER_NEEDLE}]
        ) and _USER_NEEDLE in self._try_raw([{"role": "user", "content": [{"type": "text", "text": _USER_NEEDLE}]}])
        user = (
            {"role": "user", "content": [{"type": "text", "text": _USER_NEEDLE}]}
            if self.requires_typed_content
            else {"role": "user", "content": _USER_NEEDLE}
        )
        system_content: Any = (
            [{"type": "text", "text": _SYSTEM_NEEDLE}] if self.requires_typed_content else _SYSTEM_NEEDLE
        )
        system = {"role": "system", "content": system_content}
        self.supports_system_role = _SYSTEM_NEEDLE in self._try_raw([system, user])

    @functools.cached_property
    def probe(self) -> str:
        """minja_wrapper.cpp `Impl::Impl`: m_system_prompt, rendered once as the LLM is made (a
        template that cannot render it makes HailoRT's template handler fail: TemplateError)."""
        return self.render([PROBE], add_generation_prompt=False)

    def _raw(self, messages: Messages, add_generation_prompt: bool) -> str:
        try:
            return self._template.render(
                messages=[dict(m) for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token="",
                eos_token="",
            )
        except (self._jinja_error, TemplateError, TypeError, ValueError, KeyError, IndexError) as error:
            raise TemplateError(f"the chat template does not render: {error}") from None

    def _try_raw(self, messages: Messages) -> str:
        """chat_template::try_raw_render: no polyfills, "" on any failure."""
        try:
            return self._raw(messages, False)
        except TemplateError:
            return ""

    def render(self, messages: Messages, add_generation_prompt: bool = True) -> str:
        """`messages` as minja's chat_template::apply renders them (its default options)."""
        return self._raw(self._polyfilled(messages), add_generation_prompt)

    def _polyfilled(self, messages: Messages) -> list[dict[str, Any]]:
        """chat_template::apply's system-role and typed-content polyfills."""
        fold_system = not self.supports_system_role
        typed = self.requires_typed_content and any(isinstance(m.get("content"), str) for m in messages)
        if not fold_system and not typed:
            return [dict(m) for m in messages]
        result: list[dict[str, Any]] = []

        def add(message: dict[str, Any]) -> None:
            content = message.get("content")
            if typed and isinstance(content, str):
                message = {"role": message["role"], "content": [{"type": "text", "text": content}]}
            result.append(message)

        pending = ""
        for original in messages:
            message = dict(original)
            content = message.get("content")
            if fold_system and content is not None:
                if message["role"] == "system":
                    pending = f"{pending}\n{content}" if pending else str(content)
                    continue
                if message["role"] == "user" and pending:
                    message["content"] = pending + (f"\n{content}" if content else "")
                    pending = ""
                elif message["role"] != "user" and pending:
                    add({"role": "user", "content": pending})
                    pending = ""
            add(message)
        if pending:
            add({"role": "user", "content": pending})
        return result

    def first(self, messages: Messages) -> str:
        """A context's first prompt, as minja_wrapper.cpp `Impl::render` renders it (m_is_first)."""
        return self.render(messages, True)

    def later(self, messages: Messages) -> str:
        """A later prompt of the context: rendered after the probe message, then the probe's own
        rendering cut off the front (minja_wrapper.cpp `Impl::render`, counted in bytes there)."""
        whole = self.render([PROBE, *messages], True).encode()
        return whole[len(self.probe.encode()) :].decode(errors="replace")
