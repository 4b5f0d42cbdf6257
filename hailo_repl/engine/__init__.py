"""The engine side of the seam: the chat, its model and the turn in flight (no terminal here).

`hailo_repl.engine.api` is what the terminal side imports; `hailo_repl.engine.local` runs it in
this process. No module here imports prompt_toolkit or pygments (tests/test_layout.py).
"""
