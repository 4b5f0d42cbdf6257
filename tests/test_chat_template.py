"""Chat templates rendered as HailoRT renders them (google/minja, as hailo-ai/hailort v5.2.0 uses it).

Golden renderings of the templates of the models Hailo ships for the Hailo-10H, for what the
hailo backend sends: the system prompt alone (kept per HEF), a context's first prompt, and a
later prompt after minja_wrapper.cpp's "TMP" probe cut (a turn after a loaded context).

Where the templates come from (tests/data/chat_templates/; Hugging Face itself is not
reachable here, so each is the copy the code search had, byte for byte):
- Llama-3.2-Instruct.jinja: llama.cpp models/templates/meta-llama-Llama-3.2-3B-Instruct.jinja
  (ggerganov/llama.cpp at 7b5e080, written by scripts/get_chat_template.py from the model's
  tokenizer_config.json). It is the 3B's; the 1B ships the same Llama 3.2 template as far as
  known here (not checked against the 1B's own file).
- DeepSeek-R1-Distill-Qwen.jinja: llama.cpp models/templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja
  (ggerganov/llama.cpp at f0d3ff2); the 32B's, the family's template (the 1.5B's own file not checked).
- Qwen2.5-Instruct.jinja: the Qwen2.5-Instruct template as quoted whole in a public test
  (the code search's copy: "QWEN_TPL" of a tests/test_tools.py); Qwen2.5-1.5B-Instruct and
  Qwen2.5-Coder-1.5B-Instruct both ship it, so one file serves both (not checked against
  either model's own tokenizer_config.json).
- Qwen2-Instruct.jinja: the Qwen2-Instruct template as quoted in public code (e.g. a
  tokenizer.chat_template assignment); not checked against Qwen2-1.5B-Instruct's own file.
minja's own goldens for these models (its tests/CMakeLists.txt lists Qwen2.5-1.5B-Instruct,
Llama-3.2-1B-Instruct and DeepSeek-R1-Distill-Qwen-1.5B) are generated at build time and
not stored, so every expected string below is derived by hand from the template and minja's
rules (chat_template.py's docstring), and says so.
"""

import time
from pathlib import Path

import pytest

from hailo_repl.backends.chat_template import ChatTemplate, TemplateError

TEMPLATES = Path(__file__).parent / "data" / "chat_templates"
SYSTEM = {"role": "system", "content": "Answer in one word."}
FIRST = {"role": "user", "content": "What is the capital of France?"}
LATER = {"role": "user", "content": "And of Germany?"}  # after the device holds the reply "Paris."


@pytest.fixture(autouse=True)
def minja_test_date(monkeypatch):
    """strftime_now on a fixed day, not the Llama template's own fallback date (26 Jul 2024): a
    renderer without strftime_now fails."""
    monkeypatch.setattr(time, "localtime", lambda *when: time.strptime("2025-02-03", "%Y-%m-%d"))


def template(name: str) -> ChatTemplate:
    return ChatTemplate((TEMPLATES / name).read_text(encoding="utf-8"))


QWEN25_SYSTEM = "<|im_start|>system\nAnswer in one word.<|im_end|>\n"
LLAMA_SYSTEM = (
    "<|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 03 Feb 2025\n\n"
    "Answer in one word.<|eot_id|>"
)

# (template file, system prompt alone, first prompt, later prompt), each derived by hand.
GOLDEN = [
    pytest.param(
        "Qwen2.5-Instruct.jinja",
        QWEN25_SYSTEM,
        QWEN25_SYSTEM + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        # The probe renders Qwen's default system prompt, which the cut removes.
        "<|im_start|>user\nAnd of Germany?<|im_end|>\n<|im_start|>assistant\n",
        id="Qwen2.5-1.5B-Instruct and Qwen2.5-Coder-1.5B-Instruct",
    ),
    pytest.param(
        "Qwen2-Instruct.jinja",
        QWEN25_SYSTEM,
        QWEN25_SYSTEM + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        # Qwen2's template renders the TMP message itself, after its default system prompt: both cut.
        "<|im_start|>user\nAnd of Germany?<|im_end|>\n<|im_start|>assistant\n",
        id="Qwen2-1.5B-Instruct",
    ),
    pytest.param(
        "Llama-3.2-Instruct.jinja",
        # bos_token is empty (minja_wrapper.cpp passes ""), so no <|begin_of_text|> here.
        LLAMA_SYSTEM,
        LLAMA_SYSTEM
        + "<|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>"
        + "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|start_header_id|>user<|end_header_id|>\n\nAnd of Germany?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        id="Llama-3.2-1B-Instruct",
    ),
    pytest.param(
        "DeepSeek-R1-Distill-Qwen.jinja",
        "Answer in one word.",
        "Answer in one word.<｜User｜>What is the capital of France?<｜Assistant｜><think>\n",
        "<｜User｜>And of Germany?<｜Assistant｜><think>\n",  # the probe renders nothing
        id="DeepSeek-R1-Distill-Qwen-1.5B",
    ),
]


@pytest.mark.parametrize(("name", "system_alone", "first", "later"), GOLDEN)
def test_the_shipped_templates_render_as_minja_renders_them(name, system_alone, first, later):
    chat_template = template(name)
    assert chat_template.render([SYSTEM], add_generation_prompt=False) == system_alone
    assert chat_template.first([SYSTEM, FIRST]) == first
    assert chat_template.later([LATER]) == later
    assert chat_template.supports_system_role and not chat_template.requires_typed_content


