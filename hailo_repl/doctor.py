"""`hailo-repl doctor`: is this machine ready to chat? One line per check, ✓ or ✗ with what to do.

Setting up a Hailo-10H is where time goes (driver, permissions, HailoRT version, HEFs,
another process holding the device), so each step a chat depends on is checked in the
order it is needed. Exit code 0 when the chosen backend can chat, else 1.

It checks what a chat with the same options would use: the settings in effect (flags,
environment, config file) that a check reads (DOCTOR_SETTINGS: the backend, its HEF, GGUF
or server, history), taken before or after `doctor`. A chat's option that no check reads
(`--temperature`, `-p`) is refused with a line that says so.
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
from hailo_repl.backend_choice import BackendChoice
from hailo_repl.backends import HAILORT_MISSING, LLAMA_EXTRA_MISSING
from hailo_repl.backends.base import BackendError
from hailo_repl.config import data_dir, device_contexts_dir, instance_lock_file, log_file
from hailo_repl.console import CHECK_FAILED, CHECK_PASSED, ArgumentParser, Console, no_wrap
from hailo_repl.log import setup_logging
from hailo_repl.servers import REMOTE_BACKENDS
from hailo_repl.streaming import terminal_safe

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

    choice: BackendChoice = field(default_factory=BackendChoice)  # what the chat would use
    history: bool = True  # whether the chat would write its files
    lines: list[tuple[bool, str]] = field(default_factory=list)
    hailort_ready: bool = False
    vdevice_opens: bool = False
    device_in_use: bool = False  # another hailo-repl has it open: the doctor does not open it meanwhile
    hefs: list[Path] = field(default_factory=list)
    llama_ready: bool = False
    server_ready: str | None = None  # the remote model the server has (a remote backend)

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
    from hailo_repl.daemon.cli import ask
    from hailo_repl.instance_lock import HAILO, InstanceLock

    engine, answer, _ = ask("daemon/status")  # the engine process first: it may hold the device for minutes
    if engine and (answer is None or answer.get("backend") == HAILO):
        held = f" with {answer.get('model')}" if answer else ""
        findings.device_in_use = findings.vdevice_opens = findings.add(
            True,
            f"the Hailo-10H opens: the hailo-repl engine process (pid {engine}) has it open{held}; "
            "`hailo-repl daemon stop` releases it, then run the doctor again for the checks that open it",
        )
        return
    holder = next((h for h in InstanceLock(instance_lock_file()).holders() if h.blocks(HAILO, None)), None)
    if holder is not None:
        findings.device_in_use = findings.vdevice_opens = findings.add(
            True,
            f"the Hailo-10H opens: hailo-repl pid {holder.pid} has it open"
            + (f" (finishing a reply in chat {holder.chat})" if holder.finishing and holder.chat else "")
            + "; run the doctor again once that chat ends for the checks that open it",
        )
        return
    try:
        vdevice = open_vdevice()
    except BackendError as error:
        findings.add(False, str(error))
        return
    vdevice.release()
    findings.vdevice_opens = findings.add(True, f"a VDevice opens in the {SHARED_VDEVICE_GROUP_ID} group (released)")


def check_models(findings: Findings, machine: Machine) -> None:
    directory = models.models_dir()
    named = findings.choice.hef_path
    if named:  # --hef-path: the HEF the chat would load (a registered one missing is downloaded by the chat)
        try:
            findings.hefs = [models.resolve_hef_path(named, directory)]
        except models.ModelNotFoundError as error:
            findings.add(False, str(error))
            return
        findings.add(True, f"LLM HEF {findings.hefs[0]} (--hef-path {named})")
        return
    findings.hefs = models.find_downloaded_llm_models(directory)
    if not findings.hefs:
        findings.add(False, models.NO_MODELS_MESSAGE.format(dir=directory))
        return
    names = ", ".join(hef.stem for hef in findings.hefs)
    findings.add(True, f"LLM HEFs in {directory}: {names}")


def check_text_path(findings: Findings, machine: Machine) -> None:
    """Load the HEF the chat would use and run its self-check again (hailo_selfcheck.py): may
    prompts go as text after a loaded context? Then what saving and loading its context cost."""
    if not findings.hailo_can_chat or findings.device_in_use:
        return  # the lines above say why
    from hailo_repl.backends.hailo import HailoBackend
    from hailo_repl.backends.hailo_device import installed_hailort_version
    from hailo_repl.backends.hailo_selfcheck import renderer_fingerprint

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
    entry = backend.kept.facts.entry(backend.kept.key)  # what the check just measured and kept
    seen = [
        f"last {what} {figures['bytes']:,} bytes, {figures['device_ms']:,} ms on the device (GIL held), "
        f"{figures['file_ms']:,} ms for the file ({figures['when']})"
        for what in ("save", "load")
        if isinstance(figures := entry.get(what), dict)
    ]
    measured = backend.kept.figures().summary()
    findings.add(True, f"{hef.stem}'s device context: {measured}; {'; '.join(seen) or 'no save or load seen yet'}")


def check_llama(findings: Findings, machine: Machine) -> None:
    # find_spec, not import: importing llama_cpp takes a while and the doctor only asks.
    if importlib.util.find_spec("llama_cpp") is None:
        findings.add(False, f"llama.cpp fallback unavailable: {LLAMA_EXTRA_MISSING}")
        return
    gguf = findings.choice.gguf_path  # --model: checked as a GGUF file with the other settings
    if gguf is not None:
        findings.llama_ready = findings.add(True, f"llama.cpp ready with {gguf} (--model)")
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


def check_server(findings: Findings, machine: Machine) -> None:
    """A remote backend's server: does it answer, and has it the model the chat would use?"""
    from hailo_repl.backends import remote_backend

    backend = remote_backend(findings.choice)
    where = f"{backend.endpoint.url} ({backend.name})"
    try:
        names = backend.list_models()
    except BackendError as error:
        findings.add(False, str(error))
        return
    finally:
        backend.release()
    wanted = findings.choice.model_name
    if not names:
        findings.add(False, f"{where} answers but has no models")
    elif wanted and wanted not in names:
        findings.add(False, f"{where} has no model {wanted}; it has {', '.join(names)}")
    else:
        findings.add(True, f"{where} answers; models: {', '.join(names)}")
        findings.server_ready = wanted or names[0]


