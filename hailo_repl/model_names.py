"""The HEF models hailo-repl knows by name: those hailo-apps registers and those downloaded.

Shell completion asks for these names at each Tab after --hef-path (`hailo-repl --list-models
--quiet`, answered by hailo_repl.entry), so this module uses `os` alone: with pathlib and typing,
as hailo_repl.models has them, the answer took 2.9 times a bare interpreter's start.
"""

from __future__ import annotations

import os

RESOURCES_ROOT_DEFAULT = "/usr/local/hailo/resources"
HAILO10H_ARCH = "hailo10h"
HEF_SUFFIX = ".hef"

# The models hailo-apps registers for its LLM apps (resources_config.yaml: llm_chat and agent).
REGISTERED_MODELS = ("Qwen2.5-1.5B-Instruct", "Qwen2.5-Coder-1.5B-Instruct")
# The GGUF model the llama extra installs (hailo_repl.models finds its file), by the name shown.
BUNDLED_MODEL_NAME = "SmolLM2-135M-Instruct"
# "Instruct" files that are not text LLMs: speech, vision encoder, vision-language.
NON_LLM_PREFIXES = ("Whisper", "clip_vit", "Qwen2-VL")


def models_directory() -> str:
    """Where HEFs are downloaded: HAILO_RESOURCES_DIR (or hailo-apps' default)/models/hailo10h."""
    root = os.environ.get("HAILO_RESOURCES_DIR") or RESOURCES_ROOT_DEFAULT
    return os.path.join(root, "models", HAILO10H_ARCH)


def is_llm_name(name: str) -> bool:
    """Registered names, or the Instruct heuristic minus known non-LLM families."""
    if name in REGISTERED_MODELS:
        return True
    return "Instruct" in name and not name.startswith(NON_LLM_PREFIXES)


def downloaded_llm_names(directory: str) -> list[str]:
    """The names of the LLM HEFs in `directory` (files named NAME.hef), sorted; none if it is not a folder."""
    try:
        entries = os.scandir(directory)
    except OSError:
        return []
    with entries:
        files = sorted(entry.name for entry in entries if entry.name.endswith(HEF_SUFFIX) and entry.is_file())
    names = [file[: -len(HEF_SUFFIX)] for file in files]
    return [name for name in names if is_llm_name(name)]


def hef_names(downloaded: list[str]) -> list[str]:
    """What --hef-path takes by name, in --list-models' order: the registered models, then the
    other `downloaded` ones."""
    return [*REGISTERED_MODELS, *(name for name in downloaded if name not in REGISTERED_MODELS)]


def print_model_names() -> int:
    """The names --hef-path takes, one a line (`hailo-repl --list-models --quiet`)."""
    for name in hef_names(downloaded_llm_names(models_directory())):
        print(name)
    return 0
