"""SQLite plumbing every embedded store shares: connections, write transactions, errors.

A store opens its file with :func:`open_database` (WAL mode, the pragmas, the
schema in one write transaction), runs its calls on a :class:`SqliteWorker`
(one thread, one connection, so the event loop never waits on disk) and
raises the errors a :class:`SqliteErrors` builds, which name the store and
its file.

>>> errors = SqliteErrors(label="SQLite memory store", path=path, busy_timeout_ms=5000)
>>> worker = SqliteWorker(thread_name="keel-memory", errors=errors)
>>> await worker.open(lambda: open_database(path, busy_timeout_ms=5000, migrate=create))
>>> count = await worker.run(count_rows, "memories")
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Concatenate, Literal, ParamSpec, Self, TypeVar

from agentkeel.errors import Unavailable
from agentkeel.storage.schema import schema_too_new

__all__ = [
    "SqliteErrors",
    "SqliteFile",
    "SqliteWorker",
    "Synchronous",
    "check_schema_version",
    "connect",
    "is_locked",
    "open_database",
    "split_statements",
    "write",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")

# Result codes of "someone else holds the lock" (extended codes share the low byte).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


@dataclass(frozen=True, slots=True)
class SqliteErrors:
    """Builds the errors a SQLite-backed store raises, each naming the store and its file.

    ``label`` starts every message ("SQLite session store"); ``busy_timeout_ms``
    is quoted when a lock wait ran out; ``failed_hint`` replaces the default
    advice for an operational failure; ``unusable_hint`` follows the
    integrity-check advice for a file that is not a usable database;
    ``open_hint`` says how to open a store that is not open.
    """

    label: str
    path: Path
    busy_timeout_ms: int
    code: str = "store_unavailable"
    retry_after: float | None = None
    file_kind: str = "a SQLite database"
    failed_hint: str | None = None
    unusable_hint: str = ""
    open_hint: str = "call `await store.open()` first"

    def translate(self, exc: sqlite3.DatabaseError) -> Unavailable:
        """The ``Unavailable`` for a SQLite error: a failed operation or an unusable file."""
        if isinstance(exc, sqlite3.OperationalError):
            hint = self.failed_hint or (
                f"If it says 'locked', another process held the write lock for over "
                f"{self.busy_timeout_ms} ms; otherwise check the disk and the file's permissions."
            )
            return Unavailable(
                f"{self.label} {self.path} failed: {exc}. {hint}",
                code=self.code,
                retry_after=self.retry_after,
            )
        return Unavailable(
            f"{self.label} {self.path} is unusable: {exc}. Check that the file is "
            f"{self.file_kind} written by agentkeel and is not corrupt "
            f"(sqlite3 FILE 'PRAGMA integrity_check'){self.unusable_hint}.",
            code=self.code,
        )

    def not_open(self) -> Unavailable:
        """The error for a call on a store that was never opened or is closed."""
        return Unavailable(
            f"{self.label} {self.path} is not open (never opened, or closed during "
            f"shutdown); {self.open_hint}",
            code=self.code,
        )


def connect(
    path: Path,
    *,
    busy_timeout_ms: int,
    synchronous: Synchronous = "NORMAL",
    foreign_keys: bool = False,
    cache_size_kib: int | None = None,
    cached_statements: int = 128,
    mmap_size_bytes: int | None = None,
) -> sqlite3.Connection:
    """A connection with no implicit transactions, usable from any one thread at a time.

    ``busy_timeout_ms`` is how long a statement waits for another process's
    lock; ``synchronous`` NORMAL survives a process crash, FULL a power cut too;
    ``cache_size_kib`` raises the page cache for stores that walk the whole file;
    ``mmap_size_bytes`` reads up to that much of the file through a memory map, so
    scattered row reads (search over a large file) cost no system call each.
    """
    # isolation_level=None: no implicit transactions; writes say BEGIN IMMEDIATE.
    # check_same_thread=False: the store itself decides which thread uses which.
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, cached_statements=cached_statements
    )
    try:
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys = ON")
        if cache_size_kib is not None:
            # Negative: a size in KiB rather than in pages.
            conn.execute(f"PRAGMA cache_size = {-int(cache_size_kib)}")
        if mmap_size_bytes is not None:
            conn.execute(f"PRAGMA mmap_size = {int(mmap_size_bytes)}")
    except BaseException:
        conn.close()
        raise
    return conn


def open_database(
    path: Path,
    *,
    busy_timeout_ms: int,
    synchronous: Synchronous = "NORMAL",
    foreign_keys: bool = False,
    cache_size_kib: int | None = None,
    cached_statements: int = 128,
    mmap_size_bytes: int | None = None,
    migrate: Callable[[sqlite3.Connection], None] | None = None,
) -> sqlite3.Connection:
    """Create the file and its directory if absent, switch it to WAL, and run ``migrate``.

    ``migrate`` runs in one ``BEGIN IMMEDIATE`` transaction, so replicas starting
    together create the tables once and never see half a schema. The other
    arguments are those of :func:`connect`. The connection is closed if any step
    fails.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(
        path,
        busy_timeout_ms=busy_timeout_ms,
        synchronous=synchronous,
        foreign_keys=foreign_keys,
        cache_size_kib=cache_size_kib,
        cached_statements=cached_statements,
        mmap_size_bytes=mmap_size_bytes,
    )
    try:
        _switch_to_wal(conn, timeout_s=busy_timeout_ms / 1000)
        if migrate is not None:
            with write(conn):
                migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _switch_to_wal(conn: sqlite3.Connection, *, timeout_s: float) -> None:
    """Set WAL mode, which is stored in the file so later connections inherit it.

    While another process creates the same new file, SQLite can refuse the switch
    with SQLITE_BUSY at once, without calling the busy handler; so wait here, up
    to the busy timeout, as for any other lock.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if not is_locked(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


@contextmanager
def write(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: ``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error.

    IMMEDIATE takes the write lock up front, so two processes can never both
    read the same state and then both commit a change based on it.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may already have rolled back (e.g. on a full disk).
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def split_statements(script: str) -> list[str]:
    """The statements of a DDL script, to run one by one inside a transaction.

    ``executescript`` would COMMIT the open transaction first. Splits on ``;``
    at the end of a line, so a ``;`` inside a line (a trigger body) stays put.
    """
    return [part.strip() for part in script.split(";\n") if part.strip()]


def check_schema_version(
    conn: sqlite3.Connection, *, component: str, version: int, where: str
) -> None:
    """Record ``version`` for ``component`` in a new file; refuse a file from a newer release.

    Needs the ``schema_version (component, version)`` table. ``where`` names the
    store in the error, e.g. "SQLite session store /var/lib/keel/sessions.db".
    """
    row = conn.execute(
        "SELECT version FROM schema_version WHERE component = ?", (component,)
    ).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO schema_version (component, version) VALUES (?, ?)", (component, version)
        )
    elif row[0] > version:
        raise schema_too_new(where, found=int(row[0]), supported=version, wrote="wrote the file")


def is_locked(exc: sqlite3.OperationalError) -> bool:
    """True if the statement failed only because another connection held a lock."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


