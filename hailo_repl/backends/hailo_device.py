"""The Hailo-10H and a HEF: the shared VDevice, HailoRT's version, the HEF's chat template, and
what HailoRT's load errors mean (hailo-ai/hailort v5.2.0)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hailo_repl.backends.base import BackendError, Message
from hailo_repl.backends.chat_template import ChatTemplate
from hailo_repl.log import logger

# DeepSeek-R1-Distill's begin_of_reasoning token, with which its template ends a generation prompt.
REASONING_START = "<think>"
SHARED_VDEVICE_GROUP_ID = "SHARED"  # lets other Hailo apps use the chip at the same time

# get_context_usage_size() and max_context_capacity() first appear in HailoRT 5.1.1
# (pyhailort.py of v5.1.1; absent in v5.0.1 and v5.1.0).
MINIMUM_HAILORT = (5, 1, 1)
NEEDED_LLM_METHODS = ("get_context_usage_size", "max_context_capacity")

VDEVICE_FAILED = (
    "Failed to create VDevice ({error}). Check that the Hailo-10H is connected and powered, "
    "that the driver is loaded (`lsmod | grep hailo`), that you may open the device "
    "(`ls -la /dev/hailo*`), and that no other process holds it exclusively."
)


def open_vdevice() -> Any:
    """A VDevice in the shared group; a BackendError naming what to check when none opens."""
    from hailo_platform import VDevice

    params = VDevice.create_params()
    params.group_id = SHARED_VDEVICE_GROUP_ID
    try:
        return VDevice(params)
    except Exception as error:  # HailoRT raises HailoRTException subclasses
        raise BackendError(VDEVICE_FAILED.format(error=error)) from None


def version_text(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def installed_hailort_version() -> str:
    import hailo_platform

    return str(getattr(hailo_platform, "__version__", "unknown"))


def hailort_too_old() -> str | None:
    """Why the installed HailoRT cannot run this backend (one line), or None if it can."""
    from hailo_platform.genai import LLM

    installed = installed_hailort_version()
    parsed = tuple(int(part) for part in re.findall(r"\d+", installed)[:3])
    missing = [name for name in NEEDED_LLM_METHODS if not hasattr(LLM, name)]
    if not missing and (not parsed or parsed >= MINIMUM_HAILORT):
        return None
    return (
        f"HailoRT {installed} is installed; hailo-repl needs HailoRT {version_text(MINIMUM_HAILORT)} or later "
        f"(for LLM.{'/'.join(NEEDED_LLM_METHODS)}). Install a newer HailoRT, or use --backend llama"
    )


def render_chatml(messages: Sequence[Mapping[str, object]], add_generation_prompt: bool = True) -> str:
    """The Qwen2.5 (ChatML) template: the estimate when the model's own cannot be read."""
    body = "".join(
        f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
        for m in messages
        if m["role"] in ("system", "user", "assistant")
    )
    return body + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def compile_template(source: str | None) -> ChatTemplate | None:
    """The HEF's own chat template, or None when it cannot be used (token counts are then
    estimated with ChatML, and nothing is sent as text)."""
    if not source:
        return None
    try:
        template = ChatTemplate(source)
        template.probe  # noqa: B018  (HailoRT renders it as the LLM is made; it must render here too)
    except Exception:
        logger.opt(exception=True).info("the HEF's chat template cannot be rendered here; estimating with ChatML")
        return None
    return template


# LLM() raises a bare status number (its constructor is not wrapped in pyhailort.py):
# what it means and what to do. 14 and 92 come from the header read before loading
# (hef.cpp, Hef::hash); 26 and 93 from the device parsing the HEF afterwards.
LOAD_STATUS_WORDS = {
    "13": "cannot open the file (check the path and that you may read it)",
    "14": "the file could not be read whole (a truncated download? download it again)",
    "26": "not a valid HEF (a damaged file? download it again)",
    "92": "a HEF format this HailoRT does not support (use a HEF built for HailoRT "
    "{hailort} from Hailo's Model Zoo GenAI)",
    "93": "the HEF was compiled for another Hailo device (use a Hailo-10H HEF)",
}


def splits_at_reasoning(template: ChatTemplate | None, sent: Sequence[Message]) -> bool:
    """Whether a message sent holds a literal REASONING_START on a reasoning HEF (its template
    ends a generation prompt in it): the device then keeps only what came before it once the
    generation ends (llm_server.cpp `handle_prefill_phase` looks for the reasoning token in the
    whole prompt; `handle_reasoning_generation_completion` restores the cache saved there)."""
    if not any(REASONING_START in m["content"] for m in sent):
        return False
    probe: list[Message] = [{"role": "user", "content": "x"}]
    return REASONING_START in (template.first(probe) if template is not None else render_chatml(probe))


def open_llm(vdevice: Any, hef_path: Path) -> Any:
    """hailo_platform.genai.LLM of the HEF; a BackendError saying what HailoRT's status means."""
    from hailo_platform.genai import LLM

    try:
        return LLM(vdevice, str(hef_path))
    except Exception as error:
        words = LOAD_STATUS_WORDS.get(str(error))
        reason = words.format(hailort=installed_hailort_version()) if words else str(error) or type(error).__name__
        raise BackendError(f"Failed to load {hef_path} on the Hailo device: {reason}") from None
