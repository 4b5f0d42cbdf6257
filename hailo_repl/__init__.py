"""hailo-repl: a terminal chat for LLMs on the Hailo-10H, with llama.cpp on the CPU as fallback."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hailo-repl")  # the one place it is written is pyproject.toml
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