def check_folders(findings: Findings, machine: Machine) -> None:
    if not findings.history:
        findings.add(True, "history off: a chat writes nothing, so no folder needs to be writable")
        return
    folders = {"history": data_dir(), "sessions": data_dir() / "sessions", "log": log_file().parent}
    blocked = [f"{label} {path}" for label, path in folders.items() if not _writable(path)]
    if blocked:
        findings.add(False, f"not writable: {', '.join(blocked)} (check their owner and permissions)")
        return
    findings.add(True, "history, sessions and log folders writable")


def verdict(findings: Findings) -> tuple[bool, str]:
    """Whether the chosen backend (auto, hailo, llama or a server) can chat, and the line saying so."""
    backend = findings.choice.backend
    if backend in REMOTE_BACKENDS:
        if findings.server_ready:
            return True, f"hailo-repl will chat on the {backend} server with {findings.server_ready}"
        return False, f"the {backend} backend cannot chat: fix the ✗ lines above"
    hailo = f"the Hailo-10H with {findings.hefs[0].stem}" if findings.hefs else "the Hailo-10H"
    gguf = findings.choice.gguf_path
    llama = f"llama.cpp on the CPU with {gguf.name if gguf else models.BUNDLED_MODEL_NAME}"
    if backend in ("auto", "hailo") and findings.hailo_can_chat and gguf is None:
        return True, f"hailo-repl will chat on {hailo}"
    if backend == "hailo" or (backend == "auto" and findings.choice.hef_path and gguf is None):
        asked = " (--hef-path asks for it: no fallback to llama.cpp)" if backend == "auto" else ""
        return False, f"the hailo backend cannot chat{asked}: fix the ✗ lines above"
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


