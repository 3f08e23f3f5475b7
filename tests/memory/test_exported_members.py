from __future__ import annotations

import agentkeel.memory


def test_memory_exports_exist() -> None:
    """Every name in agentkeel.memory.__all__ is importable and public."""
    for name in agentkeel.memory.__all__:
        assert hasattr(agentkeel.memory, name), name
        assert not name.startswith("_")


def test_stores_satisfy_the_protocol() -> None:
    """Both backends are MemoryStores."""
    from pathlib import Path

    store = agentkeel.memory.SqliteMemoryStore(path=Path("unused.db"))
    assert isinstance(store, agentkeel.memory.MemoryStore)
    pg = agentkeel.memory.PostgresMemoryStore(url="postgresql://u@127.0.0.1:1/x")
    assert isinstance(pg, agentkeel.memory.MemoryStore)
