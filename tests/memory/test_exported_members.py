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


def test_the_client_loads_without_the_server_or_the_postgres_driver() -> None:
    """Importing ``agentkeel.memory.client`` (what the tool server and agent replicas
    use) loads neither psycopg, the memory server app nor either store."""
    import json
    import subprocess
    import sys

    script = (
        "import json, sys\nimport agentkeel.memory.client\nprint(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(done.stdout))
    assert "agentkeel.memory.client" in loaded
    unwanted = {
        "psycopg",
        "psycopg_pool",
        "agentkeel.memory.app",
        "agentkeel.memory.sqlite_store",
        "agentkeel.memory.postgres_store",
    }
    assert not unwanted & loaded, sorted(unwanted & loaded)
