"""Both pin stores: pins that expire, counts, whole versions dropped, the table's
compare-and-set, and a SQLite file that keeps it all across a restart."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agentkeel.config.router import RouterSettings
from agentkeel.errors import ConfigError, Unavailable
from agentkeel.router.pins import PinCache, PinStore, open_pin_store
from agentkeel.router.pins_redis import RedisPinStore
from agentkeel.router.pins_sqlite import SqlitePinStore
from agentkeel.router.table import TableDoc, VersionSpec


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


StoreFactory = Callable[[FakeClock], PinStore]


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    if request.param == "sqlite":
        return lambda clock: SqlitePinStore(path=tmp_path / "router.db", ttl_s=60, clock=clock)
    url: str = request.getfixturevalue("redis_url")
    prefix = f"keel-test:{uuid.uuid4().hex}"
    return lambda clock: RedisPinStore(url=url, prefix=prefix, ttl_s=60, clock=clock)


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[tuple[PinStore, FakeClock]]:
    clock = FakeClock()
    opened = make_store(clock)
    await opened.open()
    yield opened, clock
    await opened.drop_version("v1")
    await opened.drop_version("v2")
    await opened.aclose()


async def test_pins_are_written_moved_deleted_and_counted(
    store: tuple[PinStore, FakeClock],
) -> None:
    """A pin reads back; a move changes the version and both counts; a delete removes it."""
    pins, _ = store
    await pins.put("s1", "v1")
    await pins.put("s2", "v1")
    await pins.put("s3", "v2")
    assert await pins.get("s1") == "v1"
    assert await pins.get("nope") is None
    assert await pins.counts(["v1", "v2", "v3"]) == {"v1": 2, "v2": 1, "v3": 0}
    await pins.put("s1", "v2")
    assert await pins.get("s1") == "v2"
    assert await pins.counts(["v1", "v2"]) == {"v1": 1, "v2": 2}
    await pins.delete("s1")
    await pins.delete("s1")
    assert await pins.get("s1") is None
    assert await pins.counts(["v1", "v2"]) == {"v1": 1, "v2": 1}


async def test_pins_expire_after_their_ttl(store: tuple[PinStore, FakeClock]) -> None:
    """Past its TTL a pin is gone and no longer counted (SQLite: by the clock; Redis: by
    its key expiry, so only the count is checked against the clock there)."""
    pins, clock = store
    await pins.put("s1", "v1")
    clock.now += 61
    assert (await pins.counts(["v1"]))["v1"] == 0
    if isinstance(pins, SqlitePinStore):
        assert await pins.get("s1") is None
        assert await pins.purge_expired() == 1


async def test_dropping_a_version_drops_its_pins(store: tuple[PinStore, FakeClock]) -> None:
    """remove_version's pins go with it; other versions keep theirs."""
    pins, _ = store
    for index in range(5):
        await pins.put(f"s{index}", "v1")
    await pins.put("keep", "v2")
    assert await pins.drop_version("v1") == 5
    assert await pins.get("s0") is None
    assert await pins.get("keep") == "v2"


async def test_the_table_is_written_with_compare_and_set(
    store: tuple[PinStore, FakeClock],
) -> None:
    """The first write expects revision 0; a writer holding an old revision loses."""
    pins, _ = store
    assert await pins.read_table() is None
    assert await pins.table_revision() == 0
    first = TableDoc(
        revision=1, stable="v1", versions={"v1": VersionSpec(100, replicas=("http://h:1",))}
    )
    assert await pins.write_table(first, expected_revision=0)
    assert not await pins.write_table(first, expected_revision=0)
    second = TableDoc(revision=2, stable="v1", versions={})
    assert await pins.write_table(second, expected_revision=1)
    assert not await pins.write_table(TableDoc(revision=2), expected_revision=1)
    assert await pins.table_revision() == 2
    assert await pins.read_table() == second


async def test_sqlite_keeps_pins_and_table_across_a_restart(tmp_path: Path) -> None:
    """Closed and opened again, the file still has the pins and the table."""
    path = tmp_path / "router.db"
    first = SqlitePinStore(path=path, ttl_s=3600)
    await first.open()
    await first.put("s1", "v2")
    doc = TableDoc(revision=4, stable="v1", versions={"v1": VersionSpec(100)})
    await first.write_table(doc, expected_revision=0)
    await first.aclose()
    again = SqlitePinStore(path=path, ttl_s=3600)
    await again.open()
    try:
        assert await again.get("s1") == "v2"
        assert await again.read_table() == doc
    finally:
        await again.aclose()


async def test_an_unreachable_redis_is_unavailable_naming_it() -> None:
    """Redis down: Unavailable with the store's URL, not a raw redis error."""
    from tests.integration.test_drain import free_port

    pins = RedisPinStore(url=f"redis://127.0.0.1:{free_port()}/0", prefix="x", ttl_s=1)
    with pytest.raises(Unavailable, match=r"Redis router store redis://127\.0\.0\.1"):
        await pins.open()
    await pins.aclose()


def test_store_urls_are_checked() -> None:
    """sqlite and redis URLs open their store; PostgreSQL or nonsense is a ConfigError."""
    settings = RouterSettings()
    assert isinstance(open_pin_store("sqlite:///x.db", settings=settings), SqlitePinStore)
    assert isinstance(open_pin_store("redis://127.0.0.1:6379/0", settings=settings), RedisPinStore)
    with pytest.raises(ConfigError, match="not PostgreSQL"):
        open_pin_store("postgresql://u@h/db", settings=settings)
    with pytest.raises(ConfigError, match="redis://"):
        open_pin_store("mysql://h/db", settings=settings)


def test_the_cache_drops_its_oldest_pins_first() -> None:
    """Beyond its size the cache forgets the oldest pin; drop_version forgets a version."""
    cache = PinCache(2)
    cache.put("a", "v1")
    cache.put("b", "v2")
    cache.put("c", "v1")
    assert cache.get("a") is None and cache.get("b") == "v2" and len(cache) == 2
    cache.drop_version("v1")
    assert cache.get("c") is None and cache.get("b") == "v2"
