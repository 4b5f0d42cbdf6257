"""Start-up control, shared by the entry point, the command line, the REPL and the dialogs: the
garbage collector off for the start and back once it is over, and a quiet end when the reader of
stdout goes away. It imports only what Python's own start has (os, sys, gc): shell completion's
quick answer (hailo_repl.entry) uses it too.

Python's cyclic garbage collector is off from hailo_repl.entry until the start is over
(`start_is_over`): before the first prompt it ran ~70 times, 9–16 ms of a 140 ms start (timed with
gc.callbacks to the first frame), while what the start makes (~33,000 objects: modules, classes,
the settings table, the prompt) is nearly all kept for the whole chat.
"""

from __future__ import annotations

import gc
import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, which mypy knows by its name, without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable


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


def collector_off_for_the_start() -> None:
    gc.disable()  # until start_is_over()


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
