"""In-process tools: plain Python functions served through the ``ToolSet`` Protocol.

A tool's name is the function's name, its description the first paragraph of
its docstring, and its JSON-schema parameters come from the signature (with
per-argument descriptions from a Google-style ``Args:`` section). Arguments a
model sends are validated against the same schema before the call, so a
wrong argument comes back to the model as a failed result it can read and fix.
Sync functions run in a worker thread unless marked ``@runs_inline``.

>>> def add(a: int, b: int = 0) -> int:
...     '''Add two integers.'''
...     return a + b
>>> tools = LocalToolSet([add])
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from agentkeel.errors import ConfigError
from agentkeel.models.types import ToolSpec
from agentkeel.tools.types import ToolContext, ToolResult

_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?)\s*:\s*$")
_INLINE_MARK = "__agentkeel_runs_inline__"

F = TypeVar("F", bound=Callable[..., Any])


def runs_inline(function: F) -> F:
    """Mark a quick sync tool to run on the event loop instead of in a worker thread.

    Handing a call to a worker thread and back costs tens to hundreds of
    microseconds, far more than a tool that computes for a few. Only for
    functions that never block: no I/O, no sleeping, bounded CPU. A slow one
    stalls every other turn of the process, and ``timeout_s`` cannot cut it short.

    >>> @runs_inline
    ... def add(a: int, b: int) -> int:
    ...     '''Add two integers.'''
    ...     return a + b
    """
    setattr(function, _INLINE_MARK, True)
    return function


@dataclass(frozen=True, slots=True)
class _LocalTool:
    name: str
    function: Callable[..., Any]
    spec: ToolSpec
    arguments: type[BaseModel]
    context_param: str | None
    is_async: bool
    inline: bool


class LocalToolSet:
    """Serve Python functions (sync or async) as tools.

    ``allowed`` limits which of the functions are offered and callable; a name
    there that is not one of the functions is a ``ConfigError``. Sync functions
    run in a worker thread so a slow one does not stall other sessions' turns
    (unless marked ``@runs_inline``).
    A parameter annotated ``ToolContext`` receives the caller's context and is
    not shown to the model. ``timeout_s`` bounds each call (result status
    ``timeout``).
    """

    def __init__(
        self,
        functions: Sequence[Callable[..., Any]],
        *,
        allowed: Sequence[str] | None = None,
        timeout_s: float | None = None,
    ) -> None:
        tools: dict[str, _LocalTool] = {}
        for function in functions:
            tool = _describe(function)
            if tool.name in tools:
                raise ConfigError(
                    f"Two tool functions are named '{tool.name}'. Tool names must be unique; "
                    "rename one of the functions."
                )
            tools[tool.name] = tool
        if allowed is not None:
            unknown = [name for name in allowed if name not in tools]
            if unknown:
                raise ConfigError(
                    f"Allowed tool(s) {', '.join(repr(n) for n in unknown)} are not among the "
                    f"functions given ({', '.join(sorted(tools)) or 'none'}). Fix the allowlist "
                    "or pass the missing functions."
                )
            tools = {name: tool for name, tool in tools.items() if name in set(allowed)}
        self._tools = tools
        self._specs = tuple(tool.spec for tool in tools.values())
        self.timeout_s = timeout_s

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the tools this set offers."""
        return tuple(self._tools)

    async def list_tools(self) -> Sequence[ToolSpec]:
        return self._specs

    def input_schema(self, name: str) -> dict[str, Any] | None:
        """The JSON schema of ``name``'s arguments, or None for a tool not in this set."""
        tool = self._tools.get(name)
        return tool.spec.parameters if tool is not None else None

    async def call(
        self, name: str, arguments: dict[str, Any], *, context: ToolContext
    ) -> ToolResult:
        tool = self._tools.get(name)
        if tool is None:
            return ToolResult(
                status="rejected",
                content=f"unknown tool '{name}'; available tools: "
                f"{', '.join(self._tools) or 'none'}",
            )
        try:
            parsed = tool.arguments.model_validate(arguments)
        except ValidationError as exc:
            return ToolResult(
                status="failure",
                content=f"{name} failed: invalid arguments: {_explain(exc)}",
            )
        kwargs = {field: getattr(parsed, field) for field in type(parsed).model_fields}
        if tool.context_param is not None:
            kwargs[tool.context_param] = context
        try:
            async with asyncio.timeout(self.timeout_s):
                if tool.is_async:
                    value = await tool.function(**kwargs)
                elif tool.inline:
                    value = tool.function(**kwargs)
                else:
                    value = await asyncio.to_thread(tool.function, **kwargs)
        except TimeoutError:
            return ToolResult(
                status="timeout", content=f"{name} timed out after {self.timeout_s:g}s"
            )
        except Exception as exc:
            return ToolResult(status="failure", content=f"{name} failed: {_message(exc)}")
        return ToolResult(content=_render(value))