# With a remote backend, the server is what a chat needs (no device, no llama.cpp).
REMOTE_CHECKS: list[Callable[[Findings, Machine], None]] = [check_python, check_server, check_folders]

# The settings a check reads; the chat's other options mean nothing here and are refused.
DOCTOR_SETTINGS = ("backend", "hef-path", "model", "url", "context-size", "history", "verbose", "color", "word-wrap")


def diagnose(
    console: Console,
    backend: str = "auto",
    machine: Machine | None = None,
    choice: BackendChoice | None = None,
    history: bool = True,
    colour: bool = False,
) -> bool:
    """Run every check, one line each, then the verdict; True if the backend (`choice`, else
    `backend` with its default model) can chat. With `colour`, ✓ is green and ✗ red."""
    findings = Findings(choice or BackendChoice(backend=backend), history)
    checks = REMOTE_CHECKS if findings.choice.backend in REMOTE_BACKENDS else CHECKS
    for check in checks:
        seen = len(findings.lines)
        check(findings, machine or Machine())
        for passed, text in findings.lines[seen:]:
            _say(console, passed, text, colour)
    can_chat, line = verdict(findings)
    _say(console, can_chat, line, colour)
    return can_chat


def _say(console: Console, passed: bool, text: str, colour: bool) -> None:
    mark = CHECK_PASSED if passed else CHECK_FAILED
    line = console.wrapped(terminal_safe(f"{mark} {text}"))  # (a path or a server's answer runs no escape)
    if colour:
        line = f"\x1b[{32 if passed else 31}m{mark}\x1b[0m{line[len(mark) :]}"
    console.write(line + "\n")


def build_parser() -> argparse.ArgumentParser:
    from hailo_repl.cli_settings import add_config_flag, add_setting_flags

    parser = ArgumentParser(
        prog="hailo-repl doctor",
        description="Check what a chat with these options needs, one line per check, each with what to do. "
        "The backend decides the exit code. Options may also come before `doctor`.",
    )
    add_setting_flags(parser, only=DOCTOR_SETTINGS)
    add_config_flag(parser)
    parser.add_argument("--api-key", help="with a remote backend, the key sent to its server")
    return parser


def refuse_what_no_check_reads(parser: argparse.ArgumentParser, unknown: list[str]) -> None:
    """A chat's option among `unknown` is named as meaningless here; anything else is argparse's error."""
    from hailo_repl.cli_parser import build_parser as chat_parser

    chat_options = chat_parser()._option_string_actions  # every spelling of every chat option
    for word in unknown:
        option = word.split("=", 1)[0]
        if option in chat_options:
            parser.error(f"{option} means nothing to the doctor: it checks what a chat needs, it does not chat")
    parser.error(f"unrecognized arguments: {' '.join(unknown)}")


def main(argv: list[str]) -> int:
    from hailo_repl.cli_chat import settings_and_backend
    from hailo_repl.cli_settings import EXIT_USAGE
    from hailo_repl.render import color_wanted
    from hailo_repl.settings import SETTINGS

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        refuse_what_no_check_reads(parser, unknown)
    setup_logging(to_file=False)  # nothing but the check lines on the terminal
    console = Console()
    found = settings_and_backend(args)
    if found is None:
        return EXIT_USAGE
    settings, config_file, choice = found
    if not settings["word-wrap"]:
        console.wrap_width = no_wrap
    if settings["verbose"]:
        rows = [
            f"  {name}: {SETTINGS[name].shown(settings[name])}  # {settings.origins[name]}" for name in DOCTOR_SETTINGS
        ]
        console.say("\n".join([f"The checks use (config file {config_file}):", *rows]))
    colour = color_wanted(settings["color"], os.environ) and (settings["color"] == "always" or sys.stdout.isatty())
    return 0 if diagnose(console, choice=choice, history=settings["history"], colour=colour) else 1
