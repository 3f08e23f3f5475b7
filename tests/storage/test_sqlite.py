from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agentkeel.errors import ConfigError, Unavailable
from agentkeel.storage import sqlite as storage


def _errors(path: Path) -> storage.SqliteErrors:
    return storage.SqliteErrors(label="SQLite test store", path=path, busy_timeout_ms=250)


def _create(conn: sqlite3.Connection) -> None:
    for statement in storage.split_statements(
        "CREATE TABLE schema_version (component TEXT PRIMARY KEY, version INTEGER);\n"
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT UNIQUE);\n"
    ):
        conn.execute(statement)


def test_open_database_creates_the_directory_in_wal_mode(tmp_path: Path) -> None:
    """The file and its directory are created, WAL is on and the migration has run."""
    path = tmp_path / "nested" / "store.db"

    conn = storage.open_database(path, busy_timeout_ms=250, migrate=_create)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 250
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 0
    finally:
        conn.close()


def test_write_rolls_back_everything_on_error(tmp_path: Path) -> None:
    """A write that raises leaves no row behind and no transaction open."""
    conn = storage.open_database(tmp_path / "s.db", busy_timeout_ms=250, migrate=_create)
    try:
        with pytest.raises(RuntimeError), storage.write(conn):
            conn.execute("INSERT INTO items (name) VALUES ('a')")
            raise RuntimeError("boom")

        assert not conn.in_transaction
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 0
    finally:
        conn.close()


def test_schema_version_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    """A file stamped with a newer version is a ConfigError naming the store and both versions."""
    conn = storage.open_database(tmp_path / "s.db", busy_timeout_ms=250, migrate=_create)
    try:
        storage.check_schema_version(conn, component="items", version=1, where="SQLite x")
        conn.execute("UPDATE schema_version SET version = 7 WHERE component = 'items'")

        with pytest.raises(ConfigError) as caught:
            storage.check_schema_version(conn, component="items", version=2, where="SQLite x")
    finally:
        conn.close()

    assert "SQLite x has schema version 7" in caught.value.message
    assert "understands up to 2" in caught.value.message
    assert "upgrade agentkeel" in caught.value.message


def test_translate_names_the_store_the_file_and_the_lock_wait(tmp_path: Path) -> None:
    """An operational error names the store, the file and the busy timeout; others say unusable."""
    errors = _errors(tmp_path / "s.db")

    failed = errors.translate(sqlite3.OperationalError("database is locked"))
    unusable = errors.translate(sqlite3.DatabaseError("file is not a database"))

    assert failed.code == "store_unavailable"
    assert f"SQLite test store {tmp_path / 's.db'} failed: database is locked" in failed.message
    assert "250 ms" in failed.message
    assert "is unusable: file is not a database" in unusable.message
    assert "PRAGMA integrity_check" in unusable.message


async def test_worker_runs_calls_and_converts_errors(tmp_path: Path) -> None:
    """Calls run on the worker's connection; a broken statement becomes Unavailable."""
    path = tmp_path / "s.db"
    worker = storage.SqliteWorker(thread_name="test-sqlite", errors=_errors(path))
    await worker.open(lambda: storage.open_database(path, busy_timeout_ms=250, migrate=_create))
    try:
        await worker.run(
            lambda conn, name: conn.execute("INSERT INTO items (name) VALUES (?)", (name,)), "a"
        )
        count = await worker.run(
            lambda conn: conn.execute("SELECT count(*) FROM items").fetchone()[0]
        )

        with pytest.raises(Unavailable, match=r"SQLite test store .* failed: no such table"):
            await worker.run(lambda conn: conn.execute("SELECT * FROM missing"))
    finally:
        await worker.aclose()

    assert count == 1


async def test_worker_passes_integrity_errors_only_when_asked(tmp_path: Path) -> None:
    """A constraint violation stays an IntegrityError for stores that convert their own."""
    path = tmp_path / "s.db"
    passing = storage.SqliteWorker(
        thread_name="test-sqlite", errors=_errors(path), passes_integrity_errors=True
    )
    await passing.open(lambda: storage.open_database(path, busy_timeout_ms=250, migrate=_create))
    try:
        await passing.run(lambda conn: conn.execute("INSERT INTO items (name) VALUES ('a')"))
        with pytest.raises(sqlite3.IntegrityError):
            await passing.run(lambda conn: conn.execute("INSERT INTO items (name) VALUES ('a')"))
    finally:
        await passing.aclose()


async def test_closed_worker_says_it_is_not_open(tmp_path: Path) -> None:
    """A call after aclose is Unavailable saying how to open the store, not a crash."""
    path = tmp_path / "s.db"
    worker = storage.SqliteWorker(thread_name="test-sqlite", errors=_errors(path))
    await worker.open(lambda: storage.open_database(path, busy_timeout_ms=250))
    await worker.aclose()
    await worker.aclose()

    with pytest.raises(Unavailable) as caught:
        await worker.run(lambda conn: None)

    assert "is not open" in caught.value.message
    assert "await store.open()" in caught.value.message


def test_split_statements_keeps_statements_whole() -> None:
    """Statements split at a ';' that ends a line; blank parts are dropped."""
    script = "CREATE TABLE a (x);\nCREATE TABLE b (y TEXT DEFAULT ';');\n\n"

    assert storage.split_statements(script) == [
        "CREATE TABLE a (x)",
        "CREATE TABLE b (y TEXT DEFAULT ';')",
    ]


def test_replicas_opening_a_new_file_together_all_succeed(tmp_path: Path) -> None:
    """Several processes creating the same new database at once (replicas starting
    together) all get a WAL database with the schema, none fails on 'locked'."""
    import multiprocessing

    path = tmp_path / "shared.db"
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(6) as pool:
        results = pool.map(_open_shared, [str(path)] * 12)
    assert results == ["wal"] * 12


def _open_shared(raw: str) -> str:
    def migrate(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
        conn.execute("INSERT INTO t VALUES (1)")

    conn = storage.open_database(Path(raw), busy_timeout_ms=5000, migrate=migrate)
    try:
        mode: str = conn.execute("PRAGMA journal_mode").fetchone()[0]
        return mode
    finally:
        conn.close()
