"""What the rollout controller calls besides ``deploy/types.py``'s router and driver.

- ``Judge``: compares the canary's window with the stable one's each analysis
  interval (``agentkeel.deploy.judge.Judge``).
- ``RollbackRunner``: the coordinated rollback (``agentkeel.deploy.rollback.Rollback``);
  the controller runs its code part when the judge fails or an operator aborts.
- ``GoldenCheck``: the golden checks against one replica URL (``ops.golden.GoldenChecks``;
  the Protocol is the rollback's, ``deploy/rollback.py``).
- ``SnapshotTaker``: the memory server's snapshot call (``MemoryApiClient``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from agentkeel.deploy.rollback import GoldenCheck
from agentkeel.deploy.types import VersionWindow

if TYPE_CHECKING:
    from agentkeel.deploy.state import Release

__all__ = [
    "GoldenCheck",
    "Judge",
    "RollbackRunner",
    "SnapshotTaker",
    "Verdict",
]


class Verdict(Protocol):
    """One analysis: ``outcome`` pass | fail | inconclusive; ``rollback`` once the
    configured number of consecutive failing intervals is reached; ``metrics``
    one result per metric (any dataclass or object; the view shows its fields)."""

    @property
    def outcome(self) -> str: ...

    @property
    def rollback(self) -> bool: ...

    @property
    def metrics(self) -> Sequence[Any]: ...


class Judge(Protocol):
    """Stateful across intervals; given cumulative windows each time."""

    def evaluate(self, stable: VersionWindow, canary: VersionWindow) -> Verdict: ...


class RollbackRunner(Protocol):
    """Puts the previous version back (and, unless ``code_only``, the memory state)."""

    async def run(
        self,
        release: Release,
        *,
        code_only: bool = False,
        dry_run: bool = False,
        on_step: Callable[..., Any] | None = None,
    ) -> Any: ...


class SnapshotTaker(Protocol):
    async def create_snapshot(self, *, label: str = "", kind: str = "manual") -> dict[str, Any]:
        """Take a snapshot; the answer carries its ``id``."""
        ...
