"""Write the shell completion scripts in this folder from hailo-repl's argparse parser.

    python completions/generate.py

Never edit the scripts by hand: tests/test_completions.py regenerates them and fails
when the committed files differ.
"""

from __future__ import annotations

from pathlib import Path

from hailo_repl.cli import completion_parser
from hailo_repl.completions import FILE_NAMES, completion_script

HERE = Path(__file__).parent

if __name__ == "__main__":
    for shell, name in FILE_NAMES.items():
        (HERE / name).write_text(completion_script(shell, completion_parser()))
        print(f"wrote {HERE / name}")
