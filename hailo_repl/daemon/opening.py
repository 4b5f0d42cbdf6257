"""The engine process's `open_engine` (daemon.server): a chat/open's request made into a
LocalEngine, not loaded yet (the server loads it), as the command line makes one in process.

The client has settled everything that needs the user (the model picker, a download:
backends.resolve_choice), so nothing here asks anyone. The Hailo-10H is claimed in the user's
lock file first (instance_lock), as an in-process chat claims it, so a `daemon: never` chat in
another terminal waits for the engine instead of failing to open the device.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hailo_repl.backends import BackendChoice, open_backend
from hailo_repl.backends.base import GenerationParams
from hailo_repl.chat import Chat
from hailo_repl.config import device_contexts_dir, instance_lock_file, sessions_dir
from hailo_repl.daemon.protocol import OpenRequest
from hailo_repl.engine.local import LocalEngine
from hailo_repl.instance_lock import HAILO, InstanceLock
from hailo_repl.log import logger
from hailo_repl.sessions import SessionStore
from hailo_repl.settings import GENERATION_SETTINGS, SETTINGS

if TYPE_CHECKING:
    from hailo_repl.backends.hailo_keeping import KeepingPolicy

_lock: InstanceLock | None = None  # this process's entry in the user's lock file, while it holds the Hailo


def open_local_engine(request: OpenRequest) -> LocalEngine:
    """The chat `request` asks for, on its backend and model (BackendError / ModelNotFoundError
    with the line to show)."""
    global _lock
    history = request.history
    choice = BackendChoice(
        backend=request.backend,
        hef_path=request.hef_path,
        gguf_path=Path(request.gguf_path) if request.gguf_path else None,
        model_name=request.model_name,
        url=request.url,
        api_key=request.api_key,
        context_size=request.context_size,
        environ=dict(request.environ),
        context_cache=device_contexts_dir() if history else None,  # --no-history: nothing on disk
    )

    def keeping() -> KeepingPolicy:  # (asked only as the Hailo backend opens)
        from hailo_repl.backends.hailo_keeping import keeping_policy

        settings = {name: request.settings.get(name, SETTINGS[name].default) for name in SETTINGS}
        return keeping_policy(settings, request.interactive, sessions_dir(), device_contexts_dir())

    choice.keeping = keeping

    def claim_hailo() -> None:
        global _lock
        if _lock is None:
            _lock = InstanceLock(instance_lock_file())
        _lock.take(HAILO, say=lambda line: logger.info("engine: {}", line), register=history)

    backend = open_backend(
        choice,
        notify=lambda line: logger.info("engine: {}", line),
        choose_model=None,
        download=_no_download,
        claim_hailo=claim_hailo,
    )
    if backend.name != HAILO and _lock is not None:
        _lock.release()
    values = {setting.attribute: request.params.get(setting.name, setting.default) for setting in GENERATION_SETTINGS}
    params = GenerationParams(**values)
    store = SessionStore(sessions_dir(), writable=history)
    return LocalEngine(Chat(backend, request.system_prompt or SETTINGS["system-prompt"].default, params, store))


def release_device_claim() -> None:
    """The model is released (the engine ends): the Hailo-10H is free for another process."""
    global _lock
    if _lock is not None:
        _lock.release()
        _lock = None


def _no_download(name: str, directory: Path) -> Path:
    """The client downloads before it opens the chat; here a model not found is an error."""
    from hailo_repl.models import ModelNotFoundError

    raise ModelNotFoundError(f"{name} is not downloaded; `hailo-repl --hef-path {name}` downloads it first")
