"""Fitting a conversation into the context window."""

from __future__ import annotations

import pytest

from assistant.errors import MessageTooLong
from assistant.chat.prompting import Turn, fit_history
from tests.fakes import count_words


def history(n_exchanges: int, words: int = 10) -> list[Turn]:
    turns = []
    for i in range(n_exchanges):
        turns.append(Turn("user", f"question{i} " + "q " * words))
        turns.append(Turn("assistant", f"answer{i} " + "a " * words))
    return turns


def test_everything_kept_when_it_fits():
    h = history(3)
    fitted = fit_history("sys", h, "new", count_words, budget=1000)
    assert fitted.dropped_turns == 0
    assert [m["role"] for m in fitted.messages] == ["system"] + [t.role for t in h] + ["user"]
    assert fitted.prompt_tokens == count_words(fitted.messages)


def test_oldest_exchanges_dropped_first_until_it_fits():
    h = history(10)  # each exchange is 2 * (11 + 3) = 28 tokens
    full = count_words(fit_history("sys", h, "new", count_words, 10_000).messages)
    budget = full - 28 * 3  # room for exactly 7 of the 10 exchanges
    fitted = fit_history("sys", h, "new", count_words, budget)
    assert fitted.dropped_turns == 6
    assert fitted.prompt_tokens <= budget
    contents = [m["content"] for m in fitted.messages]
    assert contents[1].startswith("question3") and contents[-1] == "new"
    # The earliest cut that fits: keeping one more exchange would not.
    assert count_words(fit_history("sys", h[4:], "new", count_words, 10_000).messages) > budget


def test_kept_history_never_starts_with_an_answer():
    h = [Turn("assistant", "greeting " * 5)] + history(4)
    for budget in range(20, 200, 7):
        try:
            fitted = fit_history("", h, "new", count_words, budget)
        except MessageTooLong:
            continue
        assert fitted.messages[0]["role"] == "user"


def test_message_alone_too_long_raises_with_numbers():
    with pytest.raises(MessageTooLong, match=r"too long: 1,00\d tokens.*at most 100 tokens"):
        fit_history("", [], "w " * 1000, count_words, budget=100)


def test_no_system_message_when_prompt_blank():
    fitted = fit_history("   ", [], "hi", count_words, 100)
    assert fitted.messages == [{"role": "user", "content": "hi"}]
