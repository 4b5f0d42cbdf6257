"""The `hailo-repl` command (and `python -m hailo_repl`): hailo_repl.cli, except for one question.

Shell completion runs `hailo-repl --list-models --quiet` at each Tab after --hef-path, so that
one is answered here with hailo_repl.model_names alone: through the command line (argparse, the
settings table's dataclasses, the config file) it took 2.4 times a bare interpreter's start. This
module, and hailo_repl.startup, import only what Python's own start has (os, sys, gc) for the same
reason. The collector is off from here until the start is over (hailo_repl.startup).
"""

from __future__ import annotations

import sys

from hailo_repl.startup import collector_off_for_the_start, quiet_when_the_reader_goes

MODEL_NAMES_QUESTIONS = (["--list-models", "--quiet"], ["--list-models", "-q"])  # as completions/ ask


def main() -> int:
    if sys.argv[1:] in MODEL_NAMES_QUESTIONS:
        from hailo_repl.model_names import print_model_names

        return quiet_when_the_reader_goes(print_model_names)
    collector_off_for_the_start()
    from hailo_repl.cli import main as command_line

    return command_line()
