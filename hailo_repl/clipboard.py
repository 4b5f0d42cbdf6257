"""Copying text to the user's clipboard, also from a Raspberry Pi reached over SSH.

OSC 52 (`ESC ] 52 ; c ; <base64> BEL`) asks the terminal emulator itself to set its
clipboard, so it reaches the laptop's clipboard through SSH (xterm, kitty, WezTerm,
iTerm2, Windows Terminal, foot, Alacritty; some ask first or need it enabled). tmux
and GNU screen sit between us and that terminal:

- tmux: with `set -g set-clipboard on` tmux takes a plain OSC 52 and passes it on; with
  `set -g allow-passthrough on` (tmux 3.3+) a sequence wrapped as `ESC P tmux; …ESC \\`
  (every ESC inside doubled) reaches the outer terminal. Its default (`external`)
  ignores both, so inside tmux both forms are sent: whichever the user enabled works.
- screen: only a DCS `ESC P … ESC \\` passes through, in pieces of at most 768 bytes, so
  the sequence is sent in 76-byte chunks each closed and reopened (as vim-oscyank does).

On a local desktop (no SSH) a clipboard tool is used as well when one is installed.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping

ESC = "\x1b"
BEL = "\x07"
ST = ESC + "\\"  # string terminator
SCREEN_CHUNK = 76
# Local clipboard tools, tried in order, each with the variable that says its display is there.
TOOLS = (
    ("WAYLAND_DISPLAY", ["wl-copy"]),
    ("DISPLAY", ["xclip", "-selection", "clipboard"]),
    ("DISPLAY", ["xsel", "--clipboard", "--input"]),
)


def osc52(text: str) -> str:
    encoded = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return f"{ESC}]52;c;{encoded}{BEL}"


def in_tmux(env: Mapping[str, str]) -> bool:
    return bool(env.get("TMUX"))


def in_screen(env: Mapping[str, str]) -> bool:
    return bool(env.get("STY")) and not in_tmux(env)


def tmux_passthrough(sequence: str) -> str:
    return f"{ESC}Ptmux;{sequence.replace(ESC, ESC + ESC)}{ST}"


def screen_passthrough(sequence: str) -> str:
    chunks = [sequence[i : i + SCREEN_CHUNK] for i in range(0, len(sequence), SCREEN_CHUNK)]
    return "".join(f"{ESC}P{chunk}{ST}" for chunk in chunks)


def clipboard_sequence(text: str, env: Mapping[str, str]) -> tuple[str, str]:
    """The bytes to write to the terminal for `text`, and how they travel (for the user's line)."""
    sequence = osc52(text)
    if in_tmux(env):
        return sequence + tmux_passthrough(sequence), "OSC 52 through tmux"
    if in_screen(env):
        return screen_passthrough(sequence), "OSC 52 through screen"
    return sequence, "OSC 52"


def local_tool(env: Mapping[str, str]) -> list[str] | None:
    """A desktop clipboard tool to use too, when this is not an SSH session."""
    if env.get("SSH_CONNECTION") or env.get("SSH_TTY"):
        return None
    for variable, command in TOOLS:
        if env.get(variable) and shutil.which(command[0]):
            return command
    return None


def copy_with_tool(command: list[str], text: str) -> bool:
    try:
        subprocess.run(command, input=text.encode("utf-8"), check=True, timeout=5, capture_output=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def copy(text: str, write: Callable[[str], None], env: Mapping[str, str] | None = None) -> str:
    """Send `text` to the clipboard: OSC 52 through `write` (the terminal), and a local tool
    where there is one. Returns how it went, for the user's line ("OSC 52 through tmux")."""
    env = os.environ if env is None else env
    sequence, how = clipboard_sequence(text, env)
    write(sequence)
    tool = local_tool(env)
    if tool and copy_with_tool(tool, text):
        how += f" and {tool[0]}"
    return how
