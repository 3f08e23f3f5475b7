"""``CompositeToolSet``: several tool sources (local built-ins, MCP servers) as one ``ToolSet``.

Name clashes: a tool name must be unique across sources. ``check()`` raises
``ConfigError`` for a clash, and the runtime calls it at startup so a clash
stops the process before it serves; the fix is a ``prefix`` on one of the MCP
servers (``tools.servers[].prefix``). A clash that appears later (a server
added a tool while running) does not fail turns: the earlier source keeps the
name, the later tool is hidden, and an error is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from agentkeel.errors import ConfigError, KeelError
from agentkeel.models.types import ToolSpec
from agentkeel.tools.types import ToolContext, ToolResult, ToolSet

logger = logging.getLogger("agentkeel.tools.client")


class CompositeToolSet:
    """Merge named tool sources; calls go to the source that offers the name.

    A source that cannot list its tools (an MCP server that was never reached)
    contributes none until it can; the others still work.

    >>> tools = CompositeToolSet([("local", builtin_toolset(["calculator"])),
    ...                           ("tools", McpToolSource(name="tools", url=...))])
    """

    def __init__(self, sources: Sequence[tuple[str, ToolSet]]) -> None:
        names = [name for name, _ in sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"Tool source names must be unique, got {names}.")
        self._sources = list(sources)
        self._owner: dict[str, str] = {}
        self._reported: set[tuple[str, str]] = set()
        self._reachable: set[str] = set()

    @property
    def sources(self) -> list[tuple[str, ToolSet]]:
        """The sources in order of precedence."""
        return list(self._sources)

    def source_of(self, tool: str) -> str | None:
        """The name of the source that offers ``tool`` (after ``list_tools``)."""
        return self._owner.get(tool)

    async def list_tools(self) -> Sequence[ToolSpec]:
        specs, _ = await self._collect()
        return specs

    async def check(self) -> list[str]:
        """List every source's tools; raise ``ConfigError`` on a name clash.
        Returns the names of sources that could not be reached."""
        _, clashes = await self._collect()
        if clashes:
            detail = "; ".join(
                f"'{tool}' is offered by both '{first}' and '{second}'"
                for tool, first, second in clashes
            )
            raise ConfigError(
                f"Tool name clash: {detail}. Tool names must be unique across sources; set a "
                "prefix on one of the MCP servers (tools.servers[].prefix, e.g. 'weather_') or "
                "remove the tool from one of them."
            )
        return [name for name, source in self._sources if name not in self._reachable]

    async def _collect(self) -> tuple[list[ToolSpec], list[tuple[str, str, str]]]:
        specs: list[ToolSpec] = []
        owner: dict[str, str] = {}
        clashes: list[tuple[str, str, str]] = []
        self._reachable = set()
        for name, source in self._sources:
            try:
                offered = await source.list_tools()
            except KeelError as exc:
                logger.warning(
                    "tool source %s is unavailable; its tools are not offered: %s",
                    name,
                    exc.message,
                    extra={"event": "tool_discovery"},
                )
                continue
            self._reachable.add(name)
            for spec in offered:
                if spec.name in owner:
                    clashes.append((spec.name, owner[spec.name], name))
                    if (spec.name, name) not in self._reported:
                        self._reported.add((spec.name, name))
                        logger.error(
                            "tool name clash: '%s' from %s is hidden by the one from %s; set "
                            "tools.servers[].prefix to keep both",
                            spec.name,
                            name,
                            owner[spec.name],
                            extra={"tool": spec.name, "event": "config"},
                        )
                    continue
                owner[spec.name] = name
                specs.append(spec)
        self._owner = owner
        return specs, clashes

    async def call(
        self, name: str, arguments: dict[str, Any], *, context: ToolContext
    ) -> ToolResult:
        if name not in self._owner:
            await self._collect()
        source_name = self._owner.get(name)
        if source_name is None:
            return ToolResult(
                status="rejected",
                content=f"unknown tool '{name}'; available tools: "
                f"{', '.join(self._owner) or 'none'}",
            )
        source = dict(self._sources)[source_name]
        return await source.call(name, arguments, context=context)
