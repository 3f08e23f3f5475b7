"""Run an evaluation set against an agent server and score the replies.

The target is the agent server's HTTP API, so what is scored is what
``keel chat`` and every other client get: the agent, its prompt and history
handling, the guardrails and the model gateway. ``AgentServerTarget`` talks to
any base URL; ``serve_in_process`` builds the server from settings in this
process (a temporary session store, the configured model chain), which is how
``keel eval`` and the tests run a set::

    async with serve_in_process(settings) as target:
        report = await run_eval_set(load_eval_set("local-smoke"), target)
    print(report.render())
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from agentkeel.config.settings import KeelSettings
from agentkeel.errors import KeelError
from agentkeel.ops.evals.cases import EvalCase, EvalSet
from agentkeel.ops.evals.checks import english_problem, names_answer

_TIMEOUT = httpx.Timeout(connect=5.0, read=300.0, write=10.0, pool=10.0)
_EXCERPT_CHARS = 80


class TargetUnreachable(KeelError):
    """The agent server did not answer at all (refused, reset, timed out): nothing was
    scored, as opposed to an error answer, which the server gave."""

    code = "eval_target_unreachable"
    status = 503


@dataclass(frozen=True, slots=True)
class AgentAnswer:
    """A turn as the agent server answered it: the reply and what the turn did."""

    reply: str
    turn: int
    tool_calls: tuple[Mapping[str, Any], ...]
    """Each call of the turn: ``name``, ``arguments``, ``status`` (``success``, ...)."""
    version: str | None = None


class ConversationTarget(Protocol):
    """Something that holds conversations: a session per case, a reply per message."""

    async def start_session(self) -> str: ...

    async def say(self, session_id: str, content: str) -> str: ...

    async def end_session(self, session_id: str) -> None: ...


class AgentServerTarget:
    """The agent server's v1 API through ``client`` (its ``base_url`` is the server).

    >>> async with httpx.AsyncClient(base_url="http://127.0.0.1:8081") as client:
    ...     report = await run_eval_set(eval_set, AgentServerTarget(client=client))
    """

    def __init__(self, *, client: httpx.AsyncClient, user_id: str = "eval") -> None:
        self.client = client
        self.user_id = user_id

    async def start_session(self) -> str:
        body = await self._post("/v1/sessions", {"user_id": self.user_id, "metadata": {}})
        return str(body["session_id"])

    async def say(self, session_id: str, content: str) -> str:
        return (await self.turn(session_id, content)).reply

    async def turn(self, session_id: str, content: str) -> AgentAnswer:
        """One turn, with its tool calls and the version that answered it."""
        body = await self._post(f"/v1/sessions/{session_id}/messages", {"content": content})
        calls = body.get("tool_calls") or []
        version = body.get("version")
        return AgentAnswer(
            reply=str(body["reply"]),
            turn=int(body.get("turn") or 0),
            tool_calls=tuple(call for call in calls if isinstance(call, Mapping)),
            version=None if version is None else str(version),
        )

    async def end_session(self, session_id: str) -> None:
        """End the case's session, so scoring leaves no live sessions behind."""
        await self._send("DELETE", f"/v1/sessions/{session_id}", None)

    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await self._send("POST", path, payload)

    async def _send(self, method: str, path: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        try:
            response = await self.client.request(method, path, json=payload, timeout=_TIMEOUT)
        except httpx.HTTPError as exc:
            raise TargetUnreachable(
                f"The agent server at {self.client.base_url} did not answer {method} {path} "
                f"({type(exc).__name__}: {exc}). Check that it is running."
            ) from exc
        try:
            body: Any = response.json() if response.content else {}
        except ValueError:
            body = None
        if response.status_code >= 400:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            raise KeelError(
                f"The agent server answered {method} {path} with {response.status_code} "
                f"{error.get('code', '')}: {error.get('message', response.text[:200])}",
                code=str(error.get("code", "eval_target_error")),
            )
        if not isinstance(body, dict):
            raise KeelError(
                f"The agent server answered {method} {path} with {response.text[:200]!r}, "
                "not a JSON object.",
                code="eval_target_error",
            )
        return body


@asynccontextmanager
async def serve_in_process(settings: KeelSettings) -> AsyncIterator[AgentServerTarget]:
    """The agent server for ``settings`` in this process, on a throwaway session store.

    Everything else is as configured: the agent (``agent.*``), the guardrails and
    the model chain (``models``), so a running model server is needed for the
    default chain. No socket is opened; requests go through an ASGI transport.
    """
    from agentkeel.runtime.app import create_app

    with tempfile.TemporaryDirectory(prefix="agentkeel-eval-") as directory:
        scratch = Path(directory)
        isolated = settings.model_copy(
            update={
                "data_dir": scratch,
                "store": settings.store.model_copy(
                    update={"url": f"sqlite:///{scratch / 'sessions.db'}"}
                ),
            }
        )
        app = create_app(isolated)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://agent.eval"
            ) as client,
        ):
            yield AgentServerTarget(client=client)


