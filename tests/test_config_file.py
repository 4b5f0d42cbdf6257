"""config.yaml: every bad input named by file, line and column; --init; saving one key
without losing the rest; and the installed hailo-repl reading it under flags and env."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from conftest import run_cli

from hailo_repl.config_file import (
    ConfigFileError,
    init_text,
    load_config,
    parse_config,
    save_setting,
    write_init,
)
from hailo_repl.settings import SETTINGS, SETTINGS_TABLE

QWEN = "Qwen2.5-1.5B-Instruct"
PATH = Path("/home/u/.config/hailo-repl/config.yaml")


def test_a_file_sets_keys_of_every_kind_and_says_where(tmp_path):
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF....")
    text = (
        "# my settings\n"
        "temperature: 0.2\n"
        "max-tokens: 64   # short replies\n"
        f"model: {gguf}\n"
        "backend: llama\n"
        "history: false\n"
        "vi-mode: yes\n"
        "system-prompt: |\n  Answer in French.\n"
        "top-p: null\n"
    )
    values = parse_config(PATH, text)
    assert {name: found.value for name, found in values.items()} == {
        "temperature": 0.2,
        "max-tokens": 64,
        "model": str(gguf),  # a file for llama, a name for a server: checked once the backend is known
        "backend": "llama",
        "history": False,
        "vi-mode": True,
        "system-prompt": "Answer in French.\n",
        "top-p": None,
    }
    assert values["max-tokens"].where == f"{PATH}:3"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("temperature: 5\n", f"{PATH}:1:14: temperature must be a number from 0.0 to 2.0, not '5'"),
        ("top-p: 0.5\nmax-tokens: 1.5\n", f"{PATH}:2:13: max-tokens must be a whole number above 0, not '1.5'"),
        (
            "backend: gpu\n",
            f"{PATH}:1:10: backend must be one of auto, hailo, llama, ollama, hailo-ollama, openai, not 'gpu'",
        ),
        ("color: true\n", f"{PATH}:1:8: color must be one of auto, always, never, not 'true'"),
        ("history: maybe\n", f"{PATH}:1:10: history must be true or false, not 'maybe'"),
        ("temperature: [1, 2]\n", f"{PATH}:1:14: temperature must be a number from 0.0 to 2.0, not a list"),
        ("system-prompt: {a: 1}\n", f"{PATH}:1:16: system-prompt must be text, not a mapping"),
        ("max-tokens:\n", f"{PATH}:1:12: max-tokens must be a whole number above 0, not empty"),
        ("temprature: 0.2\n", f"{PATH}:1:1: unknown key 'temprature' — did you mean 'temperature'?"),
        ("colour-scheme: dark\n", f"{PATH}:1:1: unknown key 'colour-scheme' — `hailo-repl config` lists the keys"),
        ("verbose: true\nverbose: false\n", f"{PATH}:2:1: verbose is set twice (also at {PATH}:1)"),
        ("temperature: 0.2\n  max-tokens: 3\n", f"{PATH}:2:13: not valid YAML: mapping values are not allowed here"),
        ("- temperature\n", f"{PATH}:1:1: the file must be a mapping of `key: value` lines"),
    ],
)
def test_a_bad_file_is_one_line_naming_file_line_column_key_and_what_is_allowed(text, message):
    with pytest.raises(ConfigFileError) as refused:
        parse_config(PATH, text)
    assert str(refused.value) == message


def test_an_empty_or_comment_only_file_sets_nothing():
    assert parse_config(PATH, "") == {}
    assert parse_config(PATH, "# nothing yet\n") == {}


def test_a_missing_file_is_not_an_error_unless_the_user_named_it(tmp_path):
    assert load_config(tmp_path / "config.yaml") == {}
    with pytest.raises(ConfigFileError, match="no such config file.*--init --config"):
        load_config(tmp_path / "config.yaml", required=True)


def test_init_writes_every_key_commented_at_its_default_0600_in_a_0700_dir(tmp_path):
    path = tmp_path / "config" / "hailo-repl" / "config.yaml"
    write_init(path)
    text = path.read_text()
    assert text == init_text()
    assert parse_config(path, text) == {}  # commented out: the defaults stay the defaults
    for setting in SETTINGS_TABLE:
        assert re.search(rf"^# {re.escape(setting.name)}:", text, re.M), setting.name
    assert "# temperature: 0.7" in text and "# max-tokens: 512" in text and "# backend: auto" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_init_never_overwrites(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("temperature: 0.1\n")
    with pytest.raises(ConfigFileError, match="exists already"):
        write_init(path)
    assert path.read_text() == "temperature: 0.1\n"


def test_saving_a_key_changes_its_value_only(tmp_path):
    path = tmp_path / "config.yaml"
    original = "# mine\ntemperature: 0.7  # warm\n\n# keep this\nmax-tokens: 64\n"
    path.write_text(original)
    save_setting(path, SETTINGS["temperature"], 0.2)
    assert path.read_text() == original.replace("0.7", "0.2")


def test_saving_uncomments_the_init_line_or_adds_one(tmp_path):
    path = tmp_path / "config.yaml"
    write_init(path)
    save_setting(path, SETTINGS["top-p"], 0.9)
    text = path.read_text()
    assert "\ntop-p: 0.9\n" in text and "# top-p:" not in text
    assert text.replace("top-p: 0.9", "# top-p:") == init_text()  # nothing else moved

    plain = tmp_path / "plain.yaml"
    plain.write_text("verbose: true")  # no final newline
    save_setting(plain, SETTINGS["vi-mode"], True)
    assert plain.read_text() == "verbose: true\nvi-mode: true\n"


def test_saving_a_block_text_and_an_empty_value(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("system-prompt: |\n  one\n  two\ntop-p:\nverbose: true\n")
    save_setting(path, SETTINGS["system-prompt"], 'Say "hi"\nthen stop')
    save_setting(path, SETTINGS["top-p"], 1.0)
    assert path.read_text() == 'system-prompt: "Say \\"hi\\"\\nthen stop"\ntop-p: 1.0\nverbose: true\n'
    assert load_config(path)["system-prompt"].value == 'Say "hi"\nthen stop'


def test_saving_follows_a_symlink_and_makes_the_file_0600(tmp_path):
    real = tmp_path / "dotfiles" / "hailo.yaml"
    real.parent.mkdir()
    real.write_text("verbose: true\n")
    link = tmp_path / "config.yaml"
    link.symlink_to(real)
    save_setting(link, SETTINGS["max-tokens"], 99)
    assert link.is_symlink()
    assert real.read_text() == "verbose: true\nmax-tokens: 99\n"
    assert stat.S_IMODE(real.stat().st_mode) == 0o600


def test_saving_into_a_file_it_cannot_extend_leaves_it_as_it_was(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("{verbose: true}\n")
    with pytest.raises(ConfigFileError, match="cannot add max-tokens to this file; add `max-tokens: 3`"):
        save_setting(path, SETTINGS["max-tokens"], 3)
    assert path.read_text() == "{verbose: true}\n"


# ---- the installed hailo-repl -----------------------------------------------------------------


@pytest.fixture
def config_file(isolated_home):
    path = isolated_home / "config" / "hailo-repl" / "config.yaml"
    path.parent.mkdir(parents=True)
    return path


def origins(output: str) -> dict[str, tuple[str, str]]:
    """`hailo-repl config`'s rows: key → (value, origin)."""
    rows = {}
    for line in output.splitlines():
        found = re.match(r"^([a-z-]+): +(.*?) +# (.+)$", line)
        if found:
            rows[found.group(1)] = (found.group(2), found.group(3))
    return rows


