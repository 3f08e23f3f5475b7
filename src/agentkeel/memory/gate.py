"""The write gate: the fence an operator raises, and read-only after a failed check.

Both refuse writes with 503 and leave reads alone. The fence is for planned
work (a restore, a rollback) and says when to retry; read-only is set by a
failed integrity check and stays until an operator clears it, because writing
more on top of a state that disagrees with its log makes the repair harder.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentkeel.errors import Unavailable
from agentkeel.memory.metrics import MemoryMetrics


@dataclass(slots=True)
class WriteGate:
    """Whether writes may go ahead now, and why not."""

    metrics: MemoryMetrics
    retry_after_s: float
    fence_reason: str | None = None
    read_only_reason: str | None = None

    def __post_init__(self) -> None:
        self.metrics.fenced.set(0)
        self.metrics.read_only.set(0)

    @property
    def fenced(self) -> bool:
        return self.fence_reason is not None

    @property
    def read_only(self) -> bool:
        return self.read_only_reason is not None

    def raise_fence(self, reason: str) -> bool:
        """Raise the fence; False if it was up already (the reason is updated)."""
        was_up = self.fenced
        self.fence_reason = reason
        self.metrics.fenced.set(1)
        return not was_up

    def lift_fence(self) -> bool:
        """Lift the fence; False if it was not up."""
        was_up = self.fenced
        self.fence_reason = None
        self.metrics.fenced.set(0)
        return was_up

    def set_read_only(self, reason: str) -> None:
        self.read_only_reason = reason
        self.metrics.read_only.set(1)

    def clear_read_only(self) -> bool:
        was = self.read_only
        self.read_only_reason = None
        self.metrics.read_only.set(0)
        return was

    def check(self) -> None:
        """Raise the 503 a write gets while the fence is up or the store is read-only."""
        if self.fence_reason is not None:
            raise Unavailable(
                f"memory writes are fenced ({self.fence_reason}); reads still work. Retry "
                "after the Retry-After delay; an operator lifts the fence with "
                "DELETE /admin/fence.",
                code="memory_fenced",
                retry_after=self.retry_after_s,
            )
        if self.read_only_reason is not None:
            raise Unavailable(
                f"the memory store is read-only because {self.read_only_reason}. An operator "
                "must inspect GET /v1/integrity, repair (POST /v1/restore), then clear it with "
                "DELETE /admin/read-only.",
                code="memory_read_only",
                retry_after=self.retry_after_s,
            )
