"""Saved chats from the shell: pipes and -p save each turn; -c, --resume, --list-chats, --no-history."""

from __future__ import annotations

import json

from conftest import remember_device, run_cli

QWEN = "Qwen2.5-1.5B-Instruct"


def saved_files(home) -> list:
    directory = home / "data" / "hailo-repl" / "sessions"
    return sorted(p for p in directory.glob("*.json") if not p.name.startswith(".")) if directory.exists() else []


def test_a_pipe_saves_every_turn_and_c_continues_it_with_p(isolated_home, hailo_resources, fake_script, fake_log):
    hailo_resources(QWEN)
    fake_script([["Paris."], ["Berlin."]])

    first = run_cli(stdin="Capital of France?\nOf Germany?\n", fakes=True)
    assert first.returncode == 0, first.stderr
    (path,) = saved_files(isolated_home)
    saved = json.loads(path.read_text())
    assert [m["content"] for m in saved["messages"][1:]] == ["Capital of France?", "Paris.", "Of Germany?", "Berlin."]
    assert saved["backend"] == "hailo" and saved["model"] == QWEN
    # A pipe keeps no device context (each is a whole KV cache): nothing saved, no self-check run.
    assert not any(e["event"] in ("save_context", "prefill") for e in fake_log())
    assert list(isolated_home.rglob("*.ctx")) == []

    fake_script([["You asked about two capitals."]])  # each process reads the script from its start
    again = run_cli("-c", "-p", "What did I ask?", fakes=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "You asked about two capitals."
    assert f"Continuing chat {path.stem}" in again.stderr
    last = [e for e in fake_log() if e["event"] == "generate"][-1]
    assert [m["content"] for m in last["prompt"]][-2:] == ["Berlin.", "What did I ask?"]  # read again
    assert saved_files(isolated_home) == [path]  # the same chat, not a new one
    assert len(json.loads(path.read_text())["messages"]) == 7
    assert list(isolated_home.rglob("*.ctx")) == []


def test_with_the_setting_a_pipe_keeps_its_device_context_and_p_resumes_from_it(
    isolated_home, hailo_resources, fake_script, fake_log
):
    hef = hailo_resources(QWEN) / f"{QWEN}.hef"
    remember_device(hef, isolated_home / "data" / "hailo-repl" / "contexts" / "hailo-device-facts.json")
    fake_script([["Paris."], ["Berlin."]])
    first = run_cli("--device-context-for-scripts", stdin="Capital of France?\nOf Germany?\n", fakes=True)
    assert first.returncode == 0, first.stderr
    (path,) = saved_files(isolated_home)

    fake_script([["You asked about two capitals."]])
    again = run_cli("--device-context-for-scripts", "-c", "-p", "What did I ask?", fakes=True)
    assert again.returncode == 0, again.stderr
    # A new process, an empty device: it loaded the context saved beside the chat and read
    # only the new message, as if it had never stopped.
    generations = [e for e in fake_log() if e["event"] == "generate"]
    held_after_first_run = generations[1]["held"] + generations[1]["inserted"] + "Berlin."
    assert generations[-1]["held"] == held_after_first_run
    assert generations[-1]["inserted"] == "<|im_start|>user\nWhat did I ask?<|im_end|>\n<|im_start|>assistant\n"
    assert path.with_suffix(".ctx").stat().st_mode & 0o777 == 0o600


def test_resume_by_prefix_and_list_chats(isolated_home, hailo_resources, fake_script):
    hailo_resources(QWEN)
    fake_script([["one"]])
    run_cli("-p", "first chat", fakes=True)
    run_cli("-p", "second chat", fakes=True)
    first_id = next(p.stem for p in saved_files(isolated_home) if "first chat" in p.read_text())

    listing = run_cli("--list-chats")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert len(lines) == 2 and any(first_id in line and "first chat" in line for line in lines)

    resumed = run_cli("--resume", first_id[:5], "-p", "more", fakes=True)
    assert resumed.returncode == 0, resumed.stderr
    data = json.loads((saved_files(isolated_home)[0].parent / f"{first_id}.json").read_text())
    assert [m["content"] for m in data["messages"] if m["role"] == "user"] == ["first chat", "more"]


def test_resume_of_an_unknown_id_is_one_line_and_exit_1(isolated_home, hailo_resources):
    hailo_resources(QWEN)
    result = run_cli("--resume", "nope", "-p", "hi", fakes=True)
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: No saved chat has an id starting with 'nope' (--list-chats lists them)"

    nothing = run_cli("-c", "-p", "hi", fakes=True)
    assert nothing.returncode == 1 and "No saved chats to continue" in nothing.stderr


def test_list_chats_with_none_saved(isolated_home):
    result = run_cli("--list-chats")
    assert result.returncode == 0 and "No saved chats" in result.stdout


def test_no_history_writes_nothing_anywhere_under_home(tmp_path, hailo_resources, fake_script):
    hailo_resources(QWEN)
    fake_script([["Hello."], ["Again."]])
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home)}
    for variable in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env[variable] = ""  # unset: the defaults under HOME apply

    for flags, extra in ((["--no-history"], {}), ([], {"HAILO_REPL_NOHISTORY": "1"})):
        result = run_cli(*flags, stdin="hi\nand again\n", env={**env, **extra}, fakes=True)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["Hello.", "Again."]
        fake_script([["Hello."], ["Again."]])
        assert [str(p) for p in home.rglob("*")] == []

    # …while without it the same run saves the chat and the device contexts (so the check above can fail).
    remember_device(
        hailo_resources.directory / f"{QWEN}.hef", home / ".local/share/hailo-repl/contexts/hailo-device-facts.json"
    )
    saved = run_cli("--device-context-for-scripts", stdin="hi\n", env=env, fakes=True)
    assert saved.returncode == 0
    data = home / ".local" / "share" / "hailo-repl"
    assert list((data / "sessions").glob("*.json")) and list((data / "sessions").glob("*.ctx"))
    assert list((data / "contexts").glob("*.ctx"))  # the system prompt's device context


def test_help_says_no_history_writes_nothing_of_the_chat(isolated_home):
    text = " ".join(run_cli("--help").stdout.split())
    assert (
        "--history, --no-history keep this chat on disk: the saved chat, the input history and the log "
        "(off: nothing is written)"
    ) in text
    for flag in ("-c, --continue", "--resume ID", "--list-chats"):
        assert flag in text
    # whole on its line, to be copied, wherever its length puts it (argparse alone broke it at hyphens)
    sessions = isolated_home / "data" / "hailo-repl" / "sessions"
    for columns in ("60", "80", "100"):
        assert str(sessions) in run_cli("--help", env={"COLUMNS": columns}).stdout


def test_a_reply_to_a_pipe_is_not_wrapped(isolated_home, hailo_resources, fake_script):
    hailo_resources(QWEN)
    long_reply = " ".join(f"word{i}" for i in range(60))
    fake_script([[long_reply]])
    result = run_cli("-p", "hi", fakes=True)
    assert result.stdout == long_reply + "\n"
