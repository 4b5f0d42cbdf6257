"""The `hailo-repl` command (and `python -m hailo_repl`): hailo_repl.cli, except for one question.

Shell completion runs `hailo-repl --list-models --quiet` at each Tab after --hef-path, so that
one is answered here with hailo_repl.model_names alone: through the command line (argparse, the
settings table's dataclasses, the config file) it took 2.4 times a bare interpreter's start. This
module imports only what Python's own start has (os, sys, gc) for the same reason.

Python's cyclic garbage collector is off from here until the start is over (`start_is_over`):
before the first prompt it ran ~70 times, 9–16 ms of a 140 ms start (timed with gc.callbacks
to the first frame), while what the start makes (~33,000 objects: modules, classes, the settings
table, the prompt) is nearly all kept for the whole chat.
"""

from __future__ import annotations

import gc
import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, which mypy knows by its name, without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable

MODEL_NAMES_QUESTIONS = (["--list-models", "--quiet"], ["--list-models", "-q"])  # as completions/ ask


def print_model_names() -> int:
    """The names --hef-path takes, one a line."""
    from hailo_repl.model_names import downloaded_llm_names, hef_names, models_directory

    for name in hef_names(downloaded_llm_names(models_directory())):
        print(name)
    return 0


def quiet_when_the_reader_goes(run: Callable[[], int]) -> int:
    """`run()`'s exit code; a reader that goes away (`| head`) ends it quietly with 141, as other CLIs do."""
    try:
        try:
            return run()
        finally:
            if sys.stdout is not None:
                sys.stdout.flush()  # here, not at exit: a closed pipe is found where it can be handled
    except BrokenPipeError:
        import contextlib
        import signal

        with contextlib.suppress(OSError, ValueError, AttributeError):  # no error at exit's flush either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def start_is_over() -> None:
    """The start is over: the REPL's first prompt is up (app.Repl), or what comes next takes long
    and is no longer the start (a model loaded before the prompt, a `-p` run, a subcommand, the
    model picker, a download). What the start made mostly lives as long as the process, so later
    collections leave it out (gc.freeze: its ~700 garbage objects, ~150 KB, stay too, which costs
    less than the 17–33 ms a collection would take here), and the collector runs again. A run that
    ends soon after its start (a listing, --show-config) ends without it. Nothing happens where
    main() did not stop the collector (tests call cli.main)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def main() -> int:
    if sys.argv[1:] in MODEL_NAMES_QUESTIONS:
        return quiet_when_the_reader_goes(print_model_names)
    gc.disable()  # until start_is_over()
    from hailo_repl.cli import main as command_line

    return command_line()
