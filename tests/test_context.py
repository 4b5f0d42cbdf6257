"""Context gauge and the policy when the next turn would not fit."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hailo_repl.context import ContextOverflowError, ContextUsage, fit_history


def test_usage_text_and_levels():
    usage = ContextUsage(847, 4096)
    assert usage.short() == "ctx 847/4096 (20%)"
    assert usage.level == "ok"
    assert ContextUsage(2900, 4096).level == "warn"  # 70%
    assert ContextUsage(3700, 4096).level == "full"  # 90%


def test_bar_matches_hailo_apps_context_bar():
    assert ContextUsage(847, 4096).bar() == "[Info] Context: [██████░░░░░░░░░░░░░░░░░░░░░░░░] 847/4096 (20%)"


def test_bar_is_clamped_when_the_device_passes_capacity():
    assert "[" + "█" * 30 + "]" in ContextUsage(5000, 4096).bar()


def words(messages):
    return sum(len(m["content"].split()) + 1 for m in messages)


def conversation(turns):
    messages = [{"role": "system", "content": "be brief"}]
    for index in range(turns):
        messages += [
            {"role": "user", "content": f"question {index} " * 5},
            {"role": "assistant", "content": f"answer {index} " * 5},
        ]
    return messages


def test_everything_is_kept_when_it_fits():
    messages = conversation(3) + [{"role": "user", "content": "new"}]
    fitted = fit_history(messages, words, capacity=1000, reserve=100)
    assert fitted.messages == messages and fitted.dropped_turns == 0


def test_oldest_turns_go_first_and_the_system_prompt_stays():
    messages = conversation(5) + [{"role": "user", "content": "newest question"}]
    fitted = fit_history(messages, words, capacity=60, reserve=20)
    assert fitted.dropped_turns > 0
    assert fitted.messages[0] == messages[0]
    assert fitted.messages[-1] == messages[-1]
    assert fitted.messages[1:] == messages[1 + 2 * fitted.dropped_turns :]
    assert words(fitted.messages) + 20 <= 60
    # and no more was dropped than needed
    one_less = [messages[0]] + messages[1 + 2 * (fitted.dropped_turns - 1) :]
    assert words(one_less) + 20 > 60


def test_a_message_too_big_for_the_context_is_refused_with_a_reason():
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "w " * 500}]
    with pytest.raises(ContextOverflowError, match="max-tokens"):
        fit_history(messages, words, capacity=100, reserve=10)


def _turns(sizes):
    messages = [{"role": "system", "content": "s"}]
    for number, size in enumerate(sizes):
        messages += [{"role": "user", "content": f"q{number} " + "w " * size}, {"role": "assistant", "content": "a"}]
    return messages


def _words(messages):
    return sum(len(m["content"].split()) for m in messages)


@given(st.lists(st.integers(0, 40), min_size=1, max_size=30), st.integers(20, 400))
def test_the_fewest_oldest_turns_are_dropped(sizes, capacity):
    messages = _turns(sizes)
    try:
        fitted = fit_history(messages, _words, capacity, reserve=5)
    except ContextOverflowError:
        assert _words([messages[0], *messages[-2:]]) + 5 > capacity
        return
    assert _words(fitted.messages) + 5 <= capacity
    if fitted.dropped_turns:  # one turn fewer dropped would not have fitted
        one_more = [messages[0], *messages[1 + 2 * (fitted.dropped_turns - 1) :]]
        assert _words(one_more) + 5 > capacity


def test_fitting_a_long_chat_counts_tokens_a_logarithmic_number_of_times():
    """A /load of thousands of turns must not count the whole chat once per dropped turn."""
    counts = []

    def counting(messages):
        counts.append(len(messages))
        return _words(messages)

    fitted = fit_history(_turns([10] * 10_000), counting, capacity=2_000, reserve=100)
    assert fitted.dropped_turns > 9_000
    assert len(counts) <= 2 * 14 + 2  # log2(10,000) ≈ 13.3 bisection steps
