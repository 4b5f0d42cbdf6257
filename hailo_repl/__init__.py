"""hailo-repl: a terminal chat for LLMs on the Hailo-10H, with llama.cpp on the CPU as fallback."""

# The one place the version is written: pyproject.toml reads it from here (dynamic version),
# so knowing it costs nothing at start-up (importlib.metadata would cost more than a tenth of a
# bare prompt_toolkit start).
__version__ = "0.1.0"
