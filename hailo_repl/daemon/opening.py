"""Opening a chat in the engine process: the backend, the Chat and the LocalEngine a chat/open
asks for, as the command line opens them in one process (cli_chat.run_chat). The client has
settled everything that needs the user first (the model picker, a download, the HEF's path), so
nothing here asks anything; the model is not loaded yet (the server loads it).

The Hailo-10H is claimed in the user's lock file before it is opened (instance_lock), as an
in-process chat claims it, so a `daemon: never` chat in another terminal waits for the engine
(and the doctor names it) instead of failing to open the device."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hailo_repl.backends import BackendChoice, open_backend
from hailo_repl.backends.base import BackendError, GenerationParams
from hailo_repl.chat import Chat
from hailo_repl.config import device_contexts_dir, instance_lock_file, sessions_dir
from hailo_repl.daemon.protocol import OpenRequest, open_request_from_wire, record_to_wire
from hailo_repl.engine.local import LocalEngine
from hailo_repl.instance_lock import HAILO, InstanceLock
from hailo_repl.sessions import SessionStore
from hailo_repl.settings import GENERATION_SETTINGS

if TYPE_CHECKING:
    from hailo_repl.backends.base import Backend
    from hailo_repl.backends.hailo_keeping import KeepingPolicy


def open_local_engine(request: OpenRequest, say: Callable[[str], None]) -> LocalEngine:
    """The chat `request` asks for, over the backend it names (BackendError, ModelNotFoundError
    with the line to show); `say` gets the lines about the choice ("no Hailo device; using …",
    whom the Hailo-10H waits for)."""
    backend = open_backend(
        choice_of(request), notify=say, choose_model=None, download=_no_download, claim_hailo=_claim_hailo(request, say)
    )
    if backend.name != HAILO:
        release_device_claim()
    params = GenerationParams(
        **{
            setting.attribute: request.params[setting.name]
            for setting in GENERATION_SETTINGS
            if setting.name in request.params
        }
    )
    store = SessionStore(sessions_dir(), writable=request.history)
    return LocalEngine(Chat(backend, request.system_prompt, params, store))


_claim: InstanceLock | None = None  # this process's entry in the user's lock file, while it holds the Hailo


def _claim_hailo(request: OpenRequest, say: Callable[[str], None]) -> Callable[[], None]:
    def claim() -> None:
        global _claim
        if _claim is None:
            _claim = InstanceLock(instance_lock_file())
        _claim.take(HAILO, say=say, register=request.history)

    return claim


def release_device_claim() -> None:
    """The model is released (the engine ends, or opens another backend): the Hailo-10H is free."""
    global _claim
    if _claim is not None:
        _claim.release()
        _claim = None


def keeping_of(request: OpenRequest) -> KeepingPolicy:
    """Which device contexts `request`'s chat keeps (none with history off), within what budget."""
    from hailo_repl.backends.hailo_keeping import keeping_policy

    settings = {**request.settings, "history": request.history}
    return keeping_policy(settings, request.interactive, sessions_dir(), device_contexts_dir())


def choice_of(request: OpenRequest) -> BackendChoice:
    """The BackendChoice the client made, with what only this process knows: where device
    contexts are kept and the keeping policy (none of it with history off)."""
    return BackendChoice(
        backend=request.backend,
        hef_path=request.hef_path,
        gguf_path=Path(request.gguf_path) if request.gguf_path else None,
        model_name=request.model_name,
        url=request.url,
        api_key=request.api_key,
        context_size=request.context_size,
        environ={**os.environ, **request.environ},  # the client's OLLAMA_HOST, OPENAI_* win
        context_cache=device_contexts_dir() if request.history else None,
        keeping=(lambda: keeping_of(request)) if request.settings else None,
    )


def asking_for(request: OpenRequest, backend: Backend) -> OpenRequest | None:
    """`request` as a terminal asking for `backend`'s model would send it (after /model switched
    the engine to it): the next terminal asking for that model goes on with it loaded, and one
    asking for the model before gets that one. None where that cannot be told: any next open
    then opens its model again."""
    fields = record_to_wire(request)
    # (each class imported where the backend is one of its: importing the others costs the engine)
    if backend.name == "hailo":
        from hailo_repl.backends.hailo import HailoBackend

        if not isinstance(backend, HailoBackend):
            return None
        fields["hef_path"] = str(backend.hef_path.absolute())
    elif backend.name == "llama":
        from hailo_repl.backends.llama import LlamaBackend
        from hailo_repl.models import BUNDLED_MODEL_NAME

        if not isinstance(backend, LlamaBackend):
            return None
        bundled = backend.model_name == BUNDLED_MODEL_NAME  # (a terminal asks for it by no path)
        fields["gguf_path"] = None if bundled else str(backend.model_path.absolute())
    else:
        from hailo_repl.backends.remote import RemoteBackend

        if not isinstance(backend, RemoteBackend):
            return None
        fields["model_name"] = backend.model_name
    return open_request_from_wire(fields)


def _no_download(name: str, directory: Path) -> Path:
    raise BackendError(f"{name} is not downloaded; the engine process cannot download it (the client does first)")
