"""The remote backends: Ollama's protocol against a replaying server on 127.0.0.1 (Ollama's and
hailo-ollama's streams), where they connect, and what a user sees when something fails."""

from __future__ import annotations

import threading

import pytest
from conftest import run_cli
from ollama_double import OllamaDouble, Reply, hailo_ollama_reply, ollama_reply

from hailo_repl.backends import BackendChoice, backend_for_model, model_names, open_backend
from hailo_repl.backends.base import BackendError, GenerationParams
from hailo_repl.backends.ollama import OllamaBackend
from hailo_repl.chat import Chat
from hailo_repl.models import ModelNotFoundError
from hailo_repl.servers import Endpoint, ollama_host, resolve_endpoint

MODEL = "qwen2:1.5b"
NO_HAILORT = {"PYTHONPATH": ""}


def chat_on(double: OllamaDouble, model: str = MODEL) -> Chat:
    backend = OllamaBackend(Endpoint(double.url), model, name=double.flavour)
    backend.load()
    return Chat(backend, "Be brief.", GenerationParams(temperature=0.2, max_tokens=64))


def say(chat: Chat, text: str, cancel: threading.Event | None = None) -> str:
    return "".join(chat.reply(text, cancel or threading.Event()))


# --- where the backends connect --------------------------------------------------------


@pytest.mark.parametrize(
    "value, url",
    [
        ("", "http://127.0.0.1:11434"),
        ("0.0.0.0", "http://0.0.0.0:11434"),
        ("pi.local", "http://pi.local:11434"),
        ("pi.local:8000", "http://pi.local:8000"),
        (":8000", "http://127.0.0.1:8000"),
        ("http://pi.local", "http://pi.local:80"),
        ("https://example.com", "https://example.com:443"),
        ("http://10.0.0.5:8000/", "http://10.0.0.5:8000"),
        ("'10.0.0.5:11435'", "http://10.0.0.5:11435"),
        ("[::1]:8000", "http://[::1]:8000"),
        ("::1", "http://[::1]:11434"),
        ("example.com:notaport", "http://example.com:11434"),
        ("example.com:²", "http://example.com:11434"),  # a digit to str.isdigit(), not a number
        ("example.com:٨٠٠٠", "http://example.com:8000"),  # Arabic-Indic digits, read as /set reads them
        ("example.com:99999", "http://example.com:11434"),
        ("http://example.com/ollama", "http://example.com:80/ollama"),
        ("ollama.com", "https://ollama.com:443"),
    ],
)
def test_ollama_host_is_read_as_the_ollama_cli_reads_it(value, url):
    assert ollama_host(value) == url


def test_the_openai_key_goes_only_to_the_url_it_is_paired_with():
    environ = {"OPENAI_BASE_URL": "http://gpu-box:8000/v1/", "OPENAI_API_KEY": "sk-secret"}

    assert resolve_endpoint("openai", None, None, environ) == Endpoint("http://gpu-box:8000/v1", "sk-secret")
    assert resolve_endpoint("openai", "http://gpu-box:8000/v1", None, environ).api_key == "sk-secret"
    assert resolve_endpoint("openai", "http://elsewhere:8000/v1", None, environ) == Endpoint(
        "http://elsewhere:8000/v1", None
    )
    assert resolve_endpoint("openai", "http://elsewhere:8000/v1", "sk-mine", environ).api_key == "sk-mine"
    only_key = {"OPENAI_API_KEY": "sk-secret"}
    assert resolve_endpoint("openai", None, None, only_key) == Endpoint("https://api.openai.com/v1", "sk-secret")
    assert resolve_endpoint("openai", "http://127.0.0.1:8000/v1", None, only_key).api_key is None


def test_ollama_url_comes_from_the_flag_then_ollama_host_and_hailo_ollama_has_its_port():
    environ = {"OLLAMA_HOST": "desk:11500"}
    assert resolve_endpoint("ollama", None, None, environ).url == "http://desk:11500"
    assert resolve_endpoint("ollama", "pi:8000", None, environ).url == "http://pi:8000"
    assert resolve_endpoint("hailo-ollama", None, None, environ).url == "http://127.0.0.1:8000"
    assert resolve_endpoint("hailo-ollama", "http://pi:8000", None, environ).url == "http://pi:8000"
    assert resolve_endpoint("hailo-ollama", "http://pi", None, environ).url == "http://pi:8000"
    assert resolve_endpoint("hailo-ollama", "pi.local", None, environ).url == "http://pi.local:8000"


