"""A test double of HailoRT's `hailo_platform`, faithful to the surface hailo-repl uses.

Put `tests/fakes` on PYTHONPATH and the real hailo backend runs against it.
Environment:
  HAILO_FAKE_SCRIPT    JSON file: a list of replies (each a list of token strings, or
                       {"tokens": [...], "delay_ms": N, "fail_after": N, "prefill_ms": N};
                       with fail_after, read() raises HailoRTException once N tokens
                       were read, a device failure mid-stream; prefill_ms makes the
                       first read() wait that long, as prompt evaluation does), or an object
                       {"replies": [...], "delay_ms": N, "context_capacity": N,
                        "recovery_sequence": "...", "load_ms": N}.
  HAILO_FAKE_NO_DEVICE set → VDevice() fails as it does with no free device.
  HAILO_FAKE_LOG       file that gets one JSON line per call that changes state
                       (generate, clear_context, load_context, release), so tests
                       of the installed program can check what reached the "device".
"""

from hailo_platform.pyhailort._pyhailort import HailoRTException  # noqa: F401
from hailo_platform.vdevice import VDevice  # noqa: F401
