"""Helpers for testing agents built on agentkeel: a scripted model, its script
steps, and a harness that runs an agent in-process behind the real runtime.

>>> from agentkeel.testing import AgentHarness, Say
>>> async with AgentHarness(agent=my_agent, script=[Say("hello")]) as h:
...     outcome = await h.say("hi")
"""

from agentkeel.testing.harness import AgentHarness, HarnessError
from agentkeel.testing.scripted import (
    CallTools,
    Fail,
    ManualClock,
    Say,
    Script,
    ScriptedProvider,
    ScriptStep,
    Wait,
    load_script,
    parse_step,
)

__all__ = [
    "AgentHarness",
    "CallTools",
    "Fail",
    "HarnessError",
    "ManualClock",
    "Say",
    "Script",
    "ScriptStep",
    "ScriptedProvider",
    "Wait",
    "load_script",
    "parse_step",
]
