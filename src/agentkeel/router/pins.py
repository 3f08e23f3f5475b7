"""Where the router keeps what must outlive it: session pins and the routing table.

``PinStore`` is the plug-in point: ``SqlitePinStore`` for one router (a file),
``RedisPinStore`` for several routers behind a load balancer (they see each
other's pins and one table). ``open_pin_store(url)`` picks one by URL. The hot
path reads pins from a ``PinCache`` in front of the store; the store is
written when a session is created, moved or ended, and read on a cache miss.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from agentkeel.config.router import RouterSettings
from agentkeel.errors import ConfigError
from agentkeel.resilience.storage import is_redis_uri
from agentkeel.router.table import TableDoc
from agentkeel.secrets.redact import redact_url
from agentkeel.storage.urls import SqlitePath, parse_store_url

__all__ = ["PinCache", "PinStore", "open_pin_store", "pins_url"]


class PinStore(Protocol):
    """Pins (session id -> version, each expiring ``ttl`` after it was written) and the
    routing table, with a compare-and-set on the table's revision."""

    where: str
    """The store, for messages (a file path or a Redis URL without its password)."""

    async def open(self) -> None: ...

    async def aclose(self) -> None: ...

    async def get(self, session_id: str) -> str | None:
        """The version ``session_id`` is pinned to, or ``None``."""
        ...

    async def put(self, session_id: str, version: str) -> None:
        """Pin ``session_id`` to ``version`` (a new pin or a move)."""
        ...

    async def delete(self, session_id: str) -> None: ...

    async def counts(self, versions: Iterable[str]) -> dict[str, int]:
        """Live pins per version (every version of ``versions`` present, 0 if none)."""
        ...

    async def drop_version(self, version: str) -> int:
        """Remove every pin to ``version``; how many there were."""
        ...

    async def table_revision(self) -> int:
        """The stored table's revision (0 when there is none): a cheap change check."""
        ...

    async def read_table(self) -> TableDoc | None: ...

    async def write_table(self, doc: TableDoc, *, expected_revision: int) -> bool:
        """Store ``doc`` if the stored revision is still ``expected_revision`` (0: no
        table yet); ``False`` when another writer changed it first."""
        ...


class PinCache:
    """Pins in memory, the oldest dropped first beyond ``size``.

    A dropped pin is read from the store again on its next request; it is never
    wrong, because pins only change through the store (and a move is computed the
    same way by every router from the shared table).
    """

    __slots__ = ("_pins", "_size")

    def __init__(self, size: int) -> None:
        self._pins: dict[str, str] = {}
        self._size = size

    def get(self, session_id: str) -> str | None:
        return self._pins.get(session_id)

    def put(self, session_id: str, version: str) -> None:
        pins = self._pins
        if session_id not in pins and len(pins) >= self._size:
            del pins[next(iter(pins))]
        pins[session_id] = version

    def delete(self, session_id: str) -> None:
        self._pins.pop(session_id, None)

    def drop_version(self, version: str) -> None:
        for session_id in [s for s, v in self._pins.items() if v == version]:
            del self._pins[session_id]

    def __len__(self) -> int:
        return len(self._pins)


def pins_url(settings: RouterSettings, data_dir: Path) -> str:
    """``router.pins``, else a SQLite file ``router.db`` in the data directory."""
    return settings.pins or f"sqlite:///{data_dir / 'router.db'}"


def open_pin_store(url: str, *, settings: RouterSettings) -> PinStore:
    """The store ``url`` names (not opened yet): ``redis://`` or ``sqlite:///``."""
    if is_redis_uri(url):
        from agentkeel.router.pins_redis import RedisPinStore

        return RedisPinStore(url=url, prefix=settings.redis_prefix, ttl_s=settings.pin_ttl_s)
    try:
        target = parse_store_url(url, what="router.pins")
    except ConfigError as exc:
        raise ConfigError(
            f"{exc.message} (or redis://HOST:PORT/DB to share pins between routers)"
        ) from None
    if not isinstance(target, SqlitePath):
        raise ConfigError(
            f"router.pins {redact_url(url)!r}: the router keeps its pins in SQLite "
            "(sqlite:///PATH.db) or Redis (redis://HOST:PORT/DB), not PostgreSQL"
        )
    from agentkeel.router.pins_sqlite import SqlitePinStore

    return SqlitePinStore(path=target.path, ttl_s=settings.pin_ttl_s)
