"""Whether one answered (or refused) turn has the properties its golden case expects.

The word checks are the evaluation sets' own (``ops.evals.checks``): a word
counts when the reply names it as whole words, ignoring case, so ``42``
does not match "420". Each failed property is one short sentence, so a
failing case reads as a list of what was wrong.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from agentkeel.errors import KeelError
from agentkeel.ops.evals.checks import english_problem, names_answer
from agentkeel.ops.evals.runner import AgentAnswer
from agentkeel.ops.golden.suite import GoldenExpect

__all__ = ["turn_problems"]

_MESSAGE_CHARS = 160


def turn_problems(
    expect: GoldenExpect,
    *,
    answer: AgentAnswer | None = None,
    error: KeelError | None = None,
    english: bool = False,
) -> list[str]:
    """What is wrong with the turn: ``answer`` when the server answered, ``error`` when it
    refused. Empty when every property holds."""
    if error is not None:
        if expect.error is not None and error.code == expect.error:
            return []
        refused = f"refused with {error.code}: {_short(error.message)}"
        if expect.error is not None:
            return [f"{refused} (expected the error {expect.error})"]
        return [refused]
    if answer is None:
        return ["no answer"]
    if expect.error is not None:
        return [f"answered, but the error {expect.error} was expected"]
    problems: list[str] = []
    reply = answer.reply
    problems += [
        f"does not name {word!r}" for word in expect.contains if names_answer(reply, [word]) is None
    ]
    problems += [
        f"names {word!r}" for word in expect.not_contains if names_answer(reply, [word]) is not None
    ]
    if expect.matches is not None and re.search(expect.matches, reply) is None:
        problems.append(f"does not match /{expect.matches}/")
    problems += [_tool_problem(tool, answer.tool_calls) for tool in expect.tool_called]
    if english:
        language = english_problem(reply)
        if language is not None:
            problems.append(language)
    return [problem for problem in problems if problem]


def _tool_problem(tool: str, calls: Sequence[Mapping[str, Any]]) -> str:
    statuses = [str(call.get("status", "")) for call in calls if call.get("name") == tool]
    if "success" in statuses:
        return ""
    if statuses:
        return f"called {tool}, but it ended {', '.join(sorted(set(statuses)))}"
    names = sorted({str(call.get("name")) for call in calls})
    return f"did not call {tool} (called: {', '.join(names) or 'no tool'})"


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 1] + "…"