class SqliteWorker:
    """One thread and one connection: every call on the store runs there, in order.

    A single thread serializes the store's writes and keeps the event loop free
    while SQLite waits on the disk or on another process's lock. SQLite errors
    become the ``Unavailable`` that ``errors`` builds. With
    ``passes_integrity_errors`` an ``IntegrityError`` leaves unconverted, for
    stores whose operations turn the constraints they expect into their own
    errors and treat any other as a bug, not as an unusable file.
    """

    def __init__(
        self, *, thread_name: str, errors: SqliteErrors, passes_integrity_errors: bool = False
    ) -> None:
        self._thread_name = thread_name
        self._errors = errors
        self._passes_integrity_errors = passes_integrity_errors
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    @property
    def is_open(self) -> bool:
        """True from :meth:`open` until :meth:`aclose`."""
        return self._executor is not None

    async def open(self, connect: Callable[[], sqlite3.Connection]) -> None:
        """Start the thread and make the connection on it; a no-op if already open."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._thread_name)
        try:
            self._conn = await self.call(connect)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Close the connection after the work already queued, then stop the thread."""
        executor, self._executor = self._executor, None
        conn, self._conn = self._conn, None
        if executor is None:
            return
        # Queued behind any pending work, so the last close checkpoints the WAL.
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        executor.shutdown(wait=True)

    async def run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """``fn(connection, *args, **kwargs)`` on the worker thread."""
        conn = self._conn
        if conn is None:
            raise self._errors.not_open()
        return await self.call(functools.partial(fn, conn, *args, **kwargs))

    async def call(self, fn: Callable[[], _T]) -> _T:
        """``fn()`` on the worker thread, with SQLite errors converted."""
        executor = self._executor
        if executor is None:
            raise self._errors.not_open()
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn)
        except sqlite3.DatabaseError as exc:
            if self._passes_integrity_errors and isinstance(exc, sqlite3.IntegrityError):
                raise
            raise self._errors.translate(exc) from exc

    def schedule(self, fn: Callable[[sqlite3.Connection], None]) -> asyncio.Future[None] | None:
        """Queue ``fn(connection)`` now, errors unconverted; None when the worker is closed.

        For background upkeep whose failure the caller only logs: it runs after
        the work already queued and before any queued later, ``aclose`` included.
        """
        executor, conn = self._executor, self._conn
        if executor is None or conn is None:
            return None
        return asyncio.get_running_loop().run_in_executor(executor, fn, conn)


class SqliteFile:
    """A small SQLite file of one component, served by its own ``SqliteWorker``: opened
    with ``async with`` (or ``open()``), its tables created and its schema version
    checked on open. Subclasses add their calls, run on ``self._worker``."""

    def __init__(
        self,
        path: Path,
        *,
        label: str,
        component: str,
        schema_version: int,
        tables: str,
        thread_name: str,
        busy_timeout_ms: int = 5000,
    ) -> None:
        self.path = path
        self._where = f"{label} {path}"
        self._component = component
        self._schema_version = schema_version
        self._tables = tables
        self._busy_timeout_ms = busy_timeout_ms
        kind = type(self).__name__
        errors = SqliteErrors(
            label=label,
            path=path,
            busy_timeout_ms=busy_timeout_ms,
            open_hint=f"use `async with {kind}(path)`, or await its `open()` first",
        )
        self._worker = SqliteWorker(thread_name=thread_name, errors=errors)

    async def open(self) -> None:
        await self._worker.open(
            lambda: open_database(
                self.path, busy_timeout_ms=self._busy_timeout_ms, migrate=self._migrate
            )
        )

    async def aclose(self) -> None:
        await self._worker.aclose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        for statement in split_statements(self._tables):
            conn.execute(statement)
        check_schema_version(
            conn, component=self._component, version=self._schema_version, where=self._where
        )
