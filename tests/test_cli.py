"""`hailo-repl` as a user runs it without a terminal: main() in this process as a new process
runs it (conftest.run_cli), and the installed command where the process is what is tested (a
reply streaming through a pipe, SIGTERM, llama.cpp's own output, the entry point).

The llama tests use the real llama.cpp with the bundled SmolLM2; the hailo tests put
the hailo_platform double on PYTHONPATH so the real hailo backend code runs against it,
and read back what reached the "device" from HAILO_FAKE_LOG.
"""

from __future__ import annotations

import http.server
import os
import re
import select
import signal
import subprocess
import threading
import time

import pytest
from conftest import hailo_repl_command, run_cli, run_installed
from terminal import with_fakes

from hailo_repl.backends.hailo_device import render_chatml

QWEN = "Qwen2.5-1.5B-Instruct"
CODER = "Qwen2.5-Coder-1.5B-Instruct"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Be concise and clear in your responses."
RELEASE_ORDER = ["clear_context", "llm_release", "vdevice_release"]
NO_HAILORT = {"PYTHONPATH": ""}  # the double stays off the path: no Hailo at all


def stderr_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_one_clean_line(result) -> str:
    """Bad input: one line on stderr, no traceback; returns that line."""
    assert "Traceback" not in result.stderr
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    return lines[0]