# --- Ollama's protocol ------------------------------------------------------------------


def test_a_reply_streams_and_the_gauge_shows_the_servers_counts():
    with OllamaDouble([ollama_reply(["The capital", " is", " Paris."], prompt_eval_count=30)]) as double:
        chat = chat_on(double)
        assert chat.usage().capacity == 32768  # qwen2.context_length from /api/show

        assert say(chat, "Capital of France?") == "The capital is Paris."

    usage = chat.usage()
    assert (usage.used, usage.estimated) == (33, False)  # 30 prompt + 3 generated, as the server counted
    assert chat.last_stats.prompt_tokens == 30
    body = double.requests[0]
    assert body["model"] == MODEL and body["stream"] is True
    assert body["options"] == {"temperature": 0.2, "num_predict": 64}
    assert "keep_alive" not in body  # hailo-ollama takes only an integer there


def test_hailo_ollama_sparse_final_line_gives_a_marked_estimate():
    double = OllamaDouble([hailo_ollama_reply(["Hello", " there"])], flavour="hailo-ollama")
    with double:
        chat = chat_on(double)
        assert say(chat, "Hi") == "Hello there"

    usage = chat.usage()
    assert usage.estimated and usage.capacity == 4096  # empty model_info: the stated default
    assert "~" in usage.short() and "estimated" in usage.bar()
    assert usage.used > 2


