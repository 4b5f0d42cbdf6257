"""Reading config.yaml with /load's care: a regular file only, a size cap, one line for each
refusal; and a YAML error named at the line where the broken construct opened."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from hailo_repl.cli import main
from hailo_repl.config_file import ConfigFileError, load_config, parse_config

CAP = 1 << 20  # bytes: the size docs/configuration.md gives
PATH = Path("/home/u/.config/hailo-repl/config.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model: x\ntemperature: [oops\n",
            f"{PATH}:2:14: not valid YAML: while parsing a flow sequence that starts here: "
            "expected ',' or ']', but got '<stream end>' (at line 3, column 1)",
        ),
        (
            "system-prompt: 'Be brief.\nmax-tokens: 64\n",
            f"{PATH}:1:16: not valid YAML: while scanning a quoted scalar that starts here: "
            "found unexpected end of stream (at line 3, column 1)",
        ),
        (
            "temperature: 0.2\ntop-p: {a: 1\n",
            f"{PATH}:2:8: not valid YAML: while parsing a flow mapping that starts here: "
            "expected ',' or '}', but got '<stream end>' (at line 3, column 1)",
        ),
        ("temperature: 0.2\n  max-tokens: 3\n", f"{PATH}:2:13: not valid YAML: mapping values are not allowed here"),
        (
            "temperature: [0.2, 0.3\nmax-tokens: 3\n",  # noticed on the next line, opened on this one
            f"{PATH}:1:14: not valid YAML: while parsing a flow sequence that starts here: "
            "expected ',' or ']', but got ':' (at line 2, column 11)",
        ),
        # The file's own mapping opened at 1:1 and is not what broke: the line that did is named.
        (
            "model: x\ntemperature: 0.2\n- 3\nverbose: true\n",
            f"{PATH}:3:1: not valid YAML: expected <block end>, but found '-'",
        ),
        (
            'model: x\nsystem-prompt: "Be brief." always\n',
            f"{PATH}:2:28: not valid YAML: expected <block end>, but found '<scalar>'",
        ),
    ],
)
def test_a_yaml_error_names_the_line_where_the_broken_construct_opened(text, message):
    with pytest.raises(ConfigFileError) as refused:
        parse_config(PATH, text)
    assert str(refused.value) == message


@pytest.mark.timeout(20)
def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigFileError) as refused:
        load_config(fifo, required=True)  # opening it for reading would wait for a writer forever
    assert str(refused.value) == f"{fifo}: it is a FIFO, not a file; the config file must be a file"


def test_a_folder_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigFileError) as refused:
        load_config(tmp_path, required=True)
    assert str(refused.value) == f"{tmp_path}: it is a folder; the config file must be a file"


def test_a_file_over_the_cap_is_refused_unread(tmp_path):
    huge = tmp_path / "config.yaml"
    line = b"# " + b"x" * 1021 + b"\n"  # comments: pyyaml would read it all, slowly, to find nothing
    huge.write_bytes(line * (CAP // len(line) + 1))
    with pytest.raises(ConfigFileError) as refused:
        load_config(huge)
    assert str(refused.value) == f"{huge}: the config file is over 1 MiB, more than hailo-repl reads"

    huge.write_bytes(line * (CAP // len(line) - 1) + b"temperature: 0.3\n")  # under it: read
    assert load_config(huge)["temperature"].value == 0.3


@pytest.mark.timeout(20)
def test_the_command_line_says_it_in_one_line_and_exits_2(tmp_path, isolated_home, capsys, monkeypatch):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115 (closed by pytest's teardown)
    for args in (["--config", str(fifo), "--show-config"], ["config", "--config", str(fifo)]):
        assert main(args) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == f"Error: {fifo}: it is a FIFO, not a file; the config file must be a file\n"


@pytest.mark.parametrize("how", ["flag", "env", "symlink"])
def test_dev_null_as_the_config_file_is_no_settings(how, tmp_path, isolated_home, capsys, monkeypatch):
    """`--config /dev/null`, as pip and ssh users write it: every setting at its default."""
    args = ["config", "--temperature", "0.4"]  # one line not at its default, so the origins are read
    monkeypatch.delenv("HAILO_REPL_DAEMON")  # (conftest keeps the suite's chats in process)
    if how == "flag":
        args += ["--config", os.devnull]
    elif how == "env":
        monkeypatch.setenv("HAILO_REPL_CONFIG", os.devnull)
    else:
        (tmp_path / "config.yaml").symlink_to(os.devnull)
        args += ["--config", str(tmp_path / "config.yaml")]
    assert main(args) == 0
    out, err = capsys.readouterr()
    origins = [line.rsplit("#", 1)[1].strip() for line in out.splitlines() if not line.startswith("#")]
    assert err == "" and origins.count("flag") == 1 and set(origins) == {"flag", "default"}
