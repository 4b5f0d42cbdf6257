"""Shell completions: the committed scripts are what the parser generates, and bash, zsh
and fish themselves complete flags, choices, subcommands and model names with them."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import pexpect
import pytest
from conftest import run_cli
from terminal import hailo_repl_command

from hailo_repl.cli import completion_parser
from hailo_repl.completions import FILE_NAMES, SHELLS, completion_script

COMPLETIONS = Path(__file__).parent.parent / "completions"
QWEN = "Qwen2.5-1.5B-Instruct"
CODER = "Qwen2.5-Coder-1.5B-Instruct"

# (what is typed, what the shell must offer): the word being completed is the last one.
CASES = [
    ("hailo-repl --te", {"--temperature"}),
    ("hailo-repl --backend ", {"auto", "hailo", "llama", "ollama", "hailo-ollama", "openai"}),
    ("hailo-repl --hef-path Q", {QWEN, CODER}),  # the installed model and the registered ones
    ("hailo-repl con", {"config"}),
    ("hailo-repl completions ", {"bash", "zsh", "fish"}),
]


@pytest.mark.parametrize("shell", SHELLS)
def test_the_committed_scripts_are_what_the_parser_generates(shell):
    committed = (COMPLETIONS / FILE_NAMES[shell]).read_text()
    assert completion_script(shell, completion_parser()) == committed, (
        f"completions/{FILE_NAMES[shell]} is stale: run `python completions/generate.py`"
    )


@pytest.mark.parametrize("shell", SHELLS)
def test_the_completions_subcommand_prints_the_committed_script(shell, isolated_home):
    result = run_cli("completions", shell)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (COMPLETIONS / FILE_NAMES[shell]).read_text()


def test_completions_for_an_unknown_shell_is_a_usage_error(isolated_home):
    result = run_cli("completions", "tcsh")
    assert result.returncode == 2
    assert "invalid choice: 'tcsh'" in result.stderr and "Traceback" not in result.stderr


def test_the_quiet_model_list_is_one_hef_name_a_line(isolated_home, hailo_resources):
    hailo_resources(QWEN, "Llama-3.2-1B-Instruct")
    result = run_cli("--list-models", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [QWEN, CODER, "Llama-3.2-1B-Instruct"]


@pytest.fixture
def shell_env(isolated_home, hailo_resources, tmp_path):
    """hailo-repl on PATH (the scripts run it for model names), a models folder with Qwen,
    and an empty working directory (so no file there matches)."""
    hailo_resources(QWEN)
    workdir = tmp_path / "work"
    workdir.mkdir()
    bin_dir = str(Path(hailo_repl_command()[0]).parent)
    env = {**os.environ, "PATH": os.pathsep.join([bin_dir, os.environ["PATH"]])}
    return env, workdir


def bash_completions(line: str, env: dict, workdir: Path) -> set[str]:
    """Call the completion function as bash's Tab would, with COMP_WORDS and COMP_CWORD."""
    words = shlex.split(line) + ([""] if line.endswith(" ") else [])
    script = (
        f"source {shlex.quote(str(COMPLETIONS / FILE_NAMES['bash']))}\n"
        f"COMP_WORDS=({' '.join(shlex.quote(word) for word in words)})\n"
        f"COMP_CWORD={len(words) - 1}; COMP_LINE={shlex.quote(line)}; COMP_POINT={len(line)}\n"
        "_shtab_hailo_repl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script], env=env, cwd=workdir, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def fish_completions(line: str, env: dict, workdir: Path) -> set[str]:
    """fish's own `complete -C`: what Tab would offer (each candidate, then a tab and its help)."""
    script = f"source {shlex.quote(str(COMPLETIONS / FILE_NAMES['fish']))}; complete -C {shlex.quote(line)}"
    result = subprocess.run(["fish", "--no-config", "-c", script], env=env, cwd=workdir, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return {row.split("\t")[0] for row in result.stdout.splitlines()}


def zsh_completions(line: str, env: dict, workdir: Path) -> set[str]:
    """An interactive zsh in a pty with compinit and the script on fpath; Tab is pressed
    and a compadd wrapper writes every candidate zsh's completion system adds to a file.
    Tab is bound to Tab's own widget followed by a mark in another file: once the mark is
    there, zsh has added all of that Tab's candidates."""
    out, finished = workdir.parent / "zsh-candidates.txt", workdir.parent / "zsh-tab-done"
    out.unlink(missing_ok=True)
    finished.unlink(missing_ok=True)
    zsh = pexpect.spawn("zsh", ["-f", "-i"], env={**env, "TERM": "dumb"}, cwd=str(workdir), encoding="utf-8")
    try:
        zsh.sendline(f"PS1='> '; fpath=({shlex.quote(str(COMPLETIONS))} $fpath); autoload -Uz compinit; compinit -u -D")
        zsh.sendline(
            'compadd() { local -a found; builtin compadd -O found "$@"; '
            f'print -rl -- $found >> {shlex.quote(str(out))}; builtin compadd "$@"; }}'
        )
        zsh.sendline(
            f"tab_then_mark() {{ zle expand-or-complete; : >> {shlex.quote(str(finished))}; }}; "
            "zle -N tab_then_mark; bindkey '^I' tab_then_mark"
        )
        zsh.sendline("print set''up done")
        zsh.expect("setup done", timeout=30)
        zsh.send(line + "\t")
        deadline = time.monotonic() + 30
        while not finished.exists() and time.monotonic() < deadline:
            zsh.expect([pexpect.TIMEOUT, pexpect.EOF], timeout=0.05)
    finally:
        zsh.close(force=True)
    assert finished.exists(), f"zsh's Tab never finished for {line!r}"
    assert out.exists(), f"zsh offered nothing for {line!r}"
    return set(out.read_text().split())


@pytest.mark.needs("bash")
@pytest.mark.parametrize(("line", "expected"), CASES)
def test_bash_completes(line, expected, shell_env):
    assert bash_completions(line, *shell_env) == expected


@pytest.mark.needs("fish")
@pytest.mark.parametrize(("line", "expected"), CASES)
def test_fish_completes(line, expected, shell_env):
    assert fish_completions(line, *shell_env) == expected


@pytest.mark.e2e
@pytest.mark.needs("zsh")
@pytest.mark.parametrize(("line", "expected"), CASES)
def test_zsh_completes(line, expected, shell_env):
    assert zsh_completions(line, *shell_env) == expected


@pytest.mark.needs("bash", "fish")
def test_path_settings_complete_file_names(shell_env):
    env, workdir = shell_env
    (workdir / "tiny.gguf").write_bytes(b"GGUF")
    (workdir / "my.yaml").write_text("")
    assert bash_completions("hailo-repl --model ti", env, workdir) == {"tiny.gguf"}
    assert bash_completions("hailo-repl --config m", env, workdir) == {"my.yaml"}
    assert fish_completions("hailo-repl --model ti", env, workdir) == {"tiny.gguf"}


def test_quiet_without_list_models_is_a_usage_error(isolated_home):
    result = run_cli("-q", "-p", "hi")
    assert result.returncode == 2
    assert "argument -q/--quiet: only with --list-models" in result.stderr
