"""Running a set through the agent server: a session per case, every reply scored."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agentkeel.config.layers import load_settings
from agentkeel.config.settings import KeelSettings
from agentkeel.errors import KeelError
from agentkeel.ops.evals import (
    AgentServerTarget,
    EvalSet,
    TurnResult,
    run_eval_set,
    serve_in_process,
)


def echo_settings(tmp_path: Path) -> KeelSettings:
    """An agent whose scripted model answers 'echo: <the user's message>'."""
    return load_settings(
        layers=[],
        overrides={
            "data_dir": str(tmp_path / "elsewhere"),
            "secrets_dir": None,
            "models": [{"name": "scripted", "kind": "scripted"}],
        },
    ).settings


def eval_set(*cases: tuple[str, list[tuple[str, list[str]]]], english: bool = True) -> EvalSet:
    return EvalSet.model_validate(
        {
            "name": "test",
            "english": english,
            "cases": [
                {"name": name, "turns": [{"user": u, "expect": e} for u, e in turns]}
                for name, turns in cases
            ],
        }
    )


async def test_replies_are_scored_per_turn_and_in_total(tmp_path: Path) -> None:
    """A reply naming the answer passes; one that does not, or is French, fails with why."""
    chosen = eval_set(
        ("right", [("Is it Paris?", ["Paris"])]),
        ("wrong", [("Is it Paris?", ["Rome"])]),
        ("french", [("La France est une région de l'Europe", ["France"])]),
        ("two-turns", [("say seven", ["seven"]), ("say 14", ["14", "fourteen"])]),
    )
    seen: list[TurnResult] = []
    async with serve_in_process(echo_settings(tmp_path)) as target:
        report = await run_eval_set(chosen, target, on_result=seen.append)
    assert [(r.case, r.turn, r.passed) for r in report.results] == [
        ("right", 1, True),
        ("wrong", 1, False),
        ("french", 1, False),
        ("two-turns", 1, True),
        ("two-turns", 2, True),
    ]
    assert seen == list(report.results)
    assert report.results[0].reply == "echo: Is it Paris?"
    assert report.results[0].matched == "Paris"
    assert report.results[1].problem == "names none of Rome"
    assert (report.results[2].problem or "").startswith("not English")
    assert (report.passed, report.total, report.cases_passed, report.case_count) == (3, 5, 2, 4)
    assert report.score == pytest.approx(0.6)
    assert report.summary() == "test: 3/5 turns (60%), 2/4 cases"
    rendered = report.render().splitlines()
    assert rendered[1].startswith("FAIL  wrong#1  'Is it Paris?' -> 'echo: Is it Paris?'")
    assert rendered[-1] == report.summary()


async def test_english_check_can_be_turned_off(tmp_path: Path) -> None:
    """With english: false, a French reply that names the answer passes."""
    chosen = eval_set(("french", [("La France est une région", ["France"])]), english=False)
    async with serve_in_process(echo_settings(tmp_path)) as target:
        report = await run_eval_set(chosen, target)
    assert report.score == 1.0


class RecordingTarget:
    """A target that remembers the sessions it started."""

    def __init__(self, inner: AgentServerTarget) -> None:
        self.inner = inner
        self.sessions: list[str] = []

    async def start_session(self) -> str:
        session_id = await self.inner.start_session()
        self.sessions.append(session_id)
        return session_id

    async def say(self, session_id: str, content: str) -> str:
        return await self.inner.say(session_id, content)

    async def end_session(self, session_id: str) -> None:
        await self.inner.end_session(session_id)


async def test_each_case_is_its_own_session(tmp_path: Path) -> None:
    """Turns of one case go to one session, in order; the next case starts another;
    each session is ended when its case is scored, so none stays live."""
    chosen = eval_set(("a", [("one", ["one"]), ("two", ["two"])]), ("b", [("three", ["three"])]))
    async with serve_in_process(echo_settings(tmp_path)) as served:
        target = RecordingTarget(served)
        await run_eval_set(chosen, target)
        turns = []
        reasons = []
        for session_id in target.sessions:
            body = (await served.client.get(f"/v1/sessions/{session_id}")).json()
            turns.append([turn["content"] for turn in body["turns"]])
            reasons.append(body["end_reason"])
    assert turns == [["one", "two"], ["three"]]
    assert reasons == ["deleted", "deleted"]


async def test_the_scratch_store_leaves_the_data_dir_alone(tmp_path: Path) -> None:
    """The in-process server keeps its sessions in a temporary store, not in data_dir."""
    settings = echo_settings(tmp_path)
    async with serve_in_process(settings) as target:
        await run_eval_set(eval_set(("a", [("one", ["one"])])), target)
    assert not (tmp_path / "elsewhere" / "sessions.db").exists()


async def test_an_error_from_the_server_is_raised_not_scored() -> None:
    """A 503 from the agent server raises KeelError with the server's code and message."""

    def unavailable(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/sessions":
            return httpx.Response(201, json={"session_id": "s1", "version": "v1"})
        error = {"code": "model_unavailable", "message": "every provider failed"}
        return httpx.Response(503, json={"error": error})

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(unavailable), base_url="http://agent.test"
    ) as client:
        with pytest.raises(KeelError) as caught:
            await run_eval_set(eval_set(("a", [("hi", ["hi"])])), AgentServerTarget(client=client))
    assert caught.value.code == "model_unavailable"
    assert "every provider failed" in caught.value.message


async def test_an_unreachable_server_says_to_check_it_is_running() -> None:
    """A connection error names the URL and what to check."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(refuse), base_url="http://agent.test"
    ) as client:
        with pytest.raises(KeelError) as caught:
            await AgentServerTarget(client=client).start_session()
    assert "http://agent.test" in caught.value.message
    assert "Check that it is running" in caught.value.message