def start_cli(*args: str) -> subprocess.Popen:
    """hailo-repl with the double on PYTHONPATH, no terminal, stdout read as it comes."""
    return subprocess.Popen(
        hailo_repl_command() + list(args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=with_fakes(),
    )


def read_until(process: subprocess.Popen, needle: bytes, timeout: float = 60) -> bytes:
    """What stdout has delivered once `needle` is in it (no more reads than needed)."""
    received = b""
    deadline = time.monotonic() + timeout
    fd = process.stdout.fileno()
    while needle not in received:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} never arrived; got {received!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"stdout closed before {needle!r} arrived; got {received!r}"
            received += chunk
    return received


@pytest.fixture
def stop_later():
    """Processes to kill if a test fails before they end."""
    started: list[subprocess.Popen] = []
    yield started.append
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


# --- 2. one-shot on the CPU ------------------------------------------------------------


@pytest.mark.llama
def test_prompt_without_hailo_uses_llama_with_one_notice(isolated_home):
    result = run_installed("-p", "What is the capital of France?", env=NO_HAILORT)

    assert result.returncode == 0, result.stderr
    (notice,) = stderr_lines(result)
    assert "llama.cpp" in notice and "SmolLM2-135M-Instruct" in notice
    assert "Hailo" in notice
    assert result.stdout.strip()


@pytest.mark.llama
def test_pipe_without_hailo_answers_every_line(isolated_home):
    result = run_installed("--max-tokens", "24", stdin="Hi\nWhat did I just say?\n", env=NO_HAILORT)

    assert result.returncode == 0, result.stderr
    assert len(stderr_lines(result)) == 1  # the notice, once, not per turn
    assert result.stdout.strip()


# --- streaming -------------------------------------------------------------------------


def test_reply_streams_to_stdout_while_it_is_generated(isolated_home, hailo_resources, fake_script, stop_later):
    hailo_resources(QWEN)
    # The last word comes 2 s late: the reply is still being generated while the test looks.
    fake_script([{"tokens": ["Alpha", " beta", " gamma", " delta", " epsilon"], "stall_at": 4, "stall_ms": 2000}])
    process = start_cli("-p", "hi")
    stop_later(process)

    first = read_until(process, b"Alpha")

    assert process.poll() is None  # the reply is still being generated
    assert b"epsilon" not in first  # the rest has not been written yet
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert (first + out).decode() == "Alpha beta gamma delta epsilon\n"


# --- 3. pipe mode with history ---------------------------------------------------------


def test_pipe_runs_a_two_turn_conversation_on_the_device(isolated_home, hailo_resources, fake_script, fake_log):
    hailo_resources(QWEN)
    fake_script([["<text>", "Hello", " there", ".", "</text>"], ["You", " said", " Hi", "."]])

    result = run_cli(stdin="Hi\nWhat did I just say?\n", fakes=True)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["Hello there.", "You said Hi."]
    events = fake_log()
    first, second = fake_log.named("generate")
    # The system prompt read first, alone (and kept for the next chat), then the message.
    assert first["held"] + first["inserted"] == render_chatml(
        [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": "Hi"}]
    )
    # The device still holds turn 1: send only the new message, and never wipe it in between.
    assert second["inserted"] == render_chatml([{"role": "user", "content": "What did I just say?"}])
    at = [index for index, event in enumerate(events) if event["event"] == "generate"]
    assert "clear_context" not in fake_log.names()[at[0] : at[1]]
    assert second["usage_before_reply"] > first["usage_before_reply"]


# --- 4. the hailo backend against the double -------------------------------------------


def test_hef_path_by_name_runs_the_hailo_backend(isolated_home, hailo_resources, fake_script, fake_log):
    hailo_resources(QWEN, CODER)
    fake_script([["<text>", "Bonjour", " from", " Hailo", "</text>", "<|im_end|>"]])

    result = run_cli("--hef-path", QWEN, "-p", "hi", fakes=True)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "Bonjour from Hailo\n"
    assert "<text>" not in result.stdout and "<|im_end|>" not in result.stdout
    assert result.stderr == ""  # the device was found: nothing to report
    events = fake_log()
    assert events[0] == {"event": "vdevice_open", "group_id": "SHARED"}
    assert {"event": "llm_open", "hef": f"{QWEN}.hef"} in events
    assert fake_log.names()[-3:] == RELEASE_ORDER


def test_hef_path_takes_a_full_path(isolated_home, hailo_resources, fake_log, tmp_path):
    hailo_resources(QWEN)
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    (elsewhere / "custom-model.hef").write_bytes(b"fake hef")

    result = run_cli("--hef-path", str(elsewhere / "custom-model.hef"), "-p", "hi", fakes=True)

    assert result.returncode == 0, result.stderr
    assert {"event": "llm_open", "hef": "custom-model.hef"} in fake_log()


def test_without_hef_path_the_only_model_is_used(isolated_home, hailo_resources, fake_log):
    hailo_resources(CODER, "yolov8m", "Whisper-Base-Instruct")

    result = run_cli("-p", "hi", fakes=True)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello from the fake Hailo-10H.\n"
    assert {"event": "llm_open", "hef": f"{CODER}.hef"} in fake_log()


def test_without_hef_path_and_several_models_no_terminal_says_which_to_pass(isolated_home, hailo_resources, fake_log):
    hailo_resources(QWEN, CODER)

    result = run_cli("-p", "hi", fakes=True)

    assert result.returncode != 0
    line = assert_one_clean_line(result)
    assert QWEN in line and CODER in line and "--hef-path" in line
    assert result.stdout == ""
    assert "llm_open" not in fake_log.names()
    assert fake_log.names()[-1] == "vdevice_release"


def test_without_any_model_says_none_are_downloaded(isolated_home, hailo_resources, fake_log):
    hailo_resources("yolov8m")  # a HEF, but not an LLM

    result = run_cli("-p", "hi", fakes=True)

    assert result.returncode != 0
    line = assert_one_clean_line(result)
    assert "No downloaded LLM models found" in line
    assert "--hef-path" in line or "hailo-download-resources" in line  # how to get one
    assert fake_log.names()[-1] == "vdevice_release"


class _Zoo(http.server.BaseHTTPRequestHandler):
    body = b"downloaded hef " * 10_000
    requests: list = []

    def do_GET(self):  # noqa: N802
        self.requests.append(self.path)
        if self.path != f"/{CODER}.hef":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_hef_path_of_a_registered_missing_model_downloads_then_runs(isolated_home, hailo_resources, fake_log):
    directory = hailo_resources()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Zoo)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = run_cli("--hef-path", CODER, "-p", "hi", fakes=True, env={"HAILO_MODEL_ZOO_URL": url})
    finally:
        server.shutdown()
        server.server_close()

    assert result.returncode == 0, result.stderr
    assert _Zoo.requests == [f"/{CODER}.hef"]
    assert (directory / f"{CODER}.hef").read_bytes() == _Zoo.body
    assert [p.name for p in directory.iterdir()] == [f"{CODER}.hef"]
    assert CODER in result.stderr and "download" in result.stderr.lower()
    assert {"event": "llm_open", "hef": f"{CODER}.hef"} in fake_log()
    assert result.stdout.strip()


# --- 5. --list-models ------------------------------------------------------------------


def test_list_models_marks_installed_registered_and_the_bundled_gguf(isolated_home, hailo_resources):
    hailo_resources(QWEN, "Llama-3.2-3B-Instruct", "yolov8m")

    result = run_cli("--list-models")

    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "installed" in rows[QWEN] and "not downloaded" not in rows[QWEN]
    assert "not downloaded" in rows[CODER]
    assert "installed" in rows["Llama-3.2-3B-Instruct"]
    assert "yolov8m" not in result.stdout
    smol = rows["SmolLM2-135M-Instruct"]
    assert "installed" in smol and "SmolLM2-135M-Instruct.Q4_1.gguf" in smol


# --- 6. --verbose ----------------------------------------------------------------------

TIMING_LINES = [
    r"load duration:\s+\d+(\.\d+)?m?s",
    r"prompt eval count:\s+[1-9]\d* token",
    r"prompt eval rate:\s+[\d.]+ tokens/s",
    r"eval count:\s+{count} token",
    r"eval rate:\s+[\d.]+ tokens/s",
    r"time to first token:\s+\d+(\.\d+)?m?s",
]


def test_verbose_prints_the_timing_block_on_stderr(isolated_home, hailo_resources, fake_script):
    hailo_resources(QWEN)
    fake_script([{"tokens": ["One", " two", " three"], "delay_ms": 20}])

    result = run_cli("--verbose", "-p", "hi", fakes=True)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "One two three\n"  # the block stays off stdout
    for pattern in TIMING_LINES:
        assert re.search(pattern.replace("{count}", "3"), result.stderr, re.MULTILINE), pattern


@pytest.mark.llama
def test_verbose_with_llama(isolated_home):
    result = run_installed("--backend", "llama", "--max-tokens", "8", "--verbose", "-p", "hi")

    assert result.returncode == 0, result.stderr
    for pattern in TIMING_LINES:
        assert re.search(pattern.replace("{count}", "[1-8]"), result.stderr), pattern


def test_without_verbose_no_timing_block(isolated_home, hailo_resources):
    hailo_resources(QWEN)
    result = run_cli("-p", "hi", fakes=True)
    assert result.returncode == 0
    assert "eval rate" not in result.stderr and "eval rate" not in result.stdout


# --- 7. --help and --version -----------------------------------------------------------


def test_help_shows_the_flags_and_defaults(isolated_home):
    result = run_cli("--help")

    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # independent of the terminal width
    assert "--hef-path" in text
    assert re.search(r"--max-tokens MAX_TOKENS [^-]*default: 512\)", text)
    assert re.search(r"--temperature TEMPERATURE [^-]*default: 0\.7\)", text)
    assert re.search(r"--system-prompt SYSTEM_PROMPT [^-]*" + re.escape(DEFAULT_SYSTEM_PROMPT), text)
    assert "--backend {auto,hailo,llama,ollama,hailo-ollama,openai}" in text
    assert "--model NAME|PATH.gguf" in text
    assert "--url URL" in text and "--api-key API_KEY" in text and "--context-size TOKENS" in text
    assert "--list-models" in text
    assert re.search(r"-p( PROMPT)?, --prompt PROMPT", text)
    assert "--verbose" in text and "--version" in text


def test_version(isolated_home):
    result = run_installed("--version")
    assert result.returncode == 0
    assert re.fullmatch(r"hailo-repl \d+\.\d+\.\d+\S*\n", result.stdout)


# --- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--temperature", "-1"], "--temperature"),
        (["--temperature", "3"], "--temperature"),
        (["--temperature", "hot"], "--temperature"),
        (["--max-tokens", "0"], "--max-tokens"),
        (["--max-tokens", "-5"], "--max-tokens"),
        (["--max-tokens", "many"], "--max-tokens"),
    ],
)
def test_bad_flag_values_give_one_argparse_error(isolated_home, tmp_path, args, flag):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("just some notes\n")
    args = [str(text_file) if arg == "TEXTFILE" else arg for arg in args]

    result = run_cli(*args, "-p", "hi", env=NO_HAILORT)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert f"argument {flag}" in errors[0]
    assert result.stdout == ""


