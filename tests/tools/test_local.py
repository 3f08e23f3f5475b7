"""LocalToolSet: Python functions as tools, with schemas derived from signatures."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from agentkeel.errors import ConfigError
from agentkeel.tools.local import LocalToolSet, runs_inline
from agentkeel.tools.types import ToolContext, ToolSet

CONTEXT = ToolContext(agent_id="a", session_id="s-1", user_id="u-1", turn=3)


def search(query: str, limit: int = 5, exact: bool = False, boost: float | None = None) -> str:
    """Search the knowledge base.

    Longer explanation that the model does not need.

    Args:
        query: What to look for.
        limit: How many results
            to return at most.
        exact: Match the whole phrase.
    """
    return f"{query}|{limit}|{exact}|{boost}"


async def tag(names: list[str]) -> dict[str, int]:
    """Count the tags."""
    await asyncio.sleep(0)
    return {name: len(name) for name in names}


def whoami(context: ToolContext, greeting: str = "hi") -> str:
    """Say who is calling."""
    return f"{greeting} {context.user_id} in {context.session_id}"


def broken(value: int) -> str:
    """Always fails."""
    raise RuntimeError(f"backend down for {value}")


def test_local_toolset_is_a_toolset() -> None:
    """LocalToolSet satisfies the ToolSet Protocol."""
    assert isinstance(LocalToolSet([search]), ToolSet)


async def test_schema_comes_from_signature_and_docstring() -> None:
    """Types, defaults, required names and Args descriptions become the JSON schema."""
    (spec,) = await LocalToolSet([search]).list_tools()
    assert spec.name == "search"
    assert spec.description == "Search the knowledge base."
    params = spec.parameters
    assert params["type"] == "object"
    assert params["required"] == ["query"]
    props = params["properties"]
    assert props["query"] == {"type": "string", "description": "What to look for."}
    assert props["limit"]["type"] == "integer"
    assert props["limit"]["default"] == 5
    assert props["limit"]["description"] == "How many results to return at most."
    assert props["exact"]["type"] == "boolean"
    assert {"type": "number"} in props["boost"]["anyOf"]
    assert {"type": "null"} in props["boost"]["anyOf"]
    assert "title" not in params


async def test_list_parameters_and_async_functions() -> None:
    """A list parameter maps to an array schema; async functions are awaited."""
    tools = LocalToolSet([tag])
    (spec,) = await tools.list_tools()
    assert spec.parameters["properties"]["names"] == {
        "type": "array",
        "items": {"type": "string"},
    }
    result = await tools.call("tag", {"names": ["ab", "c"]}, context=CONTEXT)
    assert result.status == "success"
    assert result.content == '{"ab": 2, "c": 1}'


async def test_sync_functions_run_off_the_event_loop() -> None:
    """A sync tool runs in a worker thread, so it cannot stall other turns."""
    seen: list[bool] = []

    def where() -> str:
        """Report the thread."""
        seen.append(threading.current_thread() is threading.main_thread())
        return "ok"

    result = await LocalToolSet([where]).call("where", {}, context=CONTEXT)
    assert result.content == "ok"
    assert seen == [False]


async def test_runs_inline_keeps_a_quick_sync_tool_on_the_event_loop() -> None:
    """A sync tool marked @runs_inline is called on the event loop's thread, without
    the hand-off to a worker thread; its schema and result are the same as without."""
    seen: list[bool] = []

    @runs_inline
    def here(word: str) -> str:
        """Report the thread."""
        seen.append(threading.current_thread() is threading.main_thread())
        return word.upper()

    tools = LocalToolSet([here])
    result = await tools.call("here", {"word": "ok"}, context=CONTEXT)
    assert (result.status, result.content) == ("success", "OK")
    assert seen == [True]
    assert tools.input_schema("here") == (await tools.list_tools())[0].parameters


def test_input_schema_by_name() -> None:
    """input_schema gives a tool's argument schema, and None for a name not in the set."""
    tools = LocalToolSet([search])
    schema = tools.input_schema("search")
    assert schema is not None and schema["required"] == ["query"]
    assert tools.input_schema("missing") is None


async def test_arguments_are_validated_and_defaults_applied() -> None:
    """Arguments are checked against the schema; defaults fill the rest."""
    tools = LocalToolSet([search])
    ok = await tools.call("search", {"query": "refunds", "limit": 2}, context=CONTEXT)
    assert ok.content == "refunds|2|False|None"
    bad = await tools.call("search", {"limit": "many"}, context=CONTEXT)
    assert bad.status == "failure"
    assert bad.content.startswith("search failed: invalid arguments:")
    assert "query: Field required" in bad.content
    assert "limit:" in bad.content


async def test_exceptions_become_failure_results() -> None:
    """A tool that raises gives a failure result naming the tool and the message."""
    result = await LocalToolSet([broken]).call("broken", {"value": 7}, context=CONTEXT)
    assert result.status == "failure"
    assert result.content == "broken failed: backend down for 7"
    assert result.is_error


async def test_unknown_tool_is_rejected() -> None:
    """Calling a tool the set does not have is a rejected result listing the tools."""
    result = await LocalToolSet([search]).call("delete_all", {}, context=CONTEXT)
    assert result.status == "rejected"
    assert "unknown tool 'delete_all'" in result.content
    assert "search" in result.content


async def test_context_parameter_is_injected_and_hidden() -> None:
    """A ToolContext parameter gets the caller's context and is not in the schema."""
    tools = LocalToolSet([whoami])
    (spec,) = await tools.list_tools()
    assert list(spec.parameters["properties"]) == ["greeting"]
    result = await tools.call("whoami", {"greeting": "hello"}, context=CONTEXT)
    assert result.content == "hello u-1 in s-1"


async def test_allowed_limits_the_offered_and_callable_tools() -> None:
    """Only allowed functions are listed; the others are rejected when called."""
    tools = LocalToolSet([search, tag], allowed=["tag"])
    assert [spec.name for spec in await tools.list_tools()] == ["tag"]
    result = await tools.call("search", {"query": "x"}, context=CONTEXT)
    assert result.status == "rejected"


def test_allowed_name_that_is_not_a_function_is_a_config_error() -> None:
    """An allowlist entry without a function is caught at construction."""
    with pytest.raises(ConfigError, match=r"'serch'.*search"):
        LocalToolSet([search], allowed=["serch"])


async def test_timeout_gives_a_timeout_result() -> None:
    """A call that outlives timeout_s returns status timeout instead of hanging."""
    never = asyncio.Event()

    async def stuck() -> str:
        """Waits forever."""
        await never.wait()
        return "unreachable"

    result = await LocalToolSet([stuck], timeout_s=0).call("stuck", {}, context=CONTEXT)
    assert result.status == "timeout"
    assert "stuck timed out" in result.content


@pytest.mark.parametrize(
    ("functions", "message"),
    [
        ([lambda x: x], "no usable name"),
        ([search, search], "Two tool functions are named 'search'"),
    ],
)
def test_unusable_functions_are_config_errors(functions: list[Any], message: str) -> None:
    """Lambdas and duplicate names cannot be tools."""
    with pytest.raises(ConfigError, match=message):
        LocalToolSet(functions)


def test_var_args_are_refused() -> None:
    """Tools take named parameters only."""

    def spread(*values: int) -> int:
        """Sum."""
        return sum(values)

    with pytest.raises(ConfigError, match="named parameters only"):
        LocalToolSet([spread])
