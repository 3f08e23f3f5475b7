"""Which of its servers ``keel up`` starts for a settings object.

``keel up`` plans its children with these, and ``keel render prometheus --target
local`` scrapes the same servers, so the two never disagree.
"""

from __future__ import annotations

from agentkeel.config.settings import KeelSettings

__all__ = ["starts_memory_server", "starts_tool_server"]


def starts_memory_server(settings: KeelSettings) -> bool:
    """Whether ``keel up`` runs its memory server: on unless ``up.memory`` is false or
    ``memory_client.url`` points the agents at a memory server of the user's own."""
    return settings.up.memory and settings.memory_client.url is None


def starts_tool_server(settings: KeelSettings) -> bool:
    """Whether ``keel up`` runs its tool server: on unless ``up.tools`` is false or
    ``tools.servers`` lists the MCP servers the agents use."""
    return settings.up.tools and not settings.tools.servers
