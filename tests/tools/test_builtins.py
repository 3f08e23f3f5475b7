"""The built-in tools: a safe calculator and the current time."""

from __future__ import annotations

import asyncio

import pytest

from agentkeel.errors import ConfigError
from agentkeel.resilience.clock import ManualClock
from agentkeel.tools.builtins import (
    BUILTIN_NAMES,
    CalculatorError,
    builtin_toolset,
    calculator,
    make_current_time,
)
from agentkeel.tools.types import ToolContext

CONTEXT = ToolContext(agent_id="a", session_id="s", user_id="u", turn=1)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2 + 3 * 4", "14"),
        ("(2 + 3) * 4", "20"),
        ("-3 + 5", "2"),
        ("--3", "3"),
        ("7 / 2", "3.5"),
        ("7 // 2", "3"),
        ("7 % 4", "3"),
        ("2 ** 10", "1024"),
        ("2 ** -1", "0.5"),
        ("0.1 + 0.2", "0.3"),
        ("sqrt(16) + abs(-2)", "6"),
        ("round(2.567, 2)", "2.57"),
        ("round(2.5)", "2"),
        ("min(3, 1, 2) + max(4, 9)", "10"),
        ("floor(2.7) + ceil(2.1)", "5"),
        ("round(pi, 4)", "3.1416"),
        ("  17 * 23 + 4  ", "395"),
    ],
)
def test_calculator_evaluates_arithmetic(expression: str, expected: str) -> None:
    """Operators, precedence, parentheses, unary minus and the listed functions work."""
    assert calculator(expression) == expected


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('true')",
        "().__class__",
        "open('/etc/passwd')",
        "(lambda: 1)()",
        "[1, 2]",
        "'a' * 3",
        "x + 1",
        "True + 1",
        "1 if 2 else 3",
        "2 << 3",
        "sqrt(x=4)",
    ],
)
def test_calculator_refuses_anything_but_arithmetic(expression: str) -> None:
    """Names, attributes, strings, lambdas and other Python are refused, never evaluated."""
    with pytest.raises(CalculatorError):
        calculator(expression)


def test_calculator_bounds_exponents_and_result_size() -> None:
    """A huge power is refused before it is computed; a large one within bounds works."""
    with pytest.raises(CalculatorError, match="exponent"):
        calculator("9 ** 9 ** 9")
    with pytest.raises(CalculatorError, match="too large"):
        calculator("10 ** 5000")
    with pytest.raises(CalculatorError, match="too large"):
        calculator("(2 ** 3000) * (2 ** 3000)")
    assert len(calculator("2 ** 4000")) == 1205


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("", "empty"),
        ("2 +", "not a valid arithmetic expression"),
        ("sqrt(-1)", "not defined for -1"),
        ("(-8) ** 0.5", "complex"),
        ("1e308 * 10", "not a finite number"),
        ("max()", "at least one number"),
        ("frobnicate(2)", "unknown function 'frobnicate'; known functions: abs"),
        ("1" * 1001, "limit is 1000"),
    ],
)
def test_calculator_errors_say_what_is_wrong(expression: str, message: str) -> None:
    """Bad input gets a message the model can act on."""
    with pytest.raises(CalculatorError, match=message):
        calculator(expression)


def test_current_time_is_iso_utc_from_the_clock() -> None:
    """With no time zone the tool answers ISO-8601 UTC time from the injected clock."""
    current_time = make_current_time(clock=ManualClock(wall_start=1_700_000_000.0))
    assert current_time() == "2023-11-14T22:13:20+00:00"


def test_current_time_in_an_iana_time_zone() -> None:
    """A named time zone shifts the result, with its UTC offset."""
    current_time = make_current_time(clock=ManualClock(wall_start=1_700_000_000.0))
    assert current_time("Europe/Paris") == "2023-11-14T23:13:20+01:00"
    assert current_time("America/New_York") == "2023-11-14T17:13:20-05:00"


def test_current_time_rejects_an_unknown_time_zone() -> None:
    """An unknown zone is an error that suggests valid names."""
    current_time = make_current_time(clock=ManualClock())
    with pytest.raises(ValueError, match=r"unknown time zone 'Mars/Olympus'.*Europe/Paris"):
        current_time("Mars/Olympus")
    with pytest.raises(ValueError, match="unknown time zone"):
        current_time("../../etc/passwd")


async def test_builtin_toolset_offers_the_named_tools_with_schemas() -> None:
    """The set holds exactly the named tools, with parameters from their signatures."""
    tools = builtin_toolset(["calculator"])
    specs = await tools.list_tools()
    assert [spec.name for spec in specs] == ["calculator"]
    params = specs[0].parameters
    assert params["required"] == ["expression"]
    assert params["properties"]["expression"]["type"] == "string"
    assert "arithmetic" in specs[0].description


async def test_builtin_toolset_runs_the_tools() -> None:
    """Calls go to the built-in functions; failures are results, not exceptions."""
    tools = builtin_toolset(list(BUILTIN_NAMES), clock=ManualClock(wall_start=0.0))
    ok = await tools.call("calculator", {"expression": "6 * 7"}, context=CONTEXT)
    assert (ok.status, ok.content) == ("success", "42")
    bad = await tools.call("calculator", {"expression": "1/0"}, context=CONTEXT)
    assert bad.status == "failure"
    assert bad.content == "calculator failed: division by zero"
    now = await tools.call("current_time", {}, context=CONTEXT)
    assert now.content == "1970-01-01T00:00:00+00:00"


async def test_builtin_tools_run_without_a_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-in tools are quick and never block, so a call never hands off to a
    worker thread (which would cost more than the tool itself)."""

    def no_threads(*args: object, **kwargs: object) -> object:
        raise AssertionError("a built-in tool was sent to a worker thread")

    monkeypatch.setattr(asyncio, "to_thread", no_threads)
    tools = builtin_toolset(list(BUILTIN_NAMES), clock=ManualClock(wall_start=0.0))
    ok = await tools.call("calculator", {"expression": "6 * 7"}, context=CONTEXT)
    now = await tools.call("current_time", {"timezone": "UTC"}, context=CONTEXT)
    assert [ok.content, now.content] == ["42", "1970-01-01T00:00:00+00:00"]


def test_builtin_toolset_rejects_unknown_names_listing_the_known_ones() -> None:
    """A typo in agent.tools is a ConfigError that lists the built-in tools."""
    with pytest.raises(ConfigError, match=r"'calculater'.*calculator, current_time"):
        builtin_toolset(["calculater"])
