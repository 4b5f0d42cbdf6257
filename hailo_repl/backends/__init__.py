"""Backend choice: `--backend auto|hailo|llama`, model resolution, and loading."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from hailo_repl import models
from hailo_repl.backends.base import Backend, BackendError

LLAMA_EXTRA_MISSING = (
    'The llama backend needs the llama extra: CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" '
    "pip install 'hailo-repl[llama]'"
)
HAILORT_MISSING = (
    "hailo_platform is not installed: install HailoRT and its Python package "
    "(hailort / h10-hailort) for the Hailo backend, or use --backend llama"
)

ModelChooser = Callable[[list[Path]], Path]  # the installed models → the one to chat with
ModelDownloader = Callable[[str, Path], Path]  # (registered name, models directory) → the downloaded HEF


@dataclass
class BackendChoice:
    backend: str = "auto"  # auto | hailo | llama
    hef_path: str | None = None
    gguf_path: Path | None = None


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
) -> Backend:
    """Pick the backend and resolve its model; BackendError/ModelNotFoundError on failure.

    `choose_model` picks among several installed HEFs (None: nobody to ask, so the
    user must name one). The model is not loaded yet: the caller runs `load()`, in the
    background in the REPL.
    """
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

    from hailo_repl.backends.hailo import HailoBackend, open_vdevice

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
        return HailoBackend(hef, vdevice)
    except BaseException:
        vdevice.release()
        raise


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
    return choose_model(found)