def test_every_turn_sends_the_whole_conversation_with_replies_as_the_server_sent_them():
    # hailo-ollama reuses its KV cache only when the new prompt extends its last one exactly.
    first = hailo_ollama_reply(["<text>", "  Paris", "</text>", "\n"])
    double = OllamaDouble([first, hailo_ollama_reply(["Rome"])], flavour="hailo-ollama")
    with double:
        chat = chat_on(double)
        assert say(chat, "Capital of France?").strip() == "Paris"
        assert say(chat, "And of Italy?") == "Rome"

    sent = double.requests[1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[2]["content"] == "<text>  Paris</text>\n"  # not the cleaned "Paris"
    assert chat.messages[2]["content"] == "Paris"  # the conversation keeps what was shown


def test_an_error_line_mid_stream_is_one_line_and_the_partial_reply_is_kept():
    lines = ollama_reply(["Once", " upon"]).lines[:2] + [{"error": "model runner has unexpectedly stopped"}]
    with OllamaDouble([Reply(lines)]) as double:
        chat = chat_on(double)
        pieces = []
        with pytest.raises(BackendError, match="model runner has unexpectedly stopped"):
            for piece in chat.reply("Tell a story", threading.Event()):
                pieces.append(piece)

    assert "".join(pieces) == "Once upon"
    assert chat.messages[-2]["content"] == "Tell a story"
    assert chat.messages[-1] == {"role": "assistant", "content": "Once upon", "interrupted": True}


@pytest.mark.parametrize(
    "reply, says, kept",
    [
        (Reply(ollama_reply(["a", "b", "c"]).lines[:2], drop=True), "closed the connection in the middle", "ab"),
        (Reply(ollama_reply(["a", "b"]).lines[:2]), "ended before the server said it was done", "ab"),
        (Reply(['{"message": {"content": "a"}, "done": false}', "<html>502"]), "other than JSON", "a"),
        (Reply([{"error": "out of memory"}], status=500), "HTTP 500 .*out of memory — check the server's log", None),
        (
            Reply([{"error": "invalid key"}], status=401),
            r"HTTP 401 .*invalid key — check the API key \(--api-key\)",
            None,
        ),
    ],
    ids=["dropped connection", "no done line", "malformed JSON", "HTTP 500", "HTTP 401"],
)
def test_a_broken_stream_is_one_line_that_says_what_to_check(reply, says, kept):
    with OllamaDouble([reply]) as double:
        chat = chat_on(double)
        with pytest.raises(BackendError, match=says) as raised:
            say(chat, "Hi")

    assert "\n" not in str(raised.value)
    if kept is None:  # nothing came back: the conversation is as it was (Up brings the message back)
        assert [m["role"] for m in chat.messages] == ["system"]
    else:  # the question stays, with what came of the answer
        assert chat.messages[1:] == [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": kept, "interrupted": True},
        ]


def test_cancel_closes_the_stream_and_the_server_sees_the_client_go():
    slow = ollama_reply([f"word{i} " for i in range(400)], delay=0.05)
    with OllamaDouble([slow, ollama_reply(["Next."])]) as double:
        chat = chat_on(double)
        cancel = threading.Event()
        pieces = chat.reply("Tell me everything", cancel)
        assert next(pieces) == "word0 "
        cancel.set()
        rest = list(pieces)

        assert double.disconnected.wait(10)
        assert len(rest) < 5
        assert chat.messages[-1]["interrupted"]
        assert say(chat, "Go on") == "Next."


def test_an_unknown_model_fails_at_load_on_ollama_and_on_hailo_ollama():
    for flavour in ("ollama", "hailo-ollama"):
        with OllamaDouble(flavour=flavour) as double:
            backend = OllamaBackend(Endpoint(double.url), "llama9:70b")
            with pytest.raises(BackendError, match="model 'llama9:70b' not found.*--list-models"):
                backend.load()


def test_no_model_named_asks_the_server_and_the_picker():
    models = {"qwen2:1.5b": 32768, "llama3.2:3b": 131072}
    with OllamaDouble(models=models) as double:
        choice = BackendChoice(backend="ollama", url=double.url)
        picked = open_backend(choice, print, choose_model=lambda names: names[-1], download=None)
        assert picked.model_name == "qwen2:1.5b"  # sorted: llama3.2:3b, qwen2:1.5b
        with pytest.raises(ModelNotFoundError, match="several models .*--model NAME"):
            open_backend(choice, print, choose_model=None, download=None)
        assert model_names(picked) == ["llama3.2:3b", "qwen2:1.5b"]
        other = backend_for_model(picked, "llama3.2:3b")
        other.load()
        assert other.model_name == "llama3.2:3b" and other.context_capacity == 131072
        with pytest.raises(ModelNotFoundError, match="not among the server's models"):
            backend_for_model(picked, "nosuch")


def test_connection_failures_say_what_to_check():
    refused = OllamaBackend(Endpoint("http://127.0.0.1:9"), MODEL)
    with pytest.raises(BackendError, match="nothing answers at http://127.0.0.1:9: is the server running"):
        refused.load()
    unknown_host = OllamaBackend(Endpoint("http://no-such-host.invalid:11434"), MODEL)
    with pytest.raises(BackendError, match="cannot resolve the host name"):
        unknown_host.load()


# --- the installed hailo-repl against the server ----------------------------------------


def test_one_shot_and_pipe_modes_on_ollama(isolated_home):
    replies = [ollama_reply(["Paris."]), ollama_reply(["Hi"]), ollama_reply(["You said hi."])]
    with OllamaDouble(replies) as double:
        one_shot = run_cli("--backend", "ollama", "--url", double.url, "--model", MODEL, "-p", "Capital?")
        piped = run_cli(
            "--backend", "ollama", "--model", MODEL, stdin="hi\nwhat did I say?\n", env={"OLLAMA_HOST": double.url}
        )

    assert (one_shot.returncode, one_shot.stdout, one_shot.stderr) == (0, "Paris.\n", "")
    assert piped.returncode == 0 and piped.stdout == "Hi\nYou said hi.\n"
    assert [m["content"] for m in double.requests[2]["messages"][1:]] == ["hi", "Hi", "what did I say?"]


def test_list_models_asks_the_server(isolated_home):
    with OllamaDouble(models={"qwen2:1.5b": 32768, "qwen2.5-coder:1.5b": 32768}, flavour="hailo-ollama") as double:
        result = run_cli("--backend", "hailo-ollama", "--url", double.url, "--list-models")

    assert result.returncode == 0
    assert result.stdout.splitlines()[1:] == ["qwen2.5-coder:1.5b", "qwen2:1.5b"]


def test_a_server_that_is_not_there_is_one_line_and_exit_1(isolated_home):
    result = run_cli("--backend", "ollama", "--url", "http://127.0.0.1:9", "--model", MODEL, "-p", "hi")

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: nothing answers at http://127.0.0.1:9")


def test_a_failure_mid_reply_keeps_what_came_and_exits_1(isolated_home):
    lines = ollama_reply(["Half", " a reply"]).lines[:2]
    with OllamaDouble([Reply(lines, drop=True)]) as double:
        result = run_cli("--backend", "ollama", "--url", double.url, "--model", MODEL, "-p", "hi")

    assert result.returncode == 1
    assert result.stdout == "Half a reply\n"
    assert "closed the connection in the middle of the reply" in result.stderr


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--url", "http://127.0.0.1:1"], "url (flag): needs backend ollama, hailo-ollama or openai"),
        (["--api-key", "sk"], "api-key (flag): needs backend ollama, hailo-ollama or openai"),
        (["--context-size", "4096"], "context-size (flag): needs backend ollama, hailo-ollama or openai"),
        (["--backend", "ollama", "--context-size", "0"], "argument --context-size: context-size must be"),
        (["--backend", "ollama", "--hef-path", "x.hef"], "hef-path (flag): a HEF runs on the Hailo backend"),
    ],
)
def test_remote_flags_without_a_remote_backend_are_usage_errors(isolated_home, args, flag):
    result = run_cli(*args, "-p", "hi", env=NO_HAILORT)

    assert result.returncode == 2
    assert flag in result.stderr and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if "rror" in line]) == 1


