"""A short memory of assertion ids (``jti``) already used, so an assertion works once."""

from __future__ import annotations

import heapq


class ReplayCache:
    """``jti`` values seen recently, each remembered until its assertion expires.

    Per process: behind several tool-server processes, an assertion could be
    replayed once per process within its lifetime (a minute at most), and only
    for the tool it names.

    >>> cache = ReplayCache()
    >>> cache.first_use("a1", expires_at=100.0, now=50.0)
    True
    >>> cache.first_use("a1", expires_at=100.0, now=51.0)
    False
    """

    def __init__(self, *, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self._max = max_entries
        self._seen: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def first_use(self, jti: str, *, expires_at: float, now: float) -> bool:
        """Record ``jti`` and say whether this is its first use before ``expires_at``.

        When full, the entry closest to expiry is forgotten first."""
        self._forget_expired(now)
        if jti in self._seen:
            return False
        while len(self._seen) >= self._max:
            _, oldest = heapq.heappop(self._expiry)
            self._seen.pop(oldest, None)
        self._seen[jti] = expires_at
        heapq.heappush(self._expiry, (expires_at, jti))
        return True

    def _forget_expired(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            _, jti = heapq.heappop(self._expiry)
            self._seen.pop(jti, None)