def test_config_shows_each_value_and_where_it_came_from(config_file):
    config_file.write_text("temperature: 0.3\nmax-tokens: 100\nhistory: true\n")
    result = run_cli("config", "--max-tokens", "50", env={"HAILO_REPL_NOHISTORY": "1"})
    assert result.returncode == 0, result.stderr
    rows = origins(result.stdout)
    assert rows["temperature"] == ("0.3", f"file {config_file}:1")
    assert rows["max-tokens"] == ("50", "flag")
    assert rows["history"] == ("false", "env HAILO_REPL_NOHISTORY")
    assert rows["backend"] == ("auto", "default")
    assert rows["top-p"] == ("(the backend's)", "default")
    assert set(rows) == set(SETTINGS)
    assert result.stdout.startswith(f"# config file: {config_file}\n")


def test_show_config_flag_and_another_file(config_file, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("backend: llama\n")
    result = run_cli("--show-config", "--vi", env={"HAILO_REPL_CONFIG": str(other)})
    assert result.returncode == 0, result.stderr
    rows = origins(result.stdout)
    assert rows["backend"] == ("llama", f"file {other}:1")
    assert rows["vi-mode"] == ("true", "flag")
    result = run_cli("config", "--config", str(config_file))  # --config wins over the variable
    assert result.returncode == 2 and f"Error: {config_file}: no such config file" in result.stderr
    result = run_cli("config")  # the default file may be missing
    assert result.returncode == 0 and f"# config file: {config_file} (not found)" in result.stdout


def test_config_init_writes_once(config_file):
    result = run_cli("config", "--init")
    assert result.returncode == 0, result.stderr
    assert config_file.read_text() == init_text()
    again = run_cli("config", "--init")
    assert again.returncode == 2
    assert again.stderr.strip() == f"Error: {config_file} exists already; it was left as it is"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("temperature: 9\n", {}, "{path}:1:14: temperature must be a number from 0.0 to 2.0, not '9'"),
        ("tempreature: 0.1\n", {}, "{path}:1:1: unknown key 'tempreature' — did you mean 'temperature'?"),
        ("temperature: 0.1\n", {"HAILO_REPL_CONFIG": "/nowhere/c.yaml"}, "/nowhere/c.yaml: no such config file"),
        (
            "model: x.gguf\nbackend: hailo\n",
            {},
            "model (file {path}:1): a GGUF model runs on the llama backend, not with backend hailo (file {path}:2)",
        ),
        ("model: x.gguf\nbackend: llama\n", {}, "model (file {path}:1): cannot read x.gguf: No such file"),
    ],
)
def test_a_bad_file_stops_the_chat_before_anything_loads(config_file, fake_log, text, env, message):
    config_file.write_text(text)
    result = run_cli("--hef-path", QWEN, "-p", "hi", env=env, fakes=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: " + message.format(path=config_file))
    assert fake_log() == []  # no device opened, no model loaded


def test_the_hailo_backend_with_a_gguf_from_the_file_names_both_origins(config_file, tmp_path):
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF....")
    config_file.write_text(f"model: {gguf}\n")
    result = run_cli("--backend", "hailo", "-p", "hi")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"Error: model (file {config_file}:1): a GGUF model runs on the llama backend, not with backend hailo (flag)"
    )


def test_file_values_reach_the_device_and_flags_win(config_file, hailo_resources, fake_log):
    hailo_resources(QWEN)
    config_file.write_text("temperature: 1.5\nmax-tokens: 7\n")
    result = run_cli("--max-tokens", "5", "-p", "hi", fakes=True)
    assert result.returncode == 0, result.stderr
    (event,) = [event for event in fake_log() if event["event"] == "generate"]
    assert event["temperature"] == 1.5 and event["max_generated_tokens"] == 5


def test_saving_makes_hailo_repls_own_config_folder_private(isolated_home):
    folder = isolated_home / "config" / "hailo-repl"
    folder.mkdir(parents=True, mode=0o755)
    folder.chmod(0o755)
    gguf = isolated_home / "a: b.gguf"  # a name YAML would misread unquoted
    gguf.write_bytes(b"GGUF....")
    save_setting(folder / "config.yaml", SETTINGS["model"], str(gguf))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert load_config(folder / "config.yaml")["model"].value == str(gguf)