def test_a_slow_first_token_says_we_wait_and_ctrl_c_still_stops_at_once(monkeypatch):
    from hailo_repl.backends import remote

    monkeypatch.setattr(remote, "WAIT_NOTICE_SECONDS", 0.1)  # 5 s in use
    loading = ollama_reply(["Ready."] * 50, wait=5.0, delay=0.05)  # the server loads the model first
    with OllamaDouble([ollama_reply(["Ready."], wait=0.35), loading]) as double:
        chat = chat_on(double)
        notices: list[str] = []
        assert "".join(chat.reply("Hi", threading.Event(), notify=notices.append)) == "Ready."
        assert notices == [f"[Info] waiting for the server… (it may be loading {MODEL}; Ctrl+C stops)"]

        cancel = threading.Event()
        threading.Timer(0.15, cancel.set).start()  # Ctrl+C before the first token
        assert "".join(chat.reply("Again", cancel)) == ""
        assert double.disconnected.wait(10)


def test_a_server_that_stalls_is_reported_not_waited_for_forever(monkeypatch):
    from hailo_repl.backends import remote

    monkeypatch.setattr(remote, "STALL_SECONDS", 0.3)  # 300 s in use
    monkeypatch.setattr(remote, "WAIT_NOTICE_SECONDS", 0.1)
    stuck = ollama_reply(["never"], wait=3.0)
    with OllamaDouble([stuck]) as double:
        chat = chat_on(double)
        notices: list[str] = []
        with pytest.raises(BackendError, match=r"sent nothing for 0\.3 s: check the server \(its log, its load\)"):
            "".join(chat.reply("Hi", threading.Event(), notify=notices.append))

    assert len(notices) == 1 and "waiting for the server" in notices[0]  # it said so before giving up
    assert [m["role"] for m in chat.messages] == ["system"]


def test_the_openai_key_reaches_only_its_paired_server(isolated_home):
    with OllamaDouble() as double:  # an Ollama server refuses /v1/models: the headers are what matter
        api = f"{double.url}/v1"
        run_cli("--backend", "openai", "--url", api, "--list-models", env={"OPENAI_API_KEY": "sk-secret"})
        run_cli("--backend", "openai", "--list-models", env={"OPENAI_API_KEY": "sk-paired", "OPENAI_BASE_URL": api})
        run_cli("--backend", "openai", "--url", api, "--api-key", "sk-given", "--list-models")

    assert double.seen == [
        ("/v1/models", None),
        ("/v1/models", "Bearer sk-paired"),
        ("/v1/models", "Bearer sk-given"),
    ]
