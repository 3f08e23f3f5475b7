"""Tools: the ``ToolSet`` Protocol, in-process tools and the built-in ones."""

from agentkeel.tools.builtins import (
    BUILTIN_NAMES,
    CalculatorError,
    builtin_toolset,
    calculator,
    make_current_time,
)
from agentkeel.tools.local import LocalToolSet
from agentkeel.tools.types import ToolContext, ToolResult, ToolSet, ToolStatus

__all__ = [
    "BUILTIN_NAMES",
    "CalculatorError",
    "LocalToolSet",
    "ToolContext",
    "ToolResult",
    "ToolSet",
    "ToolStatus",
    "builtin_toolset",
    "calculator",
    "make_current_time",
]