@dataclass(frozen=True, slots=True)
class TurnResult:
    """How one reply scored."""

    case: str
    turn: int
    user: str
    reply: str
    matched: str | None
    """The accepted answer the reply named, or ``None``."""
    problem: str | None
    """Why the turn failed, or ``None`` when it passed."""

    @property
    def passed(self) -> bool:
        return self.problem is None


@dataclass(frozen=True, slots=True)
class EvalReport:
    """Every turn's result and the score: the share of turns that passed."""

    set_name: str
    results: tuple[TurnResult, ...]

    @property
    def passed(self) -> int:
        return sum(1 for result in self.results if result.passed)

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def score(self) -> float:
        """Passed turns over all turns, from 0.0 to 1.0."""
        return self.passed / self.total if self.total else 0.0

    @property
    def cases_passed(self) -> int:
        """Cases whose every turn passed."""
        failed = {result.case for result in self.results if not result.passed}
        return len({result.case for result in self.results} - failed)

    @property
    def case_count(self) -> int:
        return len({result.case for result in self.results})

    def summary(self) -> str:
        """One line: ``local-smoke: 24/26 turns (92%), 13/15 cases``."""
        return (
            f"{self.set_name}: {self.passed}/{self.total} turns ({self.score:.0%}), "
            f"{self.cases_passed}/{self.case_count} cases"
        )

    def render(self) -> str:
        """A line per turn (pass or fail, the question, the reply, why it failed), then the
        summary."""
        lines = []
        for result in self.results:
            mark = "pass" if result.passed else "FAIL"
            line = f"{mark}  {result.case}#{result.turn}  {result.user!r} -> {_excerpt(result)!r}"
            if result.problem:
                line += f"  ({result.problem})"
            lines.append(line)
        lines.append(self.summary())
        return "\n".join(lines)


async def run_eval_set(
    eval_set: EvalSet,
    target: ConversationTarget,
    *,
    on_result: Callable[[TurnResult], None] | None = None,
) -> EvalReport:
    """Send every case of ``eval_set`` to ``target`` (a session per case) and score it.

    ``on_result`` sees each turn's result as soon as it is scored (for progress).
    An error from the target (the model is down, a guardrail refused) is raised,
    not scored: a score means the agent answered every question.
    """
    results: list[TurnResult] = []
    for case in eval_set.cases:
        for result in await _run_case(case, target, english=eval_set.english):
            results.append(result)
            if on_result is not None:
                on_result(result)
    return EvalReport(set_name=eval_set.name, results=tuple(results))


async def _run_case(
    case: EvalCase, target: ConversationTarget, *, english: bool
) -> list[TurnResult]:
    session_id = await target.start_session()
    try:
        return await _score_turns(case, target, session_id, english=english)
    finally:
        await target.end_session(session_id)


async def _score_turns(
    case: EvalCase, target: ConversationTarget, session_id: str, *, english: bool
) -> list[TurnResult]:
    results = []
    for number, turn in enumerate(case.turns, start=1):
        reply = await target.say(session_id, turn.user)
        matched = names_answer(reply, turn.expect)
        problem: str | None = None
        if matched is None:
            problem = f"names none of {', '.join(turn.expect)}"
        elif english:
            problem = english_problem(reply)
        results.append(
            TurnResult(
                case=case.name,
                turn=number,
                user=turn.user,
                reply=reply,
                matched=matched,
                problem=problem,
            )
        )
    return results


def _excerpt(result: TurnResult) -> str:
    text = " ".join(result.reply.split())
    return text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 1] + "…"
