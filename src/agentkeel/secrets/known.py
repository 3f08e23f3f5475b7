"""The secret values this process holds, so output can be scanned for them.

Every secret source and resolver that reads a value adds it here
(``KnownSecrets.add``); output sanitization redacts any of them found in a
reply, a tool result or a log line. One instance per process, passed in.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

MIN_KNOWN_CHARS = 8
"""Shorter values are not tracked: they would redact ordinary words."""


class KnownSecrets:
    """A thread-safe set of secret values; ``version`` changes whenever one is added.

    >>> known = KnownSecrets()
    >>> known.add("sk-live-0123456789")
    >>> "sk-live-0123456789" in known.values()
    True
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()
        self.version = 0
        for value in values:
            self.add(value)

    def add(self, value: str) -> None:
        value = value.strip()
        if len(value) < MIN_KNOWN_CHARS or value in self._values:
            return
        with self._lock:
            self._values = self._values | {value}
            self.version += 1

    def values(self) -> frozenset[str]:
        return self._values
