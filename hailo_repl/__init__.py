"""hailo-repl: a terminal chat for LLMs on the Hailo-10H, with llama.cpp on the CPU as fallback."""

__version__ = "0.1.0"
