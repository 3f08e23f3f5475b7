"""A memory backend for the memory tools, kept in a dict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class FakeMemory:
    """Implements the memory tools' backend in memory, keyed by namespace."""

    def __init__(self) -> None:
        self.items: dict[str, list[str]] = {}

    async def search(self, namespace: str, query: str, *, limit: int) -> Sequence[Any]:
        found = [c for c in self.items.get(namespace, []) if query.lower() in c.lower()]
        return [{"content": c} for c in found[:limit]]

    async def store(self, namespace: str, content: str, *, tags: Sequence[str]) -> Any:
        self.items.setdefault(namespace, []).append(content)
        return {"id": f"m{len(self.items[namespace])}"}
