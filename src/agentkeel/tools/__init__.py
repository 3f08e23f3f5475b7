"""Tools: the ``ToolSet`` Protocol, in-process tools, the MCP tool server and the guarded client.

>>> from agentkeel.tools import LocalToolSet, builtin_toolset, build_tools_client
>>> tools = builtin_toolset(["calculator", "current_time"])

The ``ToolSet`` contract is imported eagerly; everything else loads on first
use, so ``import agentkeel.tools`` does not pull in the MCP SDK, the HTTP
clients or the server stack for code that only needs the contract.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentkeel.tools.types import ToolContext, ToolResult, ToolSet, ToolStatus

if TYPE_CHECKING:
    from agentkeel.config.tools import (
        HttpGetSettings,
        McpServerSettings,
        ToolBreakerSettings,
        ToolServerSettings,
        ToolsSettings,
    )
    from agentkeel.tools.budget import BudgetDecision, SessionCallBudget
    from agentkeel.tools.builtins import (
        BUILTIN_NAMES,
        CalculatorError,
        builtin_toolset,
        calculator,
        make_current_time,
    )
    from agentkeel.tools.client import GuardedToolsClient, build_tools_client
    from agentkeel.tools.composite import CompositeToolSet
    from agentkeel.tools.discovery import module_tools
    from agentkeel.tools.http_get import HttpGetRefused, make_http_get
    from agentkeel.tools.local import LocalToolSet, runs_inline
    from agentkeel.tools.mcp_source import McpToolSource
    from agentkeel.tools.serve import run_tool_server
    from agentkeel.tools.server import create_app as create_tool_server_app

# Public name -> (module, attribute in that module).
_LAZY: dict[str, tuple[str, str]] = {
    "BudgetDecision": ("agentkeel.tools.budget", "BudgetDecision"),
    "SessionCallBudget": ("agentkeel.tools.budget", "SessionCallBudget"),
    "BUILTIN_NAMES": ("agentkeel.tools.builtins", "BUILTIN_NAMES"),
    "CalculatorError": ("agentkeel.tools.builtins", "CalculatorError"),
    "builtin_toolset": ("agentkeel.tools.builtins", "builtin_toolset"),
    "calculator": ("agentkeel.tools.builtins", "calculator"),
    "make_current_time": ("agentkeel.tools.builtins", "make_current_time"),
    "GuardedToolsClient": ("agentkeel.tools.client", "GuardedToolsClient"),
    "build_tools_client": ("agentkeel.tools.client", "build_tools_client"),
    "CompositeToolSet": ("agentkeel.tools.composite", "CompositeToolSet"),
    "module_tools": ("agentkeel.tools.discovery", "module_tools"),
    "HttpGetRefused": ("agentkeel.tools.http_get", "HttpGetRefused"),
    "make_http_get": ("agentkeel.tools.http_get", "make_http_get"),
    "LocalToolSet": ("agentkeel.tools.local", "LocalToolSet"),
    "runs_inline": ("agentkeel.tools.local", "runs_inline"),
    "McpToolSource": ("agentkeel.tools.mcp_source", "McpToolSource"),
    "run_tool_server": ("agentkeel.tools.serve", "run_tool_server"),
    "create_tool_server_app": ("agentkeel.tools.server", "create_app"),
    "HttpGetSettings": ("agentkeel.config.tools", "HttpGetSettings"),
    "McpServerSettings": ("agentkeel.config.tools", "McpServerSettings"),
    "ToolBreakerSettings": ("agentkeel.config.tools", "ToolBreakerSettings"),
    "ToolServerSettings": ("agentkeel.config.tools", "ToolServerSettings"),
    "ToolsSettings": ("agentkeel.config.tools", "ToolsSettings"),
}

__all__ = [
    "BUILTIN_NAMES",
    "BudgetDecision",
    "CalculatorError",
    "CompositeToolSet",
    "GuardedToolsClient",
    "HttpGetRefused",
    "HttpGetSettings",
    "LocalToolSet",
    "McpServerSettings",
    "McpToolSource",
    "SessionCallBudget",
    "ToolBreakerSettings",
    "ToolContext",
    "ToolResult",
    "ToolServerSettings",
    "ToolSet",
    "ToolStatus",
    "ToolsSettings",
    "build_tools_client",
    "builtin_toolset",
    "calculator",
    "create_tool_server_app",
    "make_current_time",
    "make_http_get",
    "module_tools",
    "run_tool_server",
    "runs_inline",
]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'agentkeel.tools' has no attribute {name!r}")
    module, attribute = target
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
