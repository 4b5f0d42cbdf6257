"""Context gauge and the policy when the next turn would not fit."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hailo_repl.context import DROP_TO_PERCENT, ContextOverflowError, ContextUsage, fit_history


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


def test_oldest_turns_go_first_down_to_half_the_context_and_the_system_prompt_stays():
    messages = conversation(5) + [{"role": "user", "content": "newest question"}]
    fitted = fit_history(messages, words, capacity=100, reserve=20)
    assert fitted.dropped_turns > 0
    assert fitted.messages[0] == messages[0]
    assert fitted.messages[-1] == messages[-1]
    assert fitted.messages[1:] == messages[1 + 2 * fitted.dropped_turns :]
    assert words(fitted.messages) <= 40  # down to half the 80 the reply leaves, not just under it
    # and no more was dropped than that
    one_less = [messages[0]] + messages[1 + 2 * (fitted.dropped_turns - 1) :]
    assert words(one_less) > 40


def test_when_half_cannot_be_reached_the_newest_turn_alone_is_kept_if_it_fits():
    messages = conversation(2) + [{"role": "user", "content": "big " * 50}]
    fitted = fit_history(messages, words, capacity=100, reserve=20)
    assert fitted.messages == [messages[0], messages[-1]]


def test_after_a_drop_several_turns_follow_without_dropping_again():
    """The hysteresis: a chat at capacity re-reads its history once every several turns,
    not on every turn (which a drop of just enough would do)."""
    messages = [{"role": "system", "content": "be brief"}]
    drops = []
    for turn in range(60):
        messages.append({"role": "user", "content": f"question {turn} " * 3})
        fitted = fit_history(messages, words, capacity=200, reserve=20)
        drops.append(fitted.dropped_turns > 0)
        messages = fitted.messages + [{"role": "assistant", "content": f"answer {turn} " * 5}]
    first = drops.index(True)
    assert 5 <= sum(drops[first:]) <= len(drops[first:]) // 4


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
def test_when_turns_must_go_the_oldest_go_down_to_the_goal(sizes, capacity):
    messages = _turns(sizes)
    turns = len(sizes)
    goal = 5 + (capacity - 5) * DROP_TO_PERCENT // 100

    def keeping(dropped):  # the system prompt and all turns but the `dropped` oldest
        return [messages[0], *messages[1 + 2 * dropped :]]

    try:
        fitted = fit_history(messages, _words, capacity, reserve=5)
    except ContextOverflowError:
        assert _words(keeping(turns - 1)) + 5 > capacity
        return
    assert fitted.messages == keeping(fitted.dropped_turns)
    assert _words(fitted.messages) + 5 <= capacity
    if fitted.dropped_turns == 0:
        return
    assert _words(messages) + 5 > capacity  # nothing is dropped while it all fits
    if _words(fitted.messages) + 5 <= goal:  # down to the goal, and no further
        assert _words(keeping(fitted.dropped_turns - 1)) + 5 > goal
    else:  # the newest turn alone is past the goal, so it is all that is kept
        assert fitted.dropped_turns == turns - 1


def test_fitting_a_long_chat_counts_tokens_a_logarithmic_number_of_times():
    """A /load of thousands of turns must not count the whole chat once per dropped turn."""
    counts = []

    def counting(messages):
        counts.append(len(messages))
        return _words(messages)

    fitted = fit_history(_turns([10] * 10_000), counting, capacity=2_000, reserve=100)
    assert fitted.dropped_turns > 9_000
    assert len(counts) <= 2 * (2 * 14 + 2)  # two searches of log2(10,000) ≈ 13.3 steps each, at most
    assert max(counts) < 1_000  # the whole 20,001-message chat is never counted
