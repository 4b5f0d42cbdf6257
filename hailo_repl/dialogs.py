"""What hailo-repl asks or shows in the terminal before a chat starts: the model picker
and the download progress bar. The backends call these through the callbacks they are
given, so they never draw anything themselves."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from hailo_repl import models
from hailo_repl.startup import start_is_over


def choose_model(names: list[str]) -> str:
    """A numbered choice among the models (installed HEFs, or a server's), arrow keys and digits."""
    from prompt_toolkit.shortcuts import choice

    start_is_over()  # a person's choice: the start is no longer what is waited for

    return choice(
        message="Several models are available. Which one?",
        options=[(name, name) for name in names],  # choice() numbers them
    )


def download_with_progress(notify: Callable[[str], None]) -> Callable[[str, Path], Path]:
    """A downloader for registered models that says what it fetches, with a progress bar
    on a terminal."""

    def download(name: str, directory: Path) -> Path:
        start_is_over()  # minutes of work, with a progress bar redrawn all along: the collector runs again
        notify(f"{name} is registered but not downloaded; downloading it to {directory}")
        if not sys.stderr.isatty():
            return models.download_model(name, directory)
        from prompt_toolkit.output import create_output
        from prompt_toolkit.shortcuts import ProgressBar
        from prompt_toolkit.shortcuts.progress_bar.base import ProgressBarCounter

        with ProgressBar(title=f"Downloading {name}", output=create_output(stdout=sys.stderr)) as bar:
            counter: ProgressBarCounter[object] = bar(label=f"{name}.hef")

            def report(done: int, total: int | None) -> None:
                counter.total = total
                counter.items_completed = done
                bar.invalidate()

            path = models.download_model(name, directory, report)
            counter.done = True
            return path

    return download
