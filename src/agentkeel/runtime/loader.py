"""Load a user's agent from ``package.module:object``.

The object may be an agent instance, a class (instantiated with no
arguments) or a zero-argument factory function. Whatever it is, the result
must have an ``async def respond(self, turn)``.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from agentkeel.errors import ConfigError
from agentkeel.runtime.types import Agent

_FORM = "'package.module:object', e.g. 'myagent.main:agent'"


def load_agent(entrypoint: str) -> Agent:
    """Import and build the agent that ``entrypoint`` names.

    >>> agent = load_agent("examples.echo:EchoAgent")

    Raises ``ConfigError`` with the entrypoint and the likely fix for every
    failure: bad form, module not importable, missing attribute, a factory that
    needs arguments or fails, or an object without an async ``respond``.
    """
    module_name, sep, attribute = entrypoint.strip().partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(
            f"Agent entrypoint {entrypoint!r} is not of the form {_FORM}. "
            "Set agent.entrypoint (or pass it to 'keel serve') in that form."
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        raise ConfigError(
            f"Agent entrypoint {entrypoint!r}: module {module_name!r} cannot be imported "
            f"(no module named {missing!r}). Check the spelling, and that the package is "
            "installed or its directory is on PYTHONPATH."
        ) from exc
    except Exception as exc:
        raise ConfigError(
            f"Agent entrypoint {entrypoint!r}: importing {module_name!r} raised "
            f"{type(exc).__name__}: {exc}. Fix the error in that module."
        ) from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ConfigError(
                f"Agent entrypoint {entrypoint!r}: module {module_name!r} has no attribute "
                f"{attribute!r}. Check the name after the colon."
            ) from exc
    agent = _build(entrypoint, target)
    respond = getattr(agent, "respond", None)
    if respond is None or not callable(respond):
        raise ConfigError(
            f"Agent entrypoint {entrypoint!r} gave a {type(agent).__name__} with no respond() "
            "method. An agent needs 'async def respond(self, turn: Turn) -> Reply'."
        )
    if not inspect.iscoroutinefunction(respond):
        raise ConfigError(
            f"Agent entrypoint {entrypoint!r}: {type(agent).__name__}.respond is not async. "
            "Declare it 'async def respond(self, turn: Turn) -> Reply'."
        )
    return agent  # type: ignore[no-any-return]


def _build(entrypoint: str, target: Any) -> Any:
    if hasattr(target, "respond") and not inspect.isclass(target):
        return target
    if not callable(target):
        raise ConfigError(
            f"Agent entrypoint {entrypoint!r} names a {type(target).__name__}, which is not "
            "an agent, a class or a factory. Point it at an object with an async respond()."
        )
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        required = [
            p.name
            for p in signature.parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if required:
            kind = "class" if inspect.isclass(target) else "factory"
            raise ConfigError(
                f"Agent entrypoint {entrypoint!r}: the {kind} needs argument(s) "
                f"{', '.join(required)}. Point the entrypoint at a ready agent object or a "
                "factory that takes no arguments."
            )
    try:
        return target()
    except Exception as exc:
        raise ConfigError(
            f"Agent entrypoint {entrypoint!r}: building the agent raised "
            f"{type(exc).__name__}: {exc}."
        ) from exc
