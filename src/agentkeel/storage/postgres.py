"""PostgreSQL plumbing every scale-out store shares: the pool, schema setup, errors.

A :class:`PostgresPool` owns one ``psycopg_pool.AsyncConnectionPool`` of
autocommit connections. Its :meth:`~PostgresPool.connection` turns psycopg's
errors into agentkeel's at this boundary, and every message names the store,
where it is (``host:port/database``, never the password) and the setting an
operator would change.

>>> pool = PostgresPool(url=url, label="PostgreSQL memory store", tables="memory",
...     url_setting="memory.store_url", pool_size_setting="memory.pool_size")
>>> await pool.open(migrate=create_tables, lock_name="agentkeel:memory:schema")
>>> async with pool.connection() as conn:
...     await conn.execute("SELECT 1")
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from agentkeel.errors import ConfigError, InvalidRequest, Unavailable
from agentkeel.storage.schema import schema_too_new
from agentkeel.storage.urls import redact_url

__all__ = [
    "Connection",
    "PostgresPool",
    "check_schema_version",
    "describe",
    "first_line",
]

Connection = psycopg.AsyncConnection[TupleRow]


class PostgresPool:
    """A store's pool of autocommit connections, with errors that name the store.

    ``label`` starts the messages ("PostgreSQL session store"); ``tables`` names
    what :meth:`open` creates ("session"); ``url_setting`` and
    ``pool_size_setting`` are the settings an operator changes;
    ``data_hint`` explains a value PostgreSQL refused. The pool opens
    connections on demand up to ``pool_size``; ``connect_timeout_s`` bounds a
    new connection and ``acquire_timeout_s`` the wait for a free one.
    """

    def __init__(
        self,
        *,
        url: str,
        label: str,
        tables: str,
        url_setting: str,
        pool_size_setting: str,
        pool_size: int = 10,
        connect_timeout_s: float = 5.0,
        acquire_timeout_s: float = 10.0,
        application_name: str = "agentkeel",
        data_hint: str = "Text cannot contain NUL characters.",
    ) -> None:
        if pool_size < 1:
            raise ConfigError(f"{pool_size_setting} is {pool_size}; it must be at least 1")
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ConfigError(
                f"{url_setting} is not a valid PostgreSQL URL ({redact_url(str(exc))}); "
                "expected postgresql://USER@HOST:PORT/DATABASE"
            ) from exc
        self._url = url
        self._where = describe(params)
        self._label = label
        self._tables = tables
        self._url_setting = url_setting
        self._pool_size_setting = pool_size_setting
        self._pool_size = pool_size
        self._connect_timeout_s = connect_timeout_s
        self._acquire_timeout_s = acquire_timeout_s
        self._data_hint = data_hint
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            # libpq takes whole seconds and treats anything below 2 as 2.
            "connect_timeout": max(2, round(connect_timeout_s)),
        }
        if "application_name" not in params:
            self._connect_kwargs["application_name"] = application_name
        self._pool: AsyncConnectionPool[Connection] | None = None

    @property
    def where(self) -> str:
        """host:port/database, for logs and error messages (never the password)."""
        return self._where

    async def open(
        self,
        *,
        migrate: Callable[[Connection], Awaitable[None]],
        lock_name: str,
        pool_name: str = "agentkeel",
    ) -> None:
        """Create the tables with ``migrate``, then start the pool; a no-op if open.

        ``migrate`` runs in one transaction holding the advisory lock
        ``lock_name``: replicas starting together would otherwise collide in
        PostgreSQL's catalogs even with CREATE TABLE IF NOT EXISTS.
        """
        if self._pool is not None:
            return
        try:
            conn = await psycopg.AsyncConnection.connect(self._url, **self._connect_kwargs)
            async with conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock_name,))
                await migrate(conn)
        except psycopg.OperationalError as exc:
            raise self.unavailable(exc) from exc
        except psycopg.Error as exc:
            raise ConfigError(
                f"cannot create the {self._tables} tables in PostgreSQL at {self._where}: "
                f"{first_line(exc)}. Grant the store's user CREATE on its schema, or "
                "create the tables once with a user that may."
            ) from exc
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            self._url,
            kwargs=self._connect_kwargs,
            min_size=1,
            max_size=self._pool_size,
            open=False,
            timeout=self._acquire_timeout_s,
            name=pool_name,
        )
        try:
            await pool.open(wait=True, timeout=self._connect_timeout_s)
        except PoolTimeout as exc:
            await pool.close()
            raise self.unavailable(exc) from exc
        self._pool = pool

    async def aclose(self) -> None:
        """Close every pooled connection; safe to call twice."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection; psycopg and pool errors leave as agentkeel errors.

        A database that is down, unreachable or out of free connections is
        ``Unavailable`` (code ``store_unavailable``); a value PostgreSQL refuses
        is ``InvalidRequest`` (code ``invalid_value``).
        """
        pool = self._pool
        if pool is None:
            raise Unavailable(
                f"{self._label} at {self._where} is not open (never opened, or "
                "closed during shutdown); call `await store.open()` first",
                code="store_unavailable",
            )
        try:
            async with pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise Unavailable(
                f"no connection to PostgreSQL at {self._where} became free within "
                f"{self._acquire_timeout_s:g} s (pool_size={self._pool_size}): the database "
                "is down or slow, or the pool is too small for the load. Check the database, "
                f"then raise {self._pool_size_setting} if it is healthy.",
                code="store_unavailable",
                retry_after=1.0,
            ) from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise self.unavailable(exc) from exc
        except psycopg.DataError as exc:
            raise InvalidRequest(
                f"PostgreSQL at {self._where} refused a value: {first_line(exc)}. "
                f"{self._data_hint}",
                code="invalid_value",
            ) from exc

    def unavailable(self, exc: BaseException) -> Unavailable:
        """The error for a database that is down or unreachable."""
        return Unavailable(
            f"{self._label} at {self._where} is unavailable: {first_line(exc)}. "
            "Check that the database is up and reachable from this replica, and the URL in "
            f"{self._url_setting}.",
            code="store_unavailable",
            retry_after=1.0,
        )


async def check_schema_version(
    conn: Connection, *, component: str, version: int, where: str
) -> int | None:
    """Record ``version`` for ``component`` in new tables; refuse tables from a newer release.

    Returns the version the tables had (``None`` for new ones), so a store runs its
    upgrade only when there is something to upgrade. Needs the ``schema_version
    (component, version)`` table; run it inside the schema transaction. ``where``
    names the store in the error.
    """
    cursor = await conn.execute(
        "SELECT version FROM schema_version WHERE component = %s", (component,)
    )
    row = await cursor.fetchone()
    if row is None:
        await conn.execute(
            "INSERT INTO schema_version (component, version) VALUES (%s, %s)",
            (component, version),
        )
        return None
    if row[0] > version:
        raise schema_too_new(
            where, found=int(row[0]), supported=version, wrote="created the tables"
        )
    return int(row[0])


def describe(params: dict[str, Any]) -> str:
    """``host:port/database`` of parsed connection parameters, with libpq's defaults."""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    # libpq's default database is the one named like the user.
    dbname = params.get("dbname") or params.get("user") or "postgres"
    return f"{host}:{port}/{dbname}"


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (psycopg adds DETAIL and HINT lines), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