def _describe(function: Callable[..., Any]) -> _LocalTool:
    name = getattr(function, "__name__", "")
    if not name.isidentifier():
        raise ConfigError(
            f"Tool function {function!r} has no usable name ({name!r}); use a named "
            "function (def), not a lambda or a partial."
        )
    try:
        signature = inspect.signature(function)
        hints = get_type_hints(function)
    except (TypeError, ValueError, NameError) as exc:
        raise ConfigError(
            f"Cannot read the signature of tool '{name}': {exc}. Give every parameter a type "
            "that can be resolved at runtime."
        ) from exc
    summary, arg_docs = _parse_docstring(inspect.getdoc(function) or "")
    fields: dict[str, Any] = {}
    context_param = None
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ConfigError(
                f"Tool '{name}' has parameter '{param.name}' of kind {param.kind.description}; "
                "tools take named parameters only (no *args, **kwargs or positional-only)."
            )
        annotation = hints.get(param.name, Any)
        if annotation is ToolContext:
            context_param = param.name
            continue
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (
            annotation,
            Field(default=default, description=arg_docs.get(param.name)),
        )
    try:
        model = create_model(
            f"{name}_arguments",
            __config__=ConfigDict(extra="forbid"),
            **fields,
        )
        schema = _strip_titles(model.model_json_schema())
    except Exception as exc:
        raise ConfigError(
            f"Cannot build a JSON schema for tool '{name}': {exc}. Use JSON-friendly types "
            "(int, float, str, bool, lists, Optional, pydantic models)."
        ) from exc
    schema.setdefault("properties", {})
    description = summary or f"The {name} tool."
    is_async = inspect.iscoroutinefunction(function)
    return _LocalTool(
        name=name,
        function=function,
        spec=ToolSpec(name=name, description=description, parameters=schema),
        arguments=model,
        context_param=context_param,
        is_async=is_async,
        inline=not is_async and getattr(function, _INLINE_MARK, False) is True,
    )


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph, and ``name: description`` entries under ``Args:``."""
    lines = doc.splitlines()
    summary: list[str] = []
    for line in lines:
        if not line.strip() or _SECTION.match(line):
            break
        summary.append(line.strip())
    args: dict[str, str] = {}
    in_args = False
    current: str | None = None
    for line in lines:
        section = _SECTION.match(line)
        if section:
            in_args = section.group(1) in ("Args", "Arguments", "Parameters")
            current = None
            continue
        if not in_args or not line.strip():
            continue
        match = _ARG_LINE.match(line)
        if match and line.startswith(("    ", "\t")) and not line.startswith(("        ", "\t\t")):
            current = match.group(1).lstrip("*")
            args[current] = match.group(2).strip()
        elif current is not None:
            args[current] = f"{args[current]} {line.strip()}".strip()
    return " ".join(summary), args


def _strip_titles(schema: Any) -> Any:
    """Drop pydantic's generated ``title`` keys: noise in every prompt that carries tools."""
    if isinstance(schema, dict):
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key == "title" and isinstance(value, str):
                continue
            if key in ("properties", "$defs") and isinstance(value, dict):
                out[key] = {k: _strip_titles(v) for k, v in value.items()}
            else:
                out[key] = _strip_titles(value)
        return out
    if isinstance(schema, list):
        return [_strip_titles(item) for item in schema]
    return schema


def _explain(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "arguments"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def _message(exc: Exception) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, Mapping | list | tuple | int | float | bool) or value is None:
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)
