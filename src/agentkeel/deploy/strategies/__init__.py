"""Rollout strategies: canary, blue/green and rolling, each a resumable state machine.

``make_strategy(name)`` builds one; the controller (``deploy/controller.py``)
calls its ``advance`` once per tick and saves the release after each call.
"""

from __future__ import annotations

from agentkeel.deploy.state import StrategyName
from agentkeel.deploy.strategies.base import RolloutDeps, RolloutRun, Strategy
from agentkeel.deploy.strategies.bluegreen import BlueGreenStrategy
from agentkeel.deploy.strategies.canary import CanaryStrategy
from agentkeel.deploy.strategies.rolling import RollingStrategy

__all__ = [
    "BlueGreenStrategy",
    "CanaryStrategy",
    "RollingStrategy",
    "RolloutDeps",
    "RolloutRun",
    "Strategy",
    "make_strategy",
]


def make_strategy(name: StrategyName) -> Strategy:
    """A fresh strategy object (strategies hold only what a new controller may forget)."""
    if name == "canary":
        return CanaryStrategy()
    if name == "bluegreen":
        return BlueGreenStrategy()
    if name == "rolling":
        return RollingStrategy()
    raise ValueError(f"unknown strategy {name!r}; one of canary, bluegreen, rolling")
