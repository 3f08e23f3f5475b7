"""The agent server: sessions, the turn loop, guardrails, draining.

>>> from agentkeel.runtime import create_app, ToolAgent
>>> app = create_app(settings, agent=ToolAgent(system_prompt="Be brief."))

The agent contract (``Agent``, ``Turn``, ``Reply``) is imported eagerly; the
server parts load on first use, so ``import agentkeel`` stays light for
agent code and the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentkeel.runtime.types import Agent, Reply, Turn, TurnModel, TurnTools

if TYPE_CHECKING:
    from agentkeel.runtime.app import create_app
    from agentkeel.runtime.draining import DrainState
    from agentkeel.runtime.guards import (
        EventSink,
        GuardedModel,
        GuardedTools,
        StepLimitReached,
        TurnLog,
    )
    from agentkeel.runtime.loader import load_agent
    from agentkeel.runtime.service import AgentService, TurnOutcome
    from agentkeel.runtime.tool_agent import ToolAgent
    from agentkeel.runtime.validation import ValidatedInput, validate_input

_LAZY = {
    "create_app": "agentkeel.runtime.app",
    "DrainState": "agentkeel.runtime.draining",
    "EventSink": "agentkeel.runtime.guards",
    "GuardedModel": "agentkeel.runtime.guards",
    "GuardedTools": "agentkeel.runtime.guards",
    "StepLimitReached": "agentkeel.runtime.guards",
    "TurnLog": "agentkeel.runtime.guards",
    "load_agent": "agentkeel.runtime.loader",
    "AgentService": "agentkeel.runtime.service",
    "TurnOutcome": "agentkeel.runtime.service",
    "ToolAgent": "agentkeel.runtime.tool_agent",
    "ValidatedInput": "agentkeel.runtime.validation",
    "validate_input": "agentkeel.runtime.validation",
}

__all__ = [
    "Agent",
    "AgentService",
    "DrainState",
    "EventSink",
    "GuardedModel",
    "GuardedTools",
    "Reply",
    "StepLimitReached",
    "ToolAgent",
    "Turn",
    "TurnLog",
    "TurnModel",
    "TurnOutcome",
    "TurnTools",
    "ValidatedInput",
    "create_app",
    "load_agent",
    "validate_input",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentkeel.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
