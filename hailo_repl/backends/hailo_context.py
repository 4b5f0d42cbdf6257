"""The Hailo device's context kept in a file: its tags and the file format.

HailoRT saves the device's context as bytes (hailo-ai/hailort v5.2.0, pyhailort.py
`LLM.save_context`/`load_context`; hailort_server/genai/llm/llm_server.cpp
`LLMServer::get_context`): the KV cache, the token history and the next prompt's prefix,
behind a header with the HEF's hash and the HailoRT version. Its own check on a load
(context_structure.hpp `LLMContextUtils::validate_header`) compares the HEF's hash but
not the HailoRT version, and nothing there says which conversation the context holds.
So a file here starts with tags of its own: the HEF, the HailoRT version and a digest
of the messages; a load happens only when all three match.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from hailo_repl.private_files import FileTooLarge, read_bytes_limited, write_bytes_atomically

MAGIC = b"hailo-repl device context 1\n"
# A KV cache of a few thousand tokens of a 1.5B model is tens of MB: more is not a context.
CONTEXT_FILE_LIMIT = 1 << 30


@dataclass(frozen=True)
class ContextTags:
    hef: str  # the HEF's identity (hef_identity)
    hailort: str  # the HailoRT version that saved the context
    messages: str  # messages_digest of the conversation the context holds


class ContextFileError(Exception):
    """A context file that cannot be used; the message says why, for the log."""


def hef_identity(hef_path: Path) -> str:
    """The HEF as its path, size and modification time: hashing a 1-2 GB file at every start
    would take seconds on a Pi, and the device checks the HEF's own hash on a load anyway."""
    try:
        status = hef_path.stat()
    except OSError:
        return f"{hef_path} (unreadable)"
    return f"{hef_path.resolve()}:{status.st_size}:{status.st_mtime_ns}"


def messages_digest(messages: Sequence[Mapping[str, object]]) -> str:
    roles_and_texts = [[m["role"], m["content"]] for m in messages]
    return hashlib.sha256(json.dumps(roles_and_texts, ensure_ascii=False).encode()).hexdigest()


def write_context(path: Path, tags: ContextTags, data: bytes) -> None:
    """The tags, then HailoRT's bytes, written whole (0600); OSError on failure, and
    FileTooLarge for a file `read_context` would refuse (it is not written)."""
    head = MAGIC + json.dumps(asdict(tags)).encode() + b"\n"
    if len(head) + len(data) > CONTEXT_FILE_LIMIT:
        raise FileTooLarge(f"{path} would be larger than {CONTEXT_FILE_LIMIT >> 20} MiB, more than hailo-repl reads")
    write_bytes_atomically(path, head, data)  # not joined: that would copy the whole context once more


def read_context(path: Path) -> tuple[ContextTags, memoryview]:
    """A context file's tags and HailoRT's bytes, a view into the file's one copy in memory (a
    context is tens to hundreds of MB: no slice copies it); ContextFileError when there is none to use."""
    try:
        raw = read_bytes_limited(path, CONTEXT_FILE_LIMIT)
    except FileNotFoundError:
        raise ContextFileError(f"no saved device context ({path.name})") from None
    except (OSError, FileTooLarge) as error:
        raise ContextFileError(f"cannot read {path}: {error}") from None
    end = raw.find(b"\n", len(MAGIC))
    try:
        if not raw.startswith(MAGIC) or end < 0:
            raise ValueError("not a hailo-repl context file")
        tags = json.loads(raw[len(MAGIC) : end])
        return ContextTags(**{f.name: str(tags[f.name]) for f in fields(ContextTags)}), memoryview(raw)[end + 1 :]
    except (ValueError, KeyError, TypeError) as error:
        raise ContextFileError(f"{path} is damaged ({error})") from None


def tags_differ(saved: ContextTags, wanted: ContextTags) -> str | None:
    """Which tag of a saved context differs from what is wanted, in words for the log; None if none."""
    if saved.hef != wanted.hef:
        return f"it was saved with another HEF ({saved.hef})"
    if saved.hailort != wanted.hailort:
        return f"it was saved by HailoRT {saved.hailort}, this is {wanted.hailort}"
    if saved.messages != wanted.messages:
        return "it holds other messages than the chat has now"
    return None
