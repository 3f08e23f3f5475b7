"""CompositeToolSet: one ToolSet over several sources; name clashes are configuration errors."""

from __future__ import annotations

import pytest

from agentkeel.errors import ConfigError
from agentkeel.tools.builtins import builtin_toolset
from agentkeel.tools.composite import CompositeToolSet
from agentkeel.tools.local import LocalToolSet
from agentkeel.tools.types import ToolContext

CONTEXT = ToolContext(agent_id="a", session_id="s", user_id="u", turn=1)


def calculator(expression: str) -> str:
    """A second calculator."""
    return "other"


def echo(text: str) -> str:
    """Echo text."""
    return text


async def test_calls_go_to_the_source_that_offers_the_tool() -> None:
    """Tools from every source are listed; each call reaches its own source."""
    tools = CompositeToolSet(
        [("local", builtin_toolset(["calculator"])), ("extra", LocalToolSet([echo]))]
    )
    assert [s.name for s in await tools.list_tools()] == ["calculator", "echo"]
    assert tools.source_of("echo") == "extra"
    assert (await tools.call("echo", {"text": "hi"}, context=CONTEXT)).content == "hi"
    unknown = await tools.call("nope", {}, context=CONTEXT)
    assert unknown.status == "rejected"


async def test_name_clash_is_a_config_error_at_check_and_first_wins_after() -> None:
    """check() names both sources and the prefix fix; list_tools keeps the first one."""
    tools = CompositeToolSet(
        [("local", builtin_toolset(["calculator"])), ("mcp", LocalToolSet([calculator]))]
    )
    with pytest.raises(
        ConfigError, match=r"'calculator' is offered by both 'local' and 'mcp'.*prefix"
    ):
        await tools.check()
    assert [s.name for s in await tools.list_tools()] == ["calculator"]
    result = await tools.call("calculator", {"expression": "1+1"}, context=CONTEXT)
    assert result.content == "2"
