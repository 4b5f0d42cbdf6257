"""Backend choice: `--backend auto|hailo|llama|ollama|hailo-ollama|openai`, model resolution,
and the other models a running chat may switch to (`/model`)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from hailo_repl import models
from hailo_repl.backend_choice import BackendChoice
from hailo_repl.backends.base import Backend, BackendError
from hailo_repl.log import logger
from hailo_repl.servers import OLLAMA, OPENAI, REMOTE_BACKENDS, resolve_endpoint

if TYPE_CHECKING:
    from hailo_repl.backends.remote import RemoteBackend

LLAMA_EXTRA_MISSING = (
    'The llama backend needs the llama extra: CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" '
    "pip install 'hailo-repl[llama]'"
)
HAILORT_MISSING = (
    "hailo_platform is not installed: install HailoRT and its Python package "
    "(hailort / h10-hailort) for the Hailo backend, or use --backend llama"
)

ModelChooser = Callable[[list[str]], str]  # the models' names → the one to chat with
ModelDownloader = Callable[[str, Path], Path]  # (registered name, models directory) → the downloaded HEF


def _hailort_installed() -> bool:
    try:
        import hailo_platform  # noqa: F401
    except ImportError:
        return False
    return True


def open_backend(
    choice: BackendChoice,
    notify: Callable[[str], None],
    choose_model: ModelChooser | None,
    download: ModelDownloader,
    claim_hailo: Callable[[], object] = lambda: None,
) -> Backend:
    """Pick the backend and resolve its model; BackendError/ModelNotFoundError on failure.

    `choose_model` picks among several installed HEFs or a server's models (None: nobody
    to ask, so the user must name one). `claim_hailo` runs before the Hailo device is opened
    (it waits while another process holds it: instance_lock). The model is not loaded yet: the
    caller runs `load()`, in the background in the REPL.
    """
    if choice.backend in REMOTE_BACKENDS:
        backend = remote_backend(choice)
        if not backend.model_name:
            backend = backend.with_model(_choose_name(backend.list_models(), backend.name, choose_model))
        return backend
    wants_hailo = choice.backend == "hailo" or (choice.backend == "auto" and choice.hef_path and not choice.gguf_path)
    if choice.backend == "llama" or choice.gguf_path:
        return _llama_backend(choice.gguf_path)
    if not _hailort_installed():
        if wants_hailo:
            raise BackendError(HAILORT_MISSING)
        notify(
            f"No Hailo device (hailo_platform is not installed); using llama.cpp on the CPU "
            f"with {models.BUNDLED_MODEL_NAME}"
        )
        return _llama_backend(None)

    from hailo_repl.backends.hailo import HailoBackend
    from hailo_repl.backends.hailo_device import open_vdevice

    claim_hailo()
    try:
        vdevice = open_vdevice()
    except BackendError as error:
        if wants_hailo:
            raise
        logger.info("auto backend: {}", error)
        notify(f"No Hailo device found; using llama.cpp on the CPU with {models.BUNDLED_MODEL_NAME}")
        return _llama_backend(None)
    try:
        hef = _choose_hef(choice.hef_path, choose_model, download)
        keeping = choice.keeping() if choice.keeping else None
        return HailoBackend(hef, vdevice, context_cache=choice.context_cache, keeping=keeping)
    except BaseException:
        vdevice.release()
        raise


def resolve_choice(
    choice: BackendChoice, notify: Callable[[str], None], choose_model: ModelChooser | None, download: ModelDownloader
) -> BackendChoice:
    """The choice with what needs the user settled here (the model picker, a download), without
    opening any device: for the engine process, which opens the device and asks nobody.
    BackendError/ModelNotFoundError as open_backend raises them. With `auto` and no HEF named,
    one HEF (or none) is left to the engine, which falls back to llama.cpp where no device
    opens; among several, the one picked is named, and then wants the device."""
    if choice.settled:
        return choice
    if choice.backend in REMOTE_BACKENDS:
        backend = remote_backend(choice)
        try:
            name = _choose_name(backend.list_models(), backend.name, choose_model)
        finally:
            backend.release()
        return choice._replace(model_name=name)
    wants_hailo = choice.backend == "hailo" or bool(choice.hef_path)
    if importlib.util.find_spec("hailo_platform") is None:  # (not imported: HailoRT stays out of the client)
        if wants_hailo:
            raise BackendError(HAILORT_MISSING)
        notify(
            f"No Hailo device (hailo_platform is not installed); using llama.cpp on the CPU "
            f"with {models.BUNDLED_MODEL_NAME}"
        )
        return choice._replace(backend="llama")
    if not choice.hef_path and len(models.find_downloaded_llm_models()) < 2:
        return choice  # the engine finds the one HEF, or that a device opens with none (its error)
    return choice._replace(hef_path=str(_choose_hef(choice.hef_path, choose_model, download)))


def _llama_backend(gguf_path: Path | None) -> Backend:
    # find_spec, not import: importing llama_cpp takes ~0.2 s, which load() spends later.
    if importlib.util.find_spec("llama_cpp") is None:
        raise BackendError(LLAMA_EXTRA_MISSING)
    from hailo_repl.backends.llama import LlamaBackend

    path = gguf_path or models.bundled_gguf_path()
    if path is None:
        raise BackendError(f"{models.BUNDLED_MODEL_NAME} is not installed. {LLAMA_EXTRA_MISSING}")
    return LlamaBackend(path)


def _choose_hef(hef_path: str | None, choose_model: ModelChooser | None, download: ModelDownloader) -> Path:
    if hef_path:
        return models.resolve_hef_path(hef_path, download=download)
    found = models.find_downloaded_llm_models()
    if not found:
        raise models.ModelNotFoundError(models.NO_MODELS_MESSAGE.format(dir=models.models_dir()))
    if len(found) == 1:
        return found[0]
    if choose_model is None:
        names = ", ".join(p.stem for p in found)
        raise models.ModelNotFoundError(f"Several models are installed ({names}); choose one with --hef-path NAME")
    by_name = {path.stem: path for path in found}
    return by_name[choose_model(list(by_name))]


def remote_backend(choice: BackendChoice) -> RemoteBackend:
    """The backend for a server (not contacted yet); its model_name is empty when none was given."""
    from hailo_repl.backends.ollama import OllamaBackend
    from hailo_repl.backends.openai import OpenAIBackend

    endpoint = resolve_endpoint(choice.backend, choice.url, choice.api_key, choice.environ)
    kind = OpenAIBackend if choice.backend == OPENAI else OllamaBackend
    return kind(endpoint, choice.model_name or "", choice.context_size, name=choice.backend)


def _choose_name(names: list[str], server: str, choose_model: ModelChooser | None) -> str:
    if not names:
        pull = " (`ollama pull NAME`)" if server == OLLAMA else ""
        raise models.ModelNotFoundError(f"The {server} server has no models; add one{pull}, then try again")
    if len(names) == 1:
        return names[0]
    if choose_model is None:
        several = ", ".join(names)
        raise models.ModelNotFoundError(f"The server has several models ({several}); choose one with --model NAME")
    return choose_model(names)


# ---- /model: the models a running chat may switch to ----------------------------------------


def model_names(backend: Backend) -> list[str]:
    """What /model offers: the server's models, the installed HEFs, or the bundled GGUF."""
    from hailo_repl.backends.remote import RemoteBackend  # imports httpx: only when it is needed

    if isinstance(backend, RemoteBackend):
        return backend.list_models()
    if backend.name == "hailo":
        return [path.stem for path in models.find_downloaded_llm_models()]
    return sorted({models.BUNDLED_MODEL_NAME, backend.model_name})


def backend_for_model(backend: Backend, name: str) -> Backend:
    """A new backend of the same kind for model `name`, not loaded yet; ModelNotFoundError
    (or BackendError) when there is no such model."""
    from hailo_repl.backends.remote import RemoteBackend  # imports httpx: only when it is needed

    if isinstance(backend, RemoteBackend):
        if name not in backend.list_models():
            raise models.ModelNotFoundError(f"{name} is not among the server's models; /model lists them")
        return backend.with_model(name)
    if backend.name == "hailo":
        from hailo_repl.backends.hailo import HailoBackend

        cache, keeping = (backend.context_cache, backend.keeping) if isinstance(backend, HailoBackend) else (None, None)
        # The VDevice opens as it loads.
        return HailoBackend(models.resolve_hef_path(name), context_cache=cache, keeping=keeping)
    if name == models.BUNDLED_MODEL_NAME:
        return _llama_backend(None)
    path = Path(name).expanduser()
    try:
        models.check_gguf(path)
    except ValueError as error:
        raise models.ModelNotFoundError(f"{error}; /model lists the models, or give a GGUF file's path") from None
    return _llama_backend(path)