def test_llama_renders_today_and_the_probe_message_itself():
    """Llama 3.2's system block carries today's date, and it renders the TMP message as a turn:
    minja_wrapper.cpp cuts both off a later prompt."""
    llama = template("Llama-3.2-Instruct.jinja")
    assert llama.probe == (
        "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
        "Today Date: 03 Feb 2025\n\n<|eot_id|><|start_header_id|>TMP<|end_header_id|>\n\nTMP<|eot_id|>"
    )


# minja's own whitespace cases with trim_blocks and lstrip_blocks (google/minja tests/test-syntax.cpp,
# TEST(SyntaxTest, SimpleCases), the lstrip_trim_blocks expectations, which Jinja2 passes too).
MINJA_SYNTAX_CASES = [
    ("  {% set _ = 1 %}    {% set _ = 2 %}b", "    b"),
    ("{%- if True %}        {% set _ = x %}{%- endif %}{{ 1 }}", "        1"),
    ("    {% if True %}\n    {% endif %}", ""),
    ("  {% set _ = 1 %}    ", "    "),
    ("  \n    {% set _ = 1 %}        \n                ", "  \n        \n                "),
    ("{% set _ = 1 %}\n  ", "  "),
    ("\n  {% if true %}Hello{% endif %}  \n...\n\n", "\nHello  \n...\n"),
    ("a\nb\n", "a\nb"),
]


@pytest.mark.parametrize(("source", "expected"), MINJA_SYNTAX_CASES)
def test_whitespace_is_trimmed_as_minja_trims_it(source, expected):
    assert ChatTemplate(source).render([], add_generation_prompt=False) == expected


def test_a_lines_indentation_before_an_expression_goes_as_in_minja_not_as_in_jinja2():
    """minja.hpp `Parser::parseTemplate` lstrips the text before any tag, `{{` included; Jinja2's
    lstrip_blocks only before `{%` and `{#`. Derived by hand from that code: the indentation
    before the second line's `{{` goes (Jinja2 keeps it: "  <user>\n  x\n"); the first line's
    stays, text precedes its `{{`; the newline after a block tag goes (trim_blocks)."""
    source = "{% for m in messages %}\n  <{{ m['role'] }}>\n  {{ m['content'] }}\n{% endfor %}\n"
    rendered = ChatTemplate(source).render([{"role": "user", "content": "x"}], add_generation_prompt=False)
    assert rendered == "  <user>\nx\n"


def test_trim_and_strip_remove_only_what_minja_strips():
    """minja.hpp `strip`: " \\t\\n\\r" only; Python's str.strip would also take U+00A0 and U+3000."""
    source = "{% for m in messages %}[{{ m['content'] | trim }}|{{ m['content'].strip() }}]{% endfor %}"
    rendered = ChatTemplate(source).render([{"role": "user", "content": " \u00a0Hi\u3000\n"}])
    assert rendered == "[\u00a0Hi\u3000|\u00a0Hi\u3000]"


def test_a_template_without_a_system_role_gets_minjas_polyfill():
    """chat-template.hpp `chat_template::apply`: system messages are folded into the next user
    message, joined by a newline (derived by hand from that code)."""
    no_system = (
        "{% for m in messages %}{% if m['role'] != 'system' %}<{{ m['role'] }}>{{ m['content'] }}{% endif %}"
        "{% endfor %}"
    )
    chat_template = ChatTemplate(no_system)
    assert not chat_template.supports_system_role
    rendered = chat_template.render([SYSTEM, FIRST, {"role": "assistant", "content": "Paris."}])
    assert rendered == "<user>Answer in one word.\nWhat is the capital of France?<assistant>Paris."


def test_a_template_that_refuses_a_system_role_renders_as_in_llama_cpps_test_data():
    """google/gemma-7b-it, from llama.cpp tests/test-chat-template.cpp (ggml-org/llama.cpp at
    03f94f1, `main_automated_tests`): its template and conversation, and its
    expected_output_jinja (the system message folded into the first user message)."""
    gemma = ChatTemplate(
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
        "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
    )
    conversation = [
        {"role": "system", "content": "You are a helpful assistant"},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there"},
        {"role": "user", "content": "Who are you"},
        {"role": "assistant", "content": "   I am an assistant   "},
        {"role": "user", "content": "Another question"},
    ]
    assert gemma.render(conversation) == (
        "<start_of_turn>user\nYou are a helpful assistant\nHello<end_of_turn>\n<start_of_turn>model\nHi there"
        "<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\nI am an assistant"
        "<end_of_turn>\n<start_of_turn>user\nAnother question<end_of_turn>\n<start_of_turn>model\n"
    )


def test_a_template_that_reads_typed_content_gets_it():
    typed = "{% for m in messages %}{{ m['content'][0]['text'] }};{% endfor %}"
    chat_template = ChatTemplate(typed)
    assert chat_template.requires_typed_content
    assert chat_template.render([FIRST]) == "What is the capital of France?;"


def test_raise_exception_and_a_broken_template_are_one_error_each():
    refusing = ChatTemplate(
        "{% if messages[-1]['role'] != 'user' %}{{ raise_exception('ends with a reply') }}{% endif %}ok"
    )
    assert refusing.render([FIRST]) == "ok"
    with pytest.raises(TemplateError, match="ends with a reply"):
        refusing.render([FIRST, {"role": "assistant", "content": "Paris."}])
    with pytest.raises(TemplateError, match="does not compile"):
        ChatTemplate("{% for message in %}")


def test_jinja2_is_imported_only_when_a_template_is_compiled():
    import subprocess
    import sys

    probe = "import sys, hailo_repl.backends.chat_template, hailo_repl.backends.hailo; print('jinja2' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
