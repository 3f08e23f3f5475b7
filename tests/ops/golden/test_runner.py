"""Running a golden suite against a real agent server (scripted model) over HTTP."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from agentkeel.ops.evals import TargetUnreachable
from agentkeel.ops.golden import GoldenCaseResult, GoldenSuite, load_golden_suite, run_golden
from tests.ops.golden.agents import CALCULATOR_SCRIPT, agent_app
from tests.tools.servers import free_port, live_server


def suite(*cases: tuple[str, list[dict[str, object]]], english: bool = False) -> GoldenSuite:
    return GoldenSuite.model_validate(
        {
            "name": "test",
            "english": english,
            "cases": [{"name": name, "turns": turns} for name, turns in cases],
        }
    )


def problems_by_case(cases: tuple[GoldenCaseResult, ...]) -> dict[str, list[str]]:
    return {case.name: case.problems for case in cases}


async def test_the_bundled_suite_passes_against_the_echoing_model(tmp_path: Path) -> None:
    """local-smoke holds for the scripted model that echoes, as keel up runs it in tests;
    every case's session is ended afterwards."""
    async with live_server(agent_app(tmp_path)) as server:
        report = await run_golden(server.url, load_golden_suite("local-smoke"))
        async with httpx.AsyncClient(base_url=server.url) as client:
            live = (await client.get("/metrics")).text
    assert report.passed, report.failures()
    assert report.failed == []
    assert report.summary == f"local-smoke against {server.url}: 3/3 cases passed"
    ended = re.search(r'agent_sessions_ended_total\{[^}]*reason="deleted"[^}]*\} (\S+)', live)
    assert ended is not None and float(ended.group(1)) == 3.0


async def test_every_property_can_pass(tmp_path: Path) -> None:
    """A reply that calls the calculator and says 42 passes contains, not_contains, matches
    and tool_called; the echoed second turn passes its own check."""
    chosen = suite(
        (
            "calculator",
            [
                {
                    "user": "What is 6*7?",
                    "expect": {
                        "contains": ["answer", "42"],
                        "not_contains": ["sorry"],
                        "matches": r"\b42\.$",
                        "tool_called": "calculator",
                    },
                },
                {"user": "thanks, bye", "expect": {"contains": "bye"}},
            ],
        )
    )
    async with live_server(agent_app(tmp_path, script=CALCULATOR_SCRIPT)) as server:
        report = await run_golden(server.url, chosen)
    assert report.passed, report.failures()
    first = report.cases[0].turns[0]
    assert first.reply == "The answer is 42."
    assert first.tool_calls == ("calculator",)
    assert report.cases[0].turns[1].reply == "echo: thanks, bye"


async def test_each_property_fails_on_its_own(tmp_path: Path) -> None:
    """Each property that does not hold fails its case with a sentence saying what was wrong;
    the other cases still pass, and the report is not passed."""

    def case(
        name: str, expect: dict[str, object] | None = None
    ) -> tuple[str, list[dict[str, object]]]:
        # The scripted model keeps a script cursor per opening message: one per case.
        return name, [{"user": f"What is 6*7? ({name})", "expect": expect or {}}]

    chosen = suite(
        case("ok"),
        case("contains", {"contains": ["Paris", "answer"]}),
        case("not-contains", {"not_contains": "answer"}),
        case("matches", {"matches": "^no"}),
        case("tool", {"tool_called": ["current_time"]}),
        case("expects-error", {"error": "input_too_large"}),
        case("whole-words", {"contains": ["4"]}),
    )
    async with live_server(agent_app(tmp_path, script=CALCULATOR_SCRIPT)) as server:
        report = await run_golden(server.url, chosen)
    assert not report.passed
    assert problems_by_case(report.cases) == {
        "ok": [],
        "contains": ["turn 1: does not name 'Paris'"],
        "not-contains": ["turn 1: names 'answer'"],
        "matches": ["turn 1: does not match /^no/"],
        "tool": ["turn 1: did not call current_time (called: calculator)"],
        "expects-error": ["turn 1: answered, but the error input_too_large was expected"],
        "whole-words": ["turn 1: does not name '4'"],
    }
    assert [case.name for case in report.failed] == list(problems_by_case(report.cases))[1:]


async def test_an_error_answer_fails_the_turn_unless_expected(tmp_path: Path) -> None:
    """A turn the server refuses fails with the error's code, unless the turn expects that
    code; the session goes on with its next turn."""
    long = "x" * 50
    chosen = suite(
        ("refused", [{"user": long}, {"user": "still here?", "expect": {"contains": "here"}}]),
        ("expected", [{"user": long, "expect": {"error": "input_too_large"}}]),
        ("other-error", [{"user": long, "expect": {"error": "input_empty"}}]),
    )
    async with live_server(agent_app(tmp_path, max_input_chars=20)) as server:
        report = await run_golden(server.url, chosen)
    refused, expected, other = report.cases
    assert refused.turns[0].error == "input_too_large"
    assert refused.turns[0].problems[0].startswith("refused with input_too_large: ")
    assert refused.turns[1].passed
    assert expected.passed
    assert other.turns[0].problems[0].endswith("(expected the error input_empty)")


async def test_a_failed_tool_call_is_not_a_call_that_happened(tmp_path: Path) -> None:
    """tool_called needs a call that succeeded: a failing calculator call names its status."""
    script = [
        {"tool_calls": [{"tool": "calculator", "arguments": {"expression": "1/0"}}]},
        {"say": "I could not work that out."},
    ]
    chosen = suite(("tool", [{"user": "1/0?", "expect": {"tool_called": "calculator"}}]))
    async with live_server(agent_app(tmp_path, script=script)) as server:
        report = await run_golden(server.url, chosen)
    (problem,) = report.cases[0].problems
    assert problem.startswith("turn 1: called calculator, but it ended ")
    assert "success" not in problem


async def test_english_can_be_required(tmp_path: Path) -> None:
    """With english: true, an echoed French reply fails even though it names the word."""
    chosen = suite(
        (
            "french",
            [{"user": "La France est une région de l'Europe", "expect": {"contains": "France"}}],
        ),
        english=True,
    )
    async with live_server(agent_app(tmp_path)) as server:
        report = await run_golden(server.url, chosen)
    assert report.cases[0].problems[0].startswith("turn 1: not English")


async def test_a_target_that_is_down_raises_target_unreachable() -> None:
    """Nothing listening on the port: TargetUnreachable naming the URL, not a failed report."""
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TargetUnreachable) as caught:
        await run_golden(url, load_golden_suite("local-smoke"))
    assert url in caught.value.message
    assert "Check that it is running" in caught.value.message


async def test_results_arrive_per_case_and_as_json(tmp_path: Path) -> None:
    """on_case sees each case as it finishes; to_json carries every turn's verdict."""
    seen: list[str] = []
    chosen = suite(
        ("a", [{"user": "one"}]), ("b", [{"user": "two", "expect": {"contains": "three"}}])
    )
    async with live_server(agent_app(tmp_path)) as server:
        report = await run_golden(server.url, chosen, on_case=lambda case: seen.append(case.name))
    assert seen == ["a", "b"]
    data = report.to_json()
    assert data["passed"] is False
    assert [case["passed"] for case in data["cases"]] == [True, False]
    assert data["cases"][1]["turns"][0]["problems"] == ["does not name 'three'"]
    assert data["cases"][0]["turns"][0]["reply"] == "echo: one"
