"""``turn.memory`` when the turn's ``agent.memory_writes`` is off: reads pass, writes refuse.

A flag or an override can stop an agent from writing memory (during an incident
of poisoned memories, say) without a deploy; the agent keeps reading.
"""

from __future__ import annotations

from typing import Any

from agentkeel.errors import Forbidden

WRITE_METHODS = frozenset({"store", "update", "delete", "delete_namespace"})


class ReadOnlyMemory:
    """Wraps a memory client: ``search``/``get`` (and anything else) pass through, the
    write methods raise 403 ``memory_writes_off``.

    >>> memory = ReadOnlyMemory(client)
    >>> await memory.search(namespace, "tea")   # as before
    >>> await memory.store(namespace, "likes tea")   # Forbidden
    """

    def __init__(self, memory: Any) -> None:
        self._memory = memory

    def __getattr__(self, name: str) -> Any:
        if name in WRITE_METHODS:
            return self._refuse(name)
        return getattr(self._memory, name)

    @staticmethod
    def _refuse(name: str) -> Any:
        async def refused(*args: Any, **kwargs: Any) -> Any:
            raise Forbidden(
                f"Memory writes are off for this turn (agent.memory_writes is false, set by "
                f"a flag or an override); {name} was not done. Reads still work.",
                code="memory_writes_off",
            )

        return refused
