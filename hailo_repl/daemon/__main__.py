"""`python -m hailo_repl.daemon`: the engine process (hailo_repl.daemon.lifetime), as
hailo_repl.daemon.spawn starts it: in a session of its own, stdio on /dev/null, cwd /.

    python -m hailo_repl.daemon [--keep-alive SECONDS] [--no-log]
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hailo_repl.daemon", description="hailo-repl's engine process")
    parser.add_argument("--keep-alive", type=float, default=300.0, help="seconds to stay after the last client left")
    parser.add_argument("--no-log", action="store_true", help="write no log file (--no-history)")
    args = parser.parse_args(argv)

    from hailo_repl.daemon.lifetime import run_engine
    from hailo_repl.log import setup_logging

    setup_logging(to_file=not args.no_log)
    return run_engine(args.keep_alive)


if __name__ == "__main__":
    sys.exit(main())
