"""A user tool module for ``--tools tests.tools.sample_tools``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentkeel.tools.types import ToolContext


def shout(text: str, times: int = 1) -> str:
    """Repeat text in capitals.

    Args:
        text: What to shout.
        times: How many times.
    """
    return " ".join([text.upper()] * times)


async def whoami(*, context: ToolContext) -> str:
    """Say which agent and user are calling."""
    return f"{context.agent_id}/{context.user_id}"


def _private() -> None:
    """Not a tool."""


imported: Callable[..., Any] = print
