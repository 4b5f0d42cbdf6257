"""Backend choice: `--backend auto|hailo|llama`, model resolution, and loading."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from loguru import logger

from hailo_repl.backends.base import Backend, BackendError
from hailo_repl import models

LLAMA_EXTRA_MISSING = (
    "The llama backend needs the llama extra: "
    "CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install 'hailo-repl[llama]'"
)
HAILORT_MISSING = (
    "hailo_platform is not installed: install HailoRT and its Python package "
    "(hailort / h10-hailort) for the Hailo backend, or use --backend llama"
)


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


def open_backend(choice: BackendChoice, notify: Callable[[str], None], interactive: bool) -> Backend:
    """Pick the backend and resolve its model; BackendError/ModelNotFoundError on failure.

    The model is not loaded yet: the caller runs `load()`, in the background in the REPL.
    """
    wants_hailo = choice.backend == "hailo" or (choice.backend == "auto" and choice.hef_path and not choice.gguf_path)
    if choice.backend == "llama" or choice.gguf_path:
        return _llama_backend(choice.gguf_path)
    if not _hailort_installed():
        if wants_hailo:
            raise BackendError(HAILORT_MISSING)
        notify(f"No Hailo device (hailo_platform is not installed); using llama.cpp on the CPU with {models.BUNDLED_MODEL_NAME}")
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
        hef = _choose_hef(choice.hef_path, notify, interactive)
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


def _choose_hef(hef_path: str | None, notify: Callable[[str], None], interactive: bool) -> Path:
    if hef_path:
        return models.resolve_hef_path(hef_path, download=lambda name, directory: _download(name, directory, notify))
    found = models.find_downloaded_llm_models()
    if not found:
        raise models.ModelNotFoundError(models.NO_MODELS_MESSAGE.format(dir=models.models_dir()))
    if len(found) == 1:
        return found[0]
    if not interactive:
        names = ", ".join(p.stem for p in found)
        raise models.ModelNotFoundError(f"Several models are installed ({names}); choose one with --hef-path NAME")
    from prompt_toolkit.shortcuts import choice

    return choice(
        message="Several models are installed. Which one?",
        options=[(path, path.stem) for path in found],  # choice() numbers them
    )


def _download(name: str, directory: Path, notify: Callable[[str], None]) -> Path:
    notify(f"{name} is registered but not downloaded; downloading it to {directory}")
    if not sys.stderr.isatty():
        return models.download_model(name, directory)
    from prompt_toolkit.output import create_output
    from prompt_toolkit.shortcuts import ProgressBar

    with ProgressBar(title=f"Downloading {name}", output=create_output(stdout=sys.stderr)) as bar:
        counter = bar(label=f"{name}.hef")

        def report(done: int, total: int | None) -> None:
            counter.total = total
            counter.items_completed = done
            bar.invalidate()

        path = models.download_model(name, directory, report)
        counter.done = True
        return path
