from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from psycopg_pool import PoolTimeout

from agentkeel.errors import ConfigError, InvalidRequest, Unavailable
from agentkeel.secrets import redact_url
from agentkeel.storage.postgres import Connection, PostgresPool, check_schema_version, first_line
from agentkeel.storage.urls import PostgresUrl, SqlitePath, parse_store_url


def _pool(
    url: str = "postgresql://keel:hunter2@db.internal:6543/keel", **kwargs: object
) -> PostgresPool:
    return PostgresPool(
        url=url,
        label="PostgreSQL test store",
        tables="test",
        url_setting="test.url",
        pool_size_setting="test.pool_size",
        **kwargs,  # type: ignore[arg-type]
    )


def test_where_names_host_port_and_database_never_the_password() -> None:
    """``where`` is host:port/database; the password appears nowhere."""
    assert _pool().where == "db.internal:6543/keel"
    assert _pool("postgresql://keel@db").where == "db:5432/keel"


def test_bad_pool_size_and_url_name_the_setting() -> None:
    """A pool size below 1 or an unparsable URL is a ConfigError naming the setting,
    without the URL's password."""
    with pytest.raises(ConfigError, match=r"test\.pool_size is 0"):
        _pool(pool_size=0)
    with pytest.raises(ConfigError, match=r"test\.url is not a valid PostgreSQL URL") as bad:
        _pool("postgresql://keel:hunter2@[db/keel")

    assert "hunter2" not in bad.value.message


async def test_connection_before_open_says_how_to_open() -> None:
    """A connection from a pool never opened is Unavailable naming the store and where."""
    with pytest.raises(Unavailable) as caught:
        async with _pool().connection():
            pass

    assert caught.value.code == "store_unavailable"
    assert "PostgreSQL test store at db.internal:6543/keel is not open" in caught.value.message


async def test_connection_converts_driver_errors(postgres_url: str) -> None:
    """Pool timeouts, lost connections and refused values leave as agentkeel errors."""
    pool = _pool(postgres_url, acquire_timeout_s=0.5)
    await pool.open(migrate=_no_tables, lock_name="agentkeel:test:schema")
    try:
        with pytest.raises(Unavailable) as timeout:
            async with pool.connection():
                raise PoolTimeout("couldn't get a connection after 0.50 sec")
        with pytest.raises(Unavailable) as lost:
            async with pool.connection():
                raise psycopg.OperationalError("server closed the connection\nDETAIL: x")
        with pytest.raises(InvalidRequest) as refused:
            async with pool.connection() as conn:
                await conn.execute("SELECT %s::text", ("a\x00b",))
    finally:
        await pool.aclose()

    assert "raise test.pool_size" in timeout.value.message
    assert timeout.value.retry_after == 1.0
    assert "unavailable: server closed the connection. " in lost.value.message
    assert "test.url" in lost.value.message
    assert refused.value.code == "invalid_value"
    assert "NUL" in refused.value.message


async def test_open_against_no_server_is_unavailable() -> None:
    """A database nobody listens on is Unavailable naming where, not a psycopg error."""
    pool = _pool("postgresql://keel@127.0.0.1:1/keel", connect_timeout_s=1.0)

    with pytest.raises(Unavailable, match=r"PostgreSQL test store at 127\.0\.0\.1:1/keel"):
        await pool.open(migrate=_no_tables, lock_name="agentkeel:test:schema")


async def test_schema_version_from_a_newer_release_is_refused(postgres_url: str) -> None:
    """Tables stamped with a newer version are a ConfigError naming the store."""
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn, conn.transaction():
        await conn.execute("CREATE TEMPORARY TABLE schema_version (component TEXT, version INT)")
        await check_schema_version(conn, component="t", version=3, where="PG x")
        await conn.execute("UPDATE schema_version SET version = 9")

        with pytest.raises(ConfigError) as caught:
            await check_schema_version(conn, component="t", version=3, where="PG x")

    assert "PG x has schema version 9 but this agentkeel understands up to 3" in (
        caught.value.message
    )


def test_first_line_and_redaction() -> None:
    """Errors show their first line only; URLs lose their password."""
    assert first_line(RuntimeError("one\ntwo")) == "one"
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert redact_url("at postgresql://keel:hunter2@db/keel") == "at postgresql://keel:***@db/keel"


def test_parse_store_url_tells_the_backends_apart() -> None:
    """Bare paths and sqlite:/// are SQLite; postgres(ql):// is PostgreSQL; others refused."""
    assert parse_store_url("sqlite:///a.db", what="x") == SqlitePath(Path("a.db"))
    assert parse_store_url("postgres://db/k", what="x") == PostgresUrl("postgres://db/k")
    with pytest.raises(ConfigError, match="memory store URL 'mysql://u:\\*\\*\\*@db/k'"):
        parse_store_url("mysql://u:pw@db/k", what="memory store URL")


async def _no_tables(conn: Connection) -> None:
    await conn.execute("SELECT 1")
