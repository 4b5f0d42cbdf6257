"""`hailo-repl doctor`: is this machine ready to chat? One line per check, ✓ or ✗ with what to do.

Setting up a Hailo-10H is where time goes (driver, permissions, HailoRT version, HEFs,
another process holding the device), so each step a chat depends on is checked in the
order it is needed. Exit code 0 when the chosen backend can chat, else 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hailo_repl import __version__, models
from hailo_repl.backends import HAILORT_MISSING, LLAMA_EXTRA_MISSING
from hailo_repl.backends.base import BackendError
from hailo_repl.config import data_dir, device_contexts_dir, log_file
from hailo_repl.console import CHECK_FAILED, CHECK_PASSED, ArgumentParser, Console
from hailo_repl.log import setup_logging

MINIMUM_PYTHON = (3, 10)
# The PCIe driver's kernel module: hailo1x_pci for the Hailo-10H (hailo_pci drives the Hailo-8).
DRIVER_MODULE = "hailo1x_pci"


@dataclass
class Machine:
    """Where the device nodes and kernel modules show up (a test points them elsewhere)."""

    dev_dir: Path = Path("/dev")
    modules_dir: Path = Path("/sys/module")


@dataclass
class Findings:
    """What the checks found out, for the verdict: which backend can chat."""

    lines: list[tuple[bool, str]] = field(default_factory=list)
    hailort_ready: bool = False
    vdevice_opens: bool = False
    hefs: list[Path] = field(default_factory=list)
    llama_ready: bool = False

    def add(self, passed: bool, text: str) -> bool:
        self.lines.append((passed, text))
        return passed

    @property
    def hailo_can_chat(self) -> bool:
        return self.hailort_ready and self.vdevice_opens and bool(self.hefs)


def check_python(findings: Findings, machine: Machine) -> None:
    version = platform.python_version()
    if sys.version_info[:2] < MINIMUM_PYTHON:
        wanted = ".".join(map(str, MINIMUM_PYTHON))
        findings.add(False, f"Python {version}: hailo-repl {__version__} needs Python {wanted} or later")
        return
    findings.add(True, f"Python {version}, hailo-repl {__version__}")


def check_hailort(findings: Findings, machine: Machine) -> None:
    try:
        import hailo_platform  # noqa: F401
    except ImportError as error:
        findings.add(False, f"{HAILORT_MISSING} ({error}); in a virtualenv, create it with --system-site-packages")
        return
    from hailo_repl.backends.hailo_device import hailort_too_old, installed_hailort_version

    too_old = hailort_too_old()
    if too_old:
        findings.add(False, too_old)
        return
    findings.hailort_ready = findings.add(True, f"HailoRT {installed_hailort_version()} (hailo_platform)")


def check_device_nodes(findings: Findings, machine: Machine) -> None:
    nodes = sorted(machine.dev_dir.glob("hailo*"))
    if not nodes:
        findings.add(
            False,
            f"no {machine.dev_dir}/hailo* device: is the Hailo-10H seated and powered, and its driver "
            "installed (HailoRT's PCIe driver package)? `lspci | grep -i hailo` shows the card",
        )
        return
    unopened = []
    for node in nodes:
        try:
            os.close(os.open(node, os.O_RDWR))
        except OSError as error:
            unopened.append(f"{node} ({error.strerror})")
    if unopened:
        findings.add(
            False,
            f"cannot open {', '.join(unopened)}: add your user to the group that owns it (`ls -la {nodes[0]}`), "
            "or reinstall HailoRT's driver package for its udev rule; is another process holding it?",
        )
        return
    findings.add(True, f"{', '.join(map(str, nodes))} present and openable")


def check_driver(findings: Findings, machine: Machine) -> None:
    if (machine.modules_dir / DRIVER_MODULE).is_dir():
        findings.add(True, f"driver {DRIVER_MODULE} loaded")
        return
    findings.add(
        False,
        f"driver {DRIVER_MODULE} not loaded: `sudo modprobe {DRIVER_MODULE}` "
        "(installed with HailoRT's PCIe driver package; a reboot after installing it also loads it)",
    )


def check_vdevice(findings: Findings, machine: Machine) -> None:
    if not findings.hailort_ready:
        findings.add(False, "VDevice not tried: HailoRT is missing or too old (above)")
        return
    from hailo_repl.backends.hailo_device import SHARED_VDEVICE_GROUP_ID, open_vdevice

    try:
        vdevice = open_vdevice()
    except BackendError as error:
        findings.add(False, str(error))
        return
    vdevice.release()
    findings.vdevice_opens = findings.add(True, f"a VDevice opens in the {SHARED_VDEVICE_GROUP_ID} group (released)")


def check_models(findings: Findings, machine: Machine) -> None:
    directory = models.models_dir()
    findings.hefs = models.find_downloaded_llm_models(directory)
    if not findings.hefs:
        findings.add(False, models.NO_MODELS_MESSAGE.format(dir=directory))
        return
    names = ", ".join(hef.stem for hef in findings.hefs)
    findings.add(True, f"LLM HEFs in {directory}: {names}")


def check_text_path(findings: Findings, machine: Machine) -> None:
    """Load the HEF the chat would use and run its self-check again (hailo_selfcheck.py): may
    prompts go as text after a loaded context? Then what saving and loading its context cost."""
    if not findings.hailo_can_chat:
        return  # the lines above say why
    from hailo_repl.backends.hailo import HailoBackend
    from hailo_repl.backends.hailo_device import installed_hailort_version
    from hailo_repl.backends.hailo_keeping import DeviceFigures
    from hailo_repl.backends.hailo_selfcheck import DEVICE_FACTS_NAME, DeviceFacts, device_key, renderer_fingerprint

    hef = findings.hefs[0]
    backend = HailoBackend(hef, context_cache=device_contexts_dir())
    try:
        backend.load()
        verdict = backend.self_check()
    except BackendError as error:
        findings.add(False, f"self-check of {hef.stem} not run: {error}")
        return
    finally:
        backend.release()
    checked = f"HailoRT {installed_hailort_version()}, renderer {renderer_fingerprint()}"
    if verdict.passed:
        findings.add(True, f"{hef.stem}: prompts sent as text match the message lists ({verdict.detail}; {checked})")
    else:
        findings.add(
            False,
            f"{hef.stem}: prompts sent as text do not match the message lists ({verdict.detail}; {checked}); "
            "hailo-repl sends whole message lists (a resumed chat is read again): please report this with hailort.log",
        )
    entry = DeviceFacts(device_contexts_dir() / DEVICE_FACTS_NAME).entry(device_key(hef, installed_hailort_version()))
    seen = [
        f"last {what} {figures['bytes']:,} bytes, {figures['device_ms']:,} ms on the device (GIL held), "
        f"{figures['file_ms']:,} ms for the file ({figures['when']})"
        for what in ("save", "load")
        if isinstance(figures := entry.get(what), dict)
    ]
    measured = DeviceFigures.from_facts(entry).summary()
    findings.add(True, f"{hef.stem}'s device context: {measured}; {'; '.join(seen) or 'no save or load seen yet'}")


def check_llama(findings: Findings, machine: Machine) -> None:
    # find_spec, not import: importing llama_cpp takes a while and the doctor only asks.
    if importlib.util.find_spec("llama_cpp") is None:
        findings.add(False, f"llama.cpp fallback unavailable: {LLAMA_EXTRA_MISSING}")
        return
    gguf = models.bundled_gguf_path()
    if gguf is None:
        findings.add(False, f"{models.BUNDLED_MODEL_NAME} is not installed: {LLAMA_EXTRA_MISSING}")
        return
    findings.llama_ready = findings.add(True, f"llama.cpp fallback ready with {models.BUNDLED_MODEL_NAME} ({gguf})")


def _writable(directory: Path) -> bool:
    """The folder, or the nearest one that exists above it (hailo-repl creates the rest), is writable."""
    for candidate in (directory, *directory.parents):
        if candidate.exists():
            return candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK)
    return False


def check_folders(findings: Findings, machine: Machine) -> None:
    folders = {"history": data_dir(), "sessions": data_dir() / "sessions", "log": log_file().parent}
    blocked = [f"{label} {path}" for label, path in folders.items() if not _writable(path)]
    if blocked:
        findings.add(False, f"not writable: {', '.join(blocked)} (check their owner and permissions)")
        return
    findings.add(True, "history, sessions and log folders writable")


def verdict(findings: Findings, backend: str) -> tuple[bool, str]:
    """Whether `backend` (auto, hailo or llama) can chat, and the line saying so."""
    hailo = f"the Hailo-10H with {findings.hefs[0].stem}" if findings.hefs else "the Hailo-10H"
    llama = f"llama.cpp on the CPU with {models.BUNDLED_MODEL_NAME}"
    if backend in ("auto", "hailo") and findings.hailo_can_chat:
        return True, f"hailo-repl will chat on {hailo}"
    if backend == "hailo":
        return False, "the hailo backend cannot chat: fix the ✗ lines above"
    if findings.llama_ready:
        return True, f"hailo-repl will chat on {llama}"
    return False, f"no backend can chat{'' if backend == 'llama' else ' (hailo or llama)'}: fix the ✗ lines above"


# In the order a chat needs them; each adds its lines to the findings.
CHECKS: list[Callable[[Findings, Machine], None]] = [
    check_python,
    check_hailort,
    check_device_nodes,
    check_driver,
    check_vdevice,
    check_models,
    check_text_path,
    check_llama,
    check_folders,
]


def diagnose(console: Console, backend: str = "auto", machine: Machine | None = None) -> bool:
    """Run every check, one line each, then the verdict; True if `backend` can chat."""
    findings = Findings()
    for check in CHECKS:
        seen = len(findings.lines)
        check(findings, machine or Machine())
        for passed, text in findings.lines[seen:]:
            console.say(f"{CHECK_PASSED if passed else CHECK_FAILED} {text}")
    can_chat, line = verdict(findings, backend)
    console.say(f"{CHECK_PASSED if can_chat else CHECK_FAILED} {line}")
    return can_chat


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="hailo-repl doctor", description="Check what a chat needs, one line per check, each with what to do."
    )
    parser.add_argument(
        "--backend",
        choices=["auto", "hailo", "llama"],
        default="auto",
        help="the backend whose readiness decides the exit code (default: %(default)s)",
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(to_file=False)  # nothing but the check lines on the terminal
    return 0 if diagnose(Console(), args.backend) else 1
