"""`/set --save` reads the config file with the same care as every start does, and never
writes one that the next start would refuse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hailo_repl.config_file import CONFIG_READ_LIMIT, ConfigFileError, load_config, save_setting
from hailo_repl.settings import SETTINGS


def test_saving_to_a_fifo_is_one_line_not_a_hang(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    code = (
        "import sys; from pathlib import Path\n"
        "from hailo_repl.config_file import ConfigFileError, save_setting\n"
        "from hailo_repl.settings import SETTINGS\n"
        "try:\n    save_setting(Path(sys.argv[1]), SETTINGS['temperature'], 0.3)\n"
        "except ConfigFileError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=30)
    assert result.stdout == f"{fifo}: it is a FIFO, not a file; the config file must be a file\n", result.stderr


def test_a_save_that_would_make_the_file_too_large_to_read_is_refused(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("temperature: 0.2\n")
    prompt = "Be brief. " * (CONFIG_READ_LIMIT // 10)

    with pytest.raises(ConfigFileError) as raised:
        save_setting(config, SETTINGS["system-prompt"], prompt)
    assert str(raised.value) == f"{config}: with system-prompt the config file would be over 1 MiB; not saved"
    assert config.read_text() == "temperature: 0.2\n"
    save_setting(config, SETTINGS["system-prompt"], "Be brief.")
    assert load_config(config)["system-prompt"].value == "Be brief."


def test_saving_to_dev_null_is_one_line(tmp_path):
    with pytest.raises(ConfigFileError) as raised:
        save_setting(Path(os.devnull), SETTINGS["temperature"], 0.3)
    assert str(raised.value) == f"{os.devnull}: it is a device, not a file; the config file must be a file"
