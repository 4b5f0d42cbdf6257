"""One settings table: the flags, /set and GenerationParams take their ranges and defaults from it."""

import pytest

from hailo_repl.backends.base import GenerationParams
from hailo_repl.cli import build_parser
from hailo_repl.settings import GENERATION_SETTINGS, SETTINGS, SettingError


def test_generation_params_start_at_the_tables_defaults():
    params = GenerationParams()
    assert {s.name: getattr(params, s.attribute) for s in GENERATION_SETTINGS} == {
        "temperature": 0.7,
        "max-tokens": 512,
        "top-p": None,
    }


def test_the_flags_default_to_the_table():
    args = build_parser().parse_args([])
    for setting in GENERATION_SETTINGS:
        assert getattr(args, setting.attribute) == setting.default


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
