"""``memory_search`` and ``memory_store``: the memory server as tools, in the caller's namespace.

The namespace always comes from the caller's context (the agent, user and
organization the agent runtime names on each call), never from the model's arguments: a model
cannot read or write another user's memories by asking for them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from agentkeel.memory.namespaces import user_namespace
from agentkeel.tools.types import ToolContext

MAX_SEARCH_RESULTS = 20
MEMORY_WRITE_TOOLS = frozenset({"memory_store"})
"""The memory tools that write: refused in a turn whose ``agent.memory_writes`` is off."""
MAX_MEMORY_CHARS = 4_000


class MemoryBackend(Protocol):
    """What the memory tools need from the memory client."""

    async def search(self, namespace: str, query: str, *, limit: int) -> Sequence[Any]: ...

    async def store(self, namespace: str, content: str, *, tags: Sequence[str]) -> Any: ...


class MemoryToolError(ValueError):
    """A memory tool call that cannot go ahead; the message says why."""


def caller_namespace(context: ToolContext) -> str:
    """The namespace of the caller: ``agent:<agent_id>/user:<user_id>``, or
    ``agent:<agent_id>/org:<organization>/user:<user_id>`` for a user of an organization."""
    if not context.agent_id or not context.user_id or context.user_id == "anonymous":
        raise MemoryToolError(
            "memory tools need to know the calling agent and user; this call came without "
            "them (call through the agentkeel tools client, which sends them)"
        )
    return user_namespace(context.agent_id, context.user_id, context.organization)


def make_memory_tools(backend: MemoryBackend) -> list[Callable[..., Awaitable[str]]]:
    """``memory_search`` and ``memory_store`` over ``backend``."""

    async def memory_search(query: str, limit: int = 5, *, context: ToolContext) -> str:
        """Search your long-term memories about this user and return the closest matches.

        Args:
            query: Words to look for, e.g. "favourite programming language".
            limit: How many memories to return at most (1-20).
        """
        namespace = caller_namespace(context)
        count = max(1, min(limit, MAX_SEARCH_RESULTS))
        hits = await backend.search(namespace, query, limit=count)
        if not hits:
            return "no memories matched"
        return json.dumps([_plain(hit) for hit in hits], ensure_ascii=False, default=str)

    async def memory_store(
        content: str, tags: list[str] | None = None, *, context: ToolContext
    ) -> str:
        """Remember a fact about this user for later conversations.

        Args:
            content: The fact to remember, in one or two sentences.
            tags: Optional short labels, e.g. ["preference"].
        """
        namespace = caller_namespace(context)
        text = content.strip()
        if not text:
            raise MemoryToolError("content is empty; send the fact to remember")
        if len(text) > MAX_MEMORY_CHARS:
            raise MemoryToolError(
                f"content is {len(text)} characters; at most {MAX_MEMORY_CHARS} are kept"
            )
        stored = await backend.store(namespace, text, tags=list(tags or ()))
        identifier = _plain(stored).get("id") if stored is not None else None
        return f"stored as memory {identifier}" if identifier else "stored"

    return [memory_search, memory_store]


def _plain(value: Any) -> dict[str, Any]:
    """A JSON-ready dict from a record, a hit (``memory`` + ``score``) or a mapping."""
    if isinstance(value, Mapping):
        return dict(value)
    memory = getattr(value, "memory", None)
    if memory is not None:
        out = _plain(memory)
        out["score"] = getattr(value, "score", None)
        return out
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        data = to_json()
        if isinstance(data, Mapping):
            return dict(data)
    return {"value": str(value)}
