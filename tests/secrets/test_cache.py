from __future__ import annotations

from pathlib import Path

import pytest

from agentkeel.errors import SecretError
from agentkeel.resilience.clock import ManualClock
from agentkeel.secrets import CachedSecretSource, FileSecretSource, KnownSecrets


class CountingSource(FileSecretSource):
    def __init__(self, root: Path) -> None:
        super().__init__(root=root)
        self.reads = 0

    def read(self, path: str):  # type: ignore[no-untyped-def]
        self.reads += 1
        return super().read(path)


def test_reads_are_reused_until_the_ttl_and_misses_briefly(tmp_path: Path) -> None:
    """A value is read once per TTL; "not found" is cached for a shorter time."""
    (tmp_path / "k").write_text("sk-cached-0123456789")
    inner = CountingSource(tmp_path)
    clock = ManualClock()
    known = KnownSecrets()
    cache = CachedSecretSource(inner=inner, ttl_s=30, clock=clock, known=known, missing_ttl_s=2)
    cache.read("k")
    cache.read("k")
    assert inner.reads == 1
    assert "sk-cached-0123456789" in known.values()
    clock.advance(31)
    cache.read("k")
    assert inner.reads == 2
    assert cache.read("absent") is None
    (tmp_path / "absent").write_text("sk-arrived-0123456789")
    assert cache.read("absent") is None
    clock.advance(3)
    assert cache.read("absent") is not None


async def test_aread_refresh_and_invalidate(tmp_path: Path) -> None:
    """aread reads a miss off the loop; refresh and invalidate make changes visible now."""
    (tmp_path / "k").write_text("sk-one-0123456789")
    cache = CachedSecretSource(inner=FileSecretSource(root=tmp_path), ttl_s=60, clock=ManualClock())
    first = await cache.arequire("k")
    (tmp_path / "k").write_text("sk-two-0123456789")
    assert (await cache.aread("k")) == first
    refreshed = cache.refresh("k")
    assert (
        refreshed is not None and refreshed.current.value.get_secret_value() == "sk-two-0123456789"
    )
    (tmp_path / "k").write_text("sk-three-0123456789")
    cache.invalidate()
    again = cache.read("k")
    assert again is not None and again.current.value.get_secret_value() == "sk-three-0123456789"


def test_require_names_the_path_and_the_source(tmp_path: Path) -> None:
    """A missing required secret says which path, where, and how to put it."""
    cache = CachedSecretSource(inner=FileSecretSource(root=tmp_path), ttl_s=1, clock=ManualClock())
    with pytest.raises(SecretError) as caught:
        cache.require("orgs/acme/openai")
    assert "orgs/acme/openai" in caught.value.message and "(files)" in caught.value.message
    assert "keel secrets put" in caught.value.message
