"""Ollama's protocol (`/api/chat`, one JSON object a line): Ollama, and Hailo's hailo-ollama.

hailo-ollama (hailo-ai/hailo_model_zoo_genai) differs from Ollama in ways this file allows
for: its last line carries only `done`, `done_reason`, `total_duration` and `eval_count`
(src/library/controller/llm_generation_callback.cpp, `read`), so the prompt's size is an
estimate there; `/api/show` gives `model_info` as an empty string (controller.cpp, `show`);
a failure such as an unknown model comes back as HTTP 200 with `{"error": …}`;
`keep_alive` must be an integer (src/library/dto/DTOs.hpp, `ChatParams`), so none is sent
and both servers keep their five-minute default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hailo_repl.backends.base import BackendError, GenerationParams, Message
from hailo_repl.backends.remote import Chunk, RemoteBackend, server_error_text, token_count


class OllamaBackend(RemoteBackend):
    name = "ollama"
    chat_path = "/api/chat"
    url_hint = "--url (or OLLAMA_HOST) is the server's root, such as http://127.0.0.1:11434"

    def request_body(self, messages: Sequence[Message], params: GenerationParams) -> dict[str, Any]:
        options: dict[str, Any] = {"temperature": params.temperature, "num_predict": params.max_tokens}
        if params.top_p is not None:
            options["top_p"] = params.top_p
        return {"model": self.model_name, "messages": list(messages), "stream": True, "options": options}

    def parse_line(self, line: str) -> Chunk | None:
        if not line.strip():
            return None
        data = self.json_object(line)
        if "error" in data:
            raise BackendError(f"{self.endpoint.url} stopped the reply: {server_error_text(data)}")
        message = data.get("message")
        text = message.get("content") if isinstance(message, dict) else None
        chunk = Chunk(text if isinstance(text, str) else "")
        if data.get("done"):
            chunk.done = True
            chunk.prompt_tokens = token_count(data.get("prompt_eval_count"))
            chunk.reply_tokens = token_count(data.get("eval_count"))
        return chunk

    def list_models(self) -> list[str]:
        models = self.get_json("GET", "/api/tags").get("models")
        names = [m.get("name") or m.get("model") for m in models or [] if isinstance(m, dict)]
        return sorted(name for name in names if isinstance(name, str))

    def server_context_size(self) -> int | None:
        """`<architecture>.context_length` from /api/show's model_info, where it is there."""
        info = self.get_json("POST", "/api/show", {"model": self.model_name}).get("model_info")
        if not isinstance(info, dict):
            return None
        return token_count(info.get(f"{info.get('general.architecture')}.context_length")) or None