@pytest.mark.parametrize(("model", "reason"), [("nonexistent.gguf", "No such file"), ("TEXTFILE", "not a GGUF")])
def test_a_model_that_is_not_a_gguf_file_is_one_line_naming_it(isolated_home, tmp_path, model, reason):
    # --model is a server's model name with a remote backend, so it is checked once the backend is known
    text_file = tmp_path / "notes.txt"
    text_file.write_text("just some notes\n")
    result = run_cli("--model", str(text_file) if model == "TEXTFILE" else model, "-p", "hi", env=NO_HAILORT)
    assert result.returncode == 2 and result.stdout == ""
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        line for line in result.stderr.splitlines() if line.startswith("Error: model (flag): ") and reason in line
    ]


def test_unresolvable_hef_path(isolated_home, hailo_resources, fake_log):
    hailo_resources(QWEN)

    result = run_cli("--hef-path", "nosuch", "-p", "hi", fakes=True)

    assert result.returncode == 1
    assert "Failed to resolve HEF path: nosuch" in assert_one_clean_line(result)
    assert result.stdout == ""
    assert fake_log.names()[-1] == "vdevice_release"


def test_no_device_with_backend_hailo(isolated_home, hailo_resources):
    hailo_resources(QWEN)

    result = run_cli("--backend", "hailo", "-p", "hi", fakes=True, env={"HAILO_FAKE_NO_DEVICE": "1"})

    assert result.returncode == 1
    line = assert_one_clean_line(result)
    assert "Failed to create VDevice" in line
    assert "lsmod" in line and "/dev/hailo" in line
    assert result.stdout == ""


