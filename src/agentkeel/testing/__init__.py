"""Helpers for testing agents built on agentkeel: a scripted model and its script steps.

>>> from agentkeel.testing import ManualClock, Say, ScriptedProvider
"""

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
