"""The two checks a reply must pass: it names an accepted answer, and it is English."""

from __future__ import annotations

import pytest

from agentkeel.ops.evals import english_problem, names_answer


def test_an_answer_is_found_as_whole_words_in_any_case() -> None:
    """'7' and 'paris' match as words; '17' and 'seventeen' do not count for 7 and seven."""
    assert names_answer("There are 7 days in a week.", ["7", "seven"]) == "7"
    assert names_answer("Seven.", ["7", "seven"]) == "seven"
    assert names_answer("The capital is PARIS!", ["Paris"]) == "Paris"
    assert names_answer("It has 17 days.", ["7"]) is None
    assert names_answer("seventeen of them", ["seven"]) is None


def test_a_multi_word_answer_matches_as_a_phrase() -> None:
    """'da Vinci' matches across the space, and not inside another word."""
    assert names_answer("It was Leonardo da Vinci.", ["da Vinci"]) == "da Vinci"
    assert names_answer("davincis", ["da Vinci"]) is None


@pytest.mark.parametrize(
    "reply",
    [
        "The capital of France is Paris.",
        "Paris.",
        "There are 7 days in a week.",
        "William Shakespeare wrote Romeo and Juliet.",
        "The capital of Italy is Rome, not Paris.",
        "It's blue, and it doesn't change.",
    ],
)
def test_english_replies_pass(reply: str) -> None:
    """Plain English sentences, and one-word answers, read as English."""
    assert english_problem(reply) is None


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("L'Alma, la France, est une région de l'Europe…", "function words"),
        ("Paris est la capitale de la France.", "function words"),
        ("La capital de España es Madrid.", "function words"),
        ("Die Hauptstadt von Deutschland ist Berlin.", "function words"),
        ("東京は日本の首都です", "not ASCII"),
    ],
)
def test_replies_in_another_language_fail_with_the_reason(reply: str, reason: str) -> None:
    """French (the way SmolLM2 drifts), Spanish, German and Japanese replies are not English,
    and the problem says why."""
    problem = english_problem(reply)
    assert problem is not None
    assert problem.startswith("not English")
    assert reason in problem
