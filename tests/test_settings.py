"""One settings table: the flags, /set and GenerationParams take their ranges and defaults from it."""

import pytest

from hailo_repl.backends.base import GenerationParams
from hailo_repl.cli import build_parser
from hailo_repl.settings import (
    GENERATION_SETTINGS,
    SETTINGS,
    SETTINGS_TABLE,
    FileValue,
    NumberSetting,
    SettingError,
    resolve,
)


def test_generation_params_start_at_the_tables_defaults():
    params = GenerationParams()
    assert {s.name: getattr(params, s.attribute) for s in GENERATION_SETTINGS} == {
        "temperature": 0.7,
        "max-tokens": 512,
        "top-p": None,
    }


def test_every_setting_has_a_flag_of_its_name():
    parser = build_parser()
    for setting in SETTINGS_TABLE:
        assert f"--{setting.name}" in parser._option_string_actions


@pytest.mark.parametrize(
    ("name", "text", "allowed"),
    [
        ("temperature", "2.5", "a number from 0.0 to 2.0"),
        ("temperature", "hot", "a number from 0.0 to 2.0"),
        ("max-tokens", "0", "a whole number above 0"),
        ("max-tokens", "1.5", "a whole number above 0"),
        ("top-p", "0", "a number above 0.0 up to 1.0"),
        ("top-p", "1.01", "a number above 0.0 up to 1.0"),
    ],
)
def test_a_flag_and_set_refuse_the_same_values_with_the_same_words(name, text, allowed, capsys):
    with pytest.raises(SettingError) as refused:
        SETTINGS[name].parse(text)
    assert str(refused.value) == f"{name} must be {allowed}, not '{text}'"
    with pytest.raises(SystemExit):
        build_parser().parse_args([f"--{name}", text])
    assert f"argument --{name}: {name} must be {allowed}, not '{text}'" in capsys.readouterr().err


def test_the_edges_of_each_range():
    assert SETTINGS["temperature"].parse("0") == 0.0 and SETTINGS["temperature"].parse("2") == 2.0
    assert SETTINGS["top-p"].parse("1") == 1.0
    assert SETTINGS["max-tokens"].parse("1") == 1


def test_minus_zero_is_zero():
    assert str(SETTINGS["temperature"].parse("-0")) == "0.0"


# ---- precedence: flag, then environment variable, then config file, then default ----------

FILE = {"history": FileValue(True, "/c.yaml:2"), "temperature": FileValue(0.3, "/c.yaml:1")}


@pytest.mark.parametrize(
    ("flags", "environ", "file", "name", "value", "origin"),
    [
        ({}, {}, {}, "temperature", 0.7, "default"),
        ({}, {}, FILE, "temperature", 0.3, "file /c.yaml:1"),
        ({"temperature": 1.2}, {}, FILE, "temperature", 1.2, "flag"),
        ({}, {}, {}, "history", True, "default"),
        ({}, {}, FILE, "history", True, "file /c.yaml:2"),
        ({}, {"HAILO_REPL_NOHISTORY": "1"}, FILE, "history", False, "env HAILO_REPL_NOHISTORY"),
        (
            {},
            {"HAILO_REPL_NOHISTORY": "0"},
            {"history": FileValue(False, "/c.yaml:1")},
            "history",
            True,
            "env HAILO_REPL_NOHISTORY",
        ),
        ({}, {"HAILO_REPL_NOHISTORY": ""}, FILE, "history", True, "file /c.yaml:2"),  # empty: not set
        ({"history": True}, {"HAILO_REPL_NOHISTORY": "1"}, FILE, "history", True, "flag"),
    ],
)
def test_a_flag_beats_the_environment_beats_the_file_beats_the_default(flags, environ, file, name, value, origin):
    resolved = resolve(flags, environ, file)
    assert (resolved[name], resolved.origins[name]) == (value, origin)
    assert set(resolved.values) == set(SETTINGS)


def test_the_flags_and_the_file_refuse_the_same_values():
    for setting in SETTINGS_TABLE:
        if isinstance(setting, NumberSetting):
            with pytest.raises(SettingError) as from_file:
                setting.from_file(-1)
            with pytest.raises(SettingError) as from_flag:
                setting.parse("-1")
            assert str(from_file.value) == str(from_flag.value)


def test_switches_read_yaml_and_flag_words():
    vi = SETTINGS["vi-mode"]
    assert vi.from_file(True) is True and vi.parse("off") is False and vi.parse("Yes") is True
    args = build_parser().parse_args(["--vi", "--no-history"])
    assert (args.vi_mode, args.history) == (True, False)


def test_an_environment_variables_bad_value_is_refused_naming_it(monkeypatch):
    # No setting with a checked variable exists yet (HAILO_REPL_NOHISTORY takes any value);
    # one added to the table gets this.
    from hailo_repl import settings

    checked = NumberSetting(
        "temperature", help="t", default=0.7, whole=False, low=0.0, high=2.0, low_allowed=True, env="HAILO_T"
    )
    monkeypatch.setattr(settings, "SETTINGS_TABLE", (checked,))
    assert resolve({}, {"HAILO_T": "1.5"}, {})["temperature"] == 1.5
    with pytest.raises(SettingError) as refused:
        resolve({}, {"HAILO_T": "hot"}, {})
    assert str(refused.value) == "HAILO_T: temperature must be a number from 0.0 to 2.0, not 'hot'"