@pytest.mark.llama
def test_no_device_with_auto_backend_falls_back_to_llama(isolated_home, hailo_resources, fake_log):
    hailo_resources(QWEN)

    result = run_installed("--max-tokens", "16", "-p", "hi", fakes=True, env={"HAILO_FAKE_NO_DEVICE": "1"})

    assert result.returncode == 0, result.stderr
    notice = assert_one_clean_line(result)
    assert "llama.cpp" in notice and "SmolLM2-135M-Instruct" in notice
    assert result.stdout.strip()
    assert "generate" not in fake_log.names()


def test_backend_failure_mid_stream_keeps_what_was_streamed(isolated_home, hailo_resources, fake_script, fake_log):
    hailo_resources(QWEN)
    fake_script([{"tokens": ["First", " second", " third", " fourth"], "fail_after": 2}])

    result = run_cli("-p", "hi", fakes=True)

    assert result.returncode == 1
    assert result.stdout.startswith("First second")
    assert "third" not in result.stdout
    assert assert_one_clean_line(result).startswith("Error: ")
    assert fake_log.names()[-3:] == RELEASE_ORDER


def test_sigterm_during_a_reply_aborts_and_releases(isolated_home, hailo_resources, fake_script, fake_log, stop_later):
    hailo_resources(QWEN)
    fake_script([{"tokens": ["Tick"] + [" tock"] * 40, "delay_ms": 100}])
    process = start_cli("-p", "hi")
    stop_later(process)

    read_until(process, b"Tick")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)

    assert process.returncode == 128 + signal.SIGTERM  # exited by itself, not killed
    assert "Traceback" not in err.decode()
    assert out.count(b"tock") < 40
    events = fake_log.names()
    assert "abort" in events
    # Then the release: -p keeps no device context (no system prompt read alone, no save).
    assert events[events.index("abort") + 1 :] == RELEASE_ORDER


def test_temperature_zero_is_greedy_decoding(isolated_home, hailo_resources, fake_log):
    hailo_resources(QWEN)

    result = run_cli("--temperature", "0.0", "-p", "hi", fakes=True)

    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello from the fake Hailo-10H.\n"
    (event,) = fake_log.named("generate")
    assert event["do_sample"] is False
    assert event["temperature"] is None


def test_sampling_settings_reach_the_device(isolated_home, hailo_resources, fake_log):
    hailo_resources(QWEN)

    result = run_cli("--temperature", "1.5", "--max-tokens", "7", "-p", "hi", fakes=True)

    assert result.returncode == 0, result.stderr
    (event,) = fake_log.named("generate")
    assert event["do_sample"] is True
    assert event["temperature"] == 1.5
    assert event["max_generated_tokens"] == 7


def test_an_old_hailort_is_named_with_the_version_it_needs(isolated_home, hailo_resources, fake_log):
    hailo_resources(QWEN)

    result = run_cli("-p", "hi", fakes=True, env={"HAILO_FAKE_VERSION": "5.0.1"})

    assert result.returncode == 1
    line = assert_one_clean_line(result)
    assert line.startswith("Error: HailoRT 5.0.1 is installed; hailo-repl needs HailoRT 5.1.1 or later")
    assert "--backend llama" in line
    assert fake_log.names()[-1] == "vdevice_release"
