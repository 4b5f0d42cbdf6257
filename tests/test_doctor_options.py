"""`hailo-repl doctor` takes every option a check reads, before or after `doctor`, and refuses
a chat's option that no check reads with a line that says so."""

from __future__ import annotations

import re

import pytest
from conftest import run_cli
from ollama_double import OllamaDouble

QWEN = "Qwen2.5-1.5B-Instruct"
OTHER = "Llama-3.2-1B-Instruct"
SERVER_MODEL = "qwen2:1.5b"


def either_side(before: list[str], after: list[str] = ()) -> list[list[str]]:
    """`options doctor`, `doctor options`, and split around it: each must do the same."""
    options = [*before, *after]
    return [[*options, "doctor"], ["doctor", *options], [*before, "doctor", *after]]


def without_timings(text: str) -> str:
    """The doctor's output less the figures the Hailo self-check measures afresh at each run."""
    return re.sub(r"('s device context:).*", r"\1 …", text)


def same_result(argument_lists: list[list[str]], **run) -> tuple[int, str, str]:
    runs = (run_cli(*args, **run) for args in argument_lists)
    results = {(r.returncode, without_timings(r.stdout), r.stderr) for r in runs}
    assert len(results) == 1, results
    return results.pop()


def test_hef_path_names_the_hef_the_doctor_checks(isolated_home, hailo_resources, fake_script):
    directory = hailo_resources(OTHER, QWEN)  # without --hef-path the first found would be checked
    fake_script([["ok"]])

    code, out, err = same_result(either_side(["--backend", "hailo", "--hef-path", QWEN]), fakes=True)

    assert code == 0, out + err
    assert f"✓ LLM HEF {directory / (QWEN + '.hef')} (--hef-path {QWEN})" in out.splitlines()
    assert out.splitlines()[-1] == f"✓ hailo-repl will chat on the Hailo-10H with {QWEN}"
    assert OTHER not in out

    code, out, _ = same_result(either_side(["--backend", "hailo"], ["--hef-path", "Missing-Model"]), fakes=True)
    assert code == 1
    assert "✗ Failed to resolve HEF path: Missing-Model." in out

    # As a chat does, a HEF named with the auto backend asks for the Hailo: llama.cpp is no fallback then.
    code, out, _ = same_result(either_side(["--hef-path", "Missing-Model"]), fakes=True)
    assert code == 1
    assert out.splitlines()[-1] == (
        "✗ the hailo backend cannot chat (--hef-path asks for it: no fallback to llama.cpp): fix the ✗ lines above"
    )


def test_model_names_the_gguf_the_llama_check_reads(isolated_home, tmp_path):
    gguf = tmp_path / "my-model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))

    code, out, err = same_result(either_side(["--backend", "llama"], ["--model", str(gguf)]))

    assert code == 0, out + err
    assert f"✓ llama.cpp ready with {gguf} (--model)" in out.splitlines()
    assert out.splitlines()[-1] == "✓ hailo-repl will chat on llama.cpp on the CPU with my-model.gguf"


def test_a_remote_backends_server_and_model_are_checked(isolated_home):
    with OllamaDouble(models={SERVER_MODEL: 32768, "other:7b": 8192}) as double:
        remote = ["--backend", "ollama", "--url", double.url]
        code, out, err = same_result(either_side(remote, ["--model", SERVER_MODEL]))
        assert code == 0, out + err
        assert f"✓ {double.url} (ollama) answers; models: other:7b, {SERVER_MODEL}" in out.splitlines()
        assert out.splitlines()[-1] == f"✓ hailo-repl will chat on the ollama server with {SERVER_MODEL}"
        assert "Hailo" not in out and "llama.cpp" not in out  # a server's chat needs neither

        code, out, _ = same_result(either_side(remote, ["--model", "missing:1b"]))
        assert code == 1
        assert f"✗ {double.url} (ollama) has no model missing:1b; it has other:7b, {SERVER_MODEL}" in out

    code, out, _ = same_result(either_side(["--backend", "ollama", "--url", "http://127.0.0.1:9"]))
    assert code == 1
    assert "✗ nothing answers at http://127.0.0.1:9" in out
    assert out.splitlines()[-1] == "✗ the ollama backend cannot chat: fix the ✗ lines above"


def test_config_supplies_what_the_flags_do_not(isolated_home, tmp_path):
    gguf = tmp_path / "from-config.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    config = tmp_path / "my-config.yaml"
    config.write_text(f"backend: llama\nmodel: {gguf}\n")

    code, out, _ = same_result(either_side(["--config", str(config)]))

    assert code == 0
    assert out.splitlines()[-1] == "✓ hailo-repl will chat on llama.cpp on the CPU with from-config.gguf"


def test_color_verbose_and_history_change_what_the_doctor_says(isolated_home):
    code, out, _ = same_result(either_side(["--backend", "llama", "--color", "always"]))
    assert code == 0 and out.splitlines()[-1].startswith("\x1b[32m✓\x1b[0m hailo-repl will chat")
    _, plain, _ = same_result(either_side(["--backend", "llama", "--color", "never"]))
    assert "\x1b[" not in plain

    _, out, _ = same_result(either_side(["--backend", "llama"], ["--verbose"]))
    assert out.splitlines()[:2] == [
        f"The checks use (config file {isolated_home / 'config' / 'hailo-repl' / 'config.yaml'}):",
        "  backend: llama  # flag",
    ]

    _, out, _ = same_result(either_side(["--no-history", "--backend", "llama"]))
    assert "✓ history off: a chat writes nothing, so no folder needs to be writable" in out.splitlines()
    assert "folders writable" not in out


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--temperature", "0.3"], "--temperature"),
        (["-p", "hi"], "-p"),
        (["--resume", "abcd"], "--resume"),
        (["--vi"], "--vi"),
        (["--system-prompt=Be brief."], "--system-prompt"),
        (["--list-chats"], "--list-chats"),
    ],
)
def test_a_chats_option_no_check_reads_is_refused_saying_so(isolated_home, options, named):
    for args in (["doctor", *options], [*options, "doctor"]):
        result = run_cli(*args)
        assert result.returncode == 2, args
        assert result.stdout == ""
        assert result.stderr.splitlines()[-1] == (
            f"hailo-repl doctor: error: {named} means nothing to the doctor: it checks what a chat needs, "
            "it does not chat"
        )


def test_an_unknown_option_or_a_setting_that_does_not_fit_the_backend_is_a_usage_error(isolated_home):
    unknown = run_cli("doctor", "--bogus")
    assert unknown.returncode == 2
    assert unknown.stderr.splitlines()[-1] == "hailo-repl doctor: error: unrecognized arguments: --bogus"

    misfit = run_cli("--url", "http://127.0.0.1:9", "doctor", "--backend", "llama")
    assert misfit.returncode == 2
    assert misfit.stderr == "Error: url (flag): needs backend ollama, hailo-ollama or openai\n"
