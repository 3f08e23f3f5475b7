"""Run a golden suite against one version, directly, and say whether it passed.

The target is an agent server's base URL: a replica of the version under test
(``keel golden run --target``, a blue/green switch, the last step of a
rollback) or a router. The conversations go through the same HTTP driver
as ``keel eval`` (``ops.evals.runner.AgentServerTarget``)::

    report = await run_golden("http://127.0.0.1:8083", load_golden_suite("local-smoke"))
    if not report.passed:
        print(report.failures())

An error answer (a 503, a guardrail's 422) fails its turn, or passes it when
the turn expects that error. A server that does not answer at all raises
``TargetUnreachable``: nothing could be checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from agentkeel.errors import KeelError
from agentkeel.ops.evals.runner import AgentAnswer, AgentServerTarget, TargetUnreachable
from agentkeel.ops.golden.checks import turn_problems
from agentkeel.ops.golden.suite import GoldenCase, GoldenSuite
from agentkeel.telemetry.http import make_async_client

__all__ = [
    "GoldenCaseResult",
    "GoldenChecks",
    "GoldenReport",
    "GoldenTarget",
    "GoldenTurnResult",
    "run_golden",
    "run_golden_suite",
]


class GoldenTarget(Protocol):
    """Something that holds conversations and reports what each turn did."""

    async def start_session(self) -> str: ...

    async def turn(self, session_id: str, content: str) -> AgentAnswer: ...

    async def end_session(self, session_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class GoldenTurnResult:
    """How one turn of a case did."""

    case: str
    turn: int
    user: str
    reply: str | None
    """The reply, or ``None`` when the server refused the turn."""
    tool_calls: tuple[str, ...]
    error: str | None
    """The error code the server refused the turn with, if it did."""
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "turn": self.turn,
            "user": self.user,
            "reply": self.reply,
            "tool_calls": list(self.tool_calls),
            "error": self.error,
            "passed": self.passed,
            "problems": list(self.problems),
        }


@dataclass(frozen=True, slots=True)
class GoldenCaseResult:
    """A case passes when every one of its turns does."""

    name: str
    turns: tuple[GoldenTurnResult, ...]

    @property
    def passed(self) -> bool:
        return all(turn.passed for turn in self.turns)

    @property
    def problems(self) -> list[str]:
        return [f"turn {t.turn}: {problem}" for t in self.turns for problem in t.problems]


@dataclass(frozen=True, slots=True)
class GoldenReport:
    """Every case's result; ``passed`` only when all of them passed."""

    suite: str
    target: str
    cases: tuple[GoldenCaseResult, ...]

    @property
    def passed(self) -> bool:
        return all(case.passed for case in self.cases)

    @property
    def failed(self) -> list[GoldenCaseResult]:
        return [case for case in self.cases if not case.passed]

    @property
    def summary(self) -> str:
        """One line: ``local-smoke against http://…: 4/5 cases passed``."""
        good = len(self.cases) - len(self.failed)
        return f"{self.suite} against {self.target}: {good}/{len(self.cases)} cases passed"

    def failures(self) -> str:
        """The failed cases and why, one per line (empty when all passed)."""
        return "\n".join(f"{case.name}: {'; '.join(case.problems)}" for case in self.failed)

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "target": self.target,
            "passed": self.passed,
            "summary": self.summary,
            "cases": [
                {
                    "name": case.name,
                    "passed": case.passed,
                    "turns": [turn.to_json() for turn in case.turns],
                }
                for case in self.cases
            ],
        }


class GoldenChecks:
    """One suite, run against whichever target is named: what a rollback or a blue/green
    switch is given, so it needs to know only the URL.

    >>> checks = GoldenChecks(load_golden_suite("local-smoke"))
    >>> (await checks.run("http://127.0.0.1:8081")).passed
    """

    def __init__(
        self, suite: GoldenSuite, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.suite = suite
        self._transport = transport

    async def run(self, target: str) -> GoldenReport:
        return await run_golden(target, self.suite, transport=self._transport)


async def run_golden(
    target_url: str,
    suite: GoldenSuite,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    on_case: Callable[[GoldenCaseResult], None] | None = None,
    user_id: str = "golden",
) -> GoldenReport:
    """Run ``suite`` against the agent server at ``target_url`` (one session per case).

    ``transport`` replaces the network (tests, an in-process app); ``on_case``
    sees each case's result as soon as it is known. Raises ``TargetUnreachable``
    when the server does not answer.
    """
    async with make_async_client(
        base_url=target_url, transport=transport, trust_env=False
    ) as client:
        target = AgentServerTarget(client=client, user_id=user_id)
        return await run_golden_suite(suite, target, target_name=target_url, on_case=on_case)


async def run_golden_suite(
    suite: GoldenSuite,
    target: GoldenTarget,
    *,
    target_name: str,
    on_case: Callable[[GoldenCaseResult], None] | None = None,
) -> GoldenReport:
    """Run ``suite`` against any ``GoldenTarget``; see ``run_golden``."""
    results: list[GoldenCaseResult] = []
    for case in suite.cases:
        result = await _run_case(case, target, english=suite.english)
        results.append(result)
        if on_case is not None:
            on_case(result)
    return GoldenReport(suite=suite.name, target=target_name, cases=tuple(results))


async def _run_case(case: GoldenCase, target: GoldenTarget, *, english: bool) -> GoldenCaseResult:
    try:
        session_id = await target.start_session()
    except TargetUnreachable:
        raise
    except KeelError as exc:
        refused = tuple(
            GoldenTurnResult(
                case=case.name,
                turn=number,
                user=turn.user,
                reply=None,
                tool_calls=(),
                error=exc.code,
                problems=(f"no session could be started ({exc.code}: {exc.message})",),
            )
            for number, turn in enumerate(case.turns, start=1)
        )
        return GoldenCaseResult(name=case.name, turns=refused)
    try:
        turns = [
            await _run_turn(case, number, target, session_id, english=english)
            for number in range(1, len(case.turns) + 1)
        ]
    finally:
        await _end(target, session_id)
    return GoldenCaseResult(name=case.name, turns=tuple(turns))


async def _run_turn(
    case: GoldenCase, number: int, target: GoldenTarget, session_id: str, *, english: bool
) -> GoldenTurnResult:
    turn = case.turns[number - 1]
    answer: AgentAnswer | None = None
    error: KeelError | None = None
    try:
        answer = await target.turn(session_id, turn.user)
    except TargetUnreachable:
        raise
    except KeelError as exc:
        error = exc
    problems = turn_problems(turn.expect, answer=answer, error=error, english=english)
    return GoldenTurnResult(
        case=case.name,
        turn=number,
        user=turn.user,
        reply=None if answer is None else answer.reply,
        tool_calls=() if answer is None else tuple(str(c.get("name")) for c in answer.tool_calls),
        error=None if error is None else error.code,
        problems=tuple(problems),
    )


async def _end(target: GoldenTarget, session_id: str) -> None:
    """End the case's session; a refusal (already ended) does not change the verdict."""
    try:
        await target.end_session(session_id)
    except TargetUnreachable:
        raise
    except KeelError:
        pass
