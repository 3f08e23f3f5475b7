"""User tool modules: ``keel serve tools --tools package.module``.

A module's public plain functions become tools: functions defined in that
module (not imported into it), whose names do not start with ``_``, and that
are listed in ``__all__`` when the module has one. Their schemas come from
``LocalToolSet``, the same code that describes in-process tools.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from agentkeel.errors import ConfigError


def module_tools(module_name: str) -> list[Callable[..., Any]]:
    """The public plain functions of ``module_name``, in definition order.

    Raises ``ConfigError`` when the module cannot be imported or offers no function.
    """
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"Cannot import tool module '{module_name}': {exc}. Check the name (package.module) "
            "and that the package is installed or on PYTHONPATH."
        ) from exc
    exported: Sequence[str] | None = getattr(module, "__all__", None)
    functions: list[Callable[..., Any]] = []
    for name, value in vars(module).items():
        if name.startswith("_") or not inspect.isfunction(value):
            continue
        if value.__module__ != module.__name__:
            continue
        if exported is not None and name not in exported:
            continue
        functions.append(value)
    if not functions:
        raise ConfigError(
            f"Tool module '{module_name}' defines no public function to serve. Define plain "
            "functions (def or async def, names not starting with '_') in that module."
        )
    return functions


def load_tool_modules(module_names: Sequence[str]) -> list[Callable[..., Any]]:
    """Every tool function of every module, in the order given."""
    return [function for name in module_names for function in module_tools(name)]
