"""The layout follows the seam: the engine side (the chat, its model, the turn in flight) imports
nothing of the terminal, so it can run where no terminal is (the engine process of a later
version); and no two modules import each other, directly or round a circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hailo_repl"
TERMINAL_LIBRARIES = ["prompt_toolkit", "pygments"]

# A turn through the engine, as a process with no terminal would run one.
ENGINE_ALONE = """
import sys
from pathlib import Path
from hailo_repl.backends.base import GenerationParams
from hailo_repl.chat import Chat
from hailo_repl.engine.local import LocalEngine
from hailo_repl.sessions import SessionStore
import hailo_repl.engine.api, hailo_repl.engine.ops, hailo_repl.engine.turns
import hailo_repl.daemon.protocol, hailo_repl.daemon.server, hailo_repl.daemon.connection, hailo_repl.daemon.opening

class Backend:  # the backend protocol, answering "Hi" (tests/scripted.py imports the commands)
    name, model_name, last_prompt_tokens, loads_in_background = "llama", "m", 1, True
    context_used, context_capacity, context_is_estimate = 0, 4096, False
    def load(self): pass
    def stream(self, messages, params, cancel): yield "Hi"
    def count_tokens(self, messages): return sum(len(m["content"].split()) for m in messages)
    def clear(self): pass
    def release(self): pass

engine = LocalEngine(Chat(Backend(), "sys", GenerationParams(), SessionStore(Path(sys.argv[1]))))
engine.load()
assert engine.run_turn("hello", lambda event: None).reason.value == "done"
engine.clear()
engine.quit()
print(" ".join(sorted(sys.modules)))
"""


def test_the_engine_side_imports_nothing_of_the_terminal(tmp_path):
    root = PACKAGE.parent
    result = subprocess.run(
        [sys.executable, "-c", ENGINE_ALONE, str(tmp_path / "sessions")],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    modules = set(result.stdout.split())
    assert "hailo_repl.engine.local" in modules  # it did get that far
    assert "hailo_repl.daemon.server" in modules  # the engine process's side of the socket too
    assert [name for name in modules if name.split(".")[0] in TERMINAL_LIBRARIES] == []
    assert not {"hailo_repl.app", "hailo_repl.render", "hailo_repl.pane", "hailo_repl.toolbar"} & modules


def imports_of(path: Path, module: str, modules: set[str]) -> set[str]:
    """The hailo_repl modules `path` imports, anywhere in it (a function's import too), except
    under `if TYPE_CHECKING:`, which never runs. `from package import submodule` imports the
    submodule, as `import package.submodule` does: the package is an edge only for a name of its own."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - child.level + 1] + ([base] if base else []))
                for alias in child.names:
                    found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
            visit(child)

    visit(tree)
    return {name for name in found if name.startswith("hailo_repl")}


def module_graph() -> dict[str, set[str]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    names = set(modules)
    return {name: imports_of(path, name, names) & names - {name} for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each circle of imports, once (Tarjan's strongly connected components of more than one)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_no_module_imports_another_that_imports_it_back():
    graph = module_graph()
    assert "hailo_repl.cli" in graph["hailo_repl.entry"]  # the checker sees imports inside functions
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
