"""The replay cache: once per jti until expiry, bounded in size."""

from __future__ import annotations

import pytest

from agentkeel.identity import ReplayCache


def test_an_id_is_new_again_after_it_expires() -> None:
    """A jti seen before its expiry is a replay; after its expiry it is forgotten."""
    cache = ReplayCache()
    assert cache.first_use("a", expires_at=10.0, now=0.0)
    assert not cache.first_use("a", expires_at=10.0, now=9.0)
    assert cache.first_use("a", expires_at=30.0, now=11.0)


def test_the_cache_stays_within_its_size() -> None:
    """When full it forgets the entry closest to expiry first, never growing past max."""
    cache = ReplayCache(max_entries=3)
    for n, jti in enumerate("abcd"):
        assert cache.first_use(jti, expires_at=100.0 + n, now=0.0)
    assert len(cache) == 3
    assert cache.first_use("a", expires_at=200.0, now=1.0)
    assert not cache.first_use("d", expires_at=103.0, now=1.0)
    with pytest.raises(ValueError, match="max_entries"):
        ReplayCache(max_entries=0)
