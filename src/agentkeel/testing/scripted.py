"""The scripted model provider and its steps, for users' own agent tests.

>>> from agentkeel.testing import CallTools, Say, ScriptedProvider
>>> model = ScriptedProvider(script=[CallTools.one("calculator", expression="6 * 7"),
...                                  Say("It is 42.")])
"""

from agentkeel.models.scripted import (
    CallTools,
    Fail,
    Say,
    Script,
    ScriptedProvider,
    ScriptStep,
    Wait,
    load_script,
    parse_step,
)
from agentkeel.resilience.clock import ManualClock

__all__ = [
    "CallTools",
    "Fail",
    "ManualClock",
    "Say",
    "Script",
    "ScriptStep",
    "ScriptedProvider",
    "Wait",
    "load_script",
    "parse_step",
]
