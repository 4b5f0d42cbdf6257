"""Context gauge and the policy when the next turn would not fit."""

import pytest

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
