"""The OpenAI protocol (`/v1/chat/completions`, server-sent events): llama.cpp's servers,
vLLM, and OpenAI itself.

Usage counts are asked for (`stream_options.include_usage`, which OpenAI, vLLM and
llama.cpp's server honour); llama-cpp-python's server sends none, so there the context
gauge is an estimate. vLLM's `/v1/models` gives each model's `max_model_len`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hailo_repl.backends.base import BackendError, GenerationParams, Message
from hailo_repl.backends.remote import Chunk, RemoteBackend, server_error_text, token_count

SSE_DATA = "data:"
SSE_END = "[DONE]"


class OpenAIBackend(RemoteBackend):
    name = "openai"
    chat_path = "chat/completions"  # under the API base, which ends in /v1
    url_hint = "--url (or OPENAI_BASE_URL) is the API base, such as http://127.0.0.1:8000/v1"
    key_hint = "--api-key, or OPENAI_API_KEY with OPENAI_BASE_URL"

    def request_body(self, messages: Sequence[Message], params: GenerationParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": list(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
        }
        if params.top_p is not None:
            body["top_p"] = params.top_p
        return body

    def parse_line(self, line: str) -> Chunk | None:
        if not line.startswith(SSE_DATA):
            return None  # blank separators, comments (": ping"), event names
        payload = line[len(SSE_DATA) :].strip()
        if payload == SSE_END:
            return Chunk(done=True)
        data = self.json_object(payload)
        if "error" in data:
            raise BackendError(f"{self.endpoint.url} stopped the reply: {server_error_text(data)}")
        chunk = Chunk()
        choices = data.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            delta = choices[0].get("delta")
            text = delta.get("content") if isinstance(delta, dict) else None
            chunk.text = text if isinstance(text, str) else ""
            chunk.done = choices[0].get("finish_reason") is not None
        usage = data.get("usage")
        if isinstance(usage, dict):
            chunk.prompt_tokens = token_count(usage.get("prompt_tokens"))
            chunk.reply_tokens = token_count(usage.get("completion_tokens"))
        return chunk

    def _models(self) -> list[dict[str, Any]]:
        return [m for m in self.get_json("GET", "models").get("data") or [] if isinstance(m, dict)]

    def list_models(self) -> list[str]:
        return sorted(m["id"] for m in self._models() if isinstance(m.get("id"), str))

    def server_context_size(self) -> int | None:
        for model in self._models():
            if model.get("id") == self.model_name:
                return token_count(model.get("max_model_len")) or None
        return None
