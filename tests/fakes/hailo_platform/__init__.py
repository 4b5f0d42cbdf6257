"""A test double of HailoRT's `hailo_platform`, faithful to the surface hailo-repl uses.

Put `tests/fakes` on PYTHONPATH and the real hailo backend runs against it.
Environment:
  HAILO_FAKE_SCRIPT    JSON file: a list of replies (each a list of token strings, or
                       {"tokens": [...], "delay_ms": N, "prefill_ms": N, "fail_after": N,
                        "queued_at_death": bool, "stall_ms": N, "stall_at": N}; see
                       hailo_platform.genai for what each does), or an object
                       {"replies": [...], "delay_ms": N, "context_capacity": N,
                        "recovery_sequence": "...", "load_ms": N, "abort_tokens": N,
                        "request_timeout_ms": N, "prompt_template": "...",
                        "load_status": N, "template_drift": "...", "reasoning_start": "...",
                        "context_bytes": N, "context_convert_ms_per_mb": N,
                        "prefill_ms_per_token": N, "prefill_frame_tokens": N,
                        "nondeterministic_context": bool}.
  HAILO_FAKE_NO_DEVICE set → VDevice() fails as it does with no free device.
  HAILO_FAKE_EXCLUSIVE a file: one process at a time has the device; a VDevice() in another
                       meanwhile fails as with no free device (see hailo_platform.vdevice).
  HAILO_FAKE_VERSION   the HailoRT version to pretend to be (default 5.2.0); below
                       5.1.1, LLM has no get_context_usage_size/max_context_capacity,
                       as in HailoRT 5.0.1 and 5.1.0.
  HAILO_FAKE_CONTEXT_BYTES, HAILO_FAKE_CONVERT_MS_PER_MB
                       a saved context's size and the GIL-held ms a MB of its save and
                       load, for every script (default: a Qwen2.5-1.5B KV cache, 112 MiB,
                       at 30 ms/MB; see hailo_platform.genai).
  HAILO_FAKE_LOG       file that gets one JSON line per call that changes state
                       (generate, prefill, clear_context, save_context, load_context,
                       release), so tests of the installed program can check what
                       reached the "device" (a generate's `held` and `inserted`: the
                       context's text before it, and the prompt as it was added).
"""

import os

from hailo_platform.pyhailort._pyhailort import HailoRTException  # noqa: F401
from hailo_platform.vdevice import VDevice  # noqa: F401

# hailo_platform/__init__.py in HailoRT sets __version__ (= the wheel's version).
__version__ = os.environ.get("HAILO_FAKE_VERSION", "5.2.0")
