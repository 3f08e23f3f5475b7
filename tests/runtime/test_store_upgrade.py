"""A session store written by an earlier release keeps working: opening a version-1 one
adds the lifecycle columns and dates each session's last activity from its turns;
opening a version-2 one adds the owner's organization; a version-3 one the usage table
(and the reservation function on PostgreSQL); each records the current schema version.
On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import psycopg
import pytest

from agentkeel.resilience.ledger import Hold
from agentkeel.runtime.store import SessionExpiry
from agentkeel.runtime.stores import codec, open_store
from agentkeel.runtime.usage import UsageRecord
from tests.runtime.test_stores import make_session, make_turn

# The tables as the first release created them (only those holding data here).
V1_TABLES = """
CREATE TABLE schema_version (component TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, agent_id TEXT NOT NULL,
    version TEXT NOT NULL, created_at {real} NOT NULL, metadata {json} NOT NULL,
    head INTEGER NOT NULL DEFAULT 0, turn_count INTEGER NOT NULL DEFAULT 0, ended_at {real}
);
CREATE TABLE turns (
    session_id TEXT NOT NULL REFERENCES sessions (session_id), number INTEGER NOT NULL,
    parent INTEGER NOT NULL, content TEXT NOT NULL, reply TEXT NOT NULL,
    messages {json} NOT NULL, usage {json} NOT NULL, tool_calls {json} NOT NULL,
    started_at {real} NOT NULL, completed_at {real} NOT NULL, version TEXT NOT NULL,
    correlation_id TEXT, PRIMARY KEY (session_id, number)
);
INSERT INTO schema_version VALUES ('sessions', 1);
INSERT INTO sessions VALUES ('old', 'ana', 'default', 'v0', 1000.0, '{{}}', 2, 2, NULL);
INSERT INTO sessions VALUES ('done', 'bob', 'default', 'v0', 1000.0, '{{}}', 0, 0, 1500.0);
"""

MESSAGES = json.dumps([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
V1_TURN = (
    "INSERT INTO turns VALUES ('old', {n}, {parent}, 'hi', 'yo', '{messages}', '{{}}', '[]',"
    " {started}, {completed}, 'v0', NULL)"
)


def v1_statements(*, real: str, json_type: str) -> list[str]:
    script = V1_TABLES.format(real=real, json=json_type)
    statements = [part.strip() for part in script.split(";\n") if part.strip()]
    for number, completed in ((1, 1100.0), (2, 1300.0)):
        statements.append(
            V1_TURN.format(
                n=number,
                parent=number - 1,
                messages=MESSAGES,
                started=completed - 10,
                completed=completed,
            )
        )
    return statements


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def v1_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL whose database holds tables written by the first release."""
    if request.param == "sqlite":
        path = tmp_path / "sessions.db"
        with sqlite3.connect(path) as conn:
            for statement in v1_statements(real="REAL", json_type="TEXT"):
                conn.execute(statement)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_schema_url")
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in v1_statements(real="DOUBLE PRECISION", json_type="JSONB"):
            conn.execute(statement.replace("%", "%%"))
    return url


async def test_a_first_release_store_is_upgraded_in_place_and_keeps_working(
    v1_store_url: str,
) -> None:
    """Old sessions and turns read back; the last activity is the last turn's completion
    (creation without turns); an ended session stays ended; new turns are stored; the
    idle rule applies to old sessions; the schema version becomes current; reopening is a
    no-op."""
    store = open_store(v1_store_url)
    await store.open()
    try:
        old = await store.get_session("old")
        assert old is not None
        assert (old.turn_count, old.last_active_at, old.ended_at) == (2, 1300.0, None)
        assert old.organization is None
        done = await store.get_session("done")
        assert done is not None and (done.ended_at, done.last_active_at) == (1500.0, 1000.0)
        assert [turn.number for turn in await store.context_turns("old")] == [1, 2]

        await store.append_turn(
            make_turn(3, 2, session_id="old", completed_at=1400.0, replica="replica-1")
        )
        moved = await store.get_session("old")
        assert moved is not None and (moved.last_active_at, moved.replica) == (1400.0, "replica-1")
        ended = await store.end_expired_sessions(
            SessionExpiry(idle_timeout_s=1800), now=1400.0 + 1800, limit=10
        )
        assert [(s.session_id, s.ended_at, s.end_reason) for s in ended] == [
            ("old", 3200.0, "idle_timeout")
        ]
    finally:
        await store.aclose()
    again = open_store(v1_store_url)
    await again.open()
    try:
        assert (await again.get_session("old")) is not None
    finally:
        await again.aclose()
    assert await _schema_version(v1_store_url) == codec.SCHEMA_VERSION == 4


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def v2_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL whose tables are schema version 2: today's, without ``organization``,
    holding one session of 'ana'."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sessions.db'}"
    else:
        url = request.getfixturevalue("postgres_schema_url")
    asyncio.run(_create_current(url))
    statements = [
        "ALTER TABLE sessions DROP COLUMN organization",
        "UPDATE schema_version SET version = 2 WHERE component = 'sessions'",
    ]
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for statement in statements:
                conn.execute(statement)
    else:
        with psycopg.connect(url, autocommit=True) as pg:
            for statement in statements:
                pg.execute(statement)
    return url


async def _create_current(url: str) -> None:
    store = open_store(url)
    await store.open()
    try:
        await store.create_session(make_session("before", user_id="ana"))
    finally:
        await store.aclose()


async def test_a_version_2_store_gains_the_owner_organization(v2_store_url: str) -> None:
    """A version-2 store gets the ``organization`` column on open: its sessions read
    back with none, a new session keeps its organization, the version becomes current."""
    assert "organization" not in await _session_columns(v2_store_url)
    store = open_store(v2_store_url)
    await store.open()
    try:
        before = await store.get_session("before")
        assert before is not None and (before.user_id, before.organization) == ("ana", None)
        await store.create_session(make_session("after", user_id="bob", organization="acme"))
        after = await store.get_session("after")
        assert after is not None and (after.user_id, after.organization) == ("bob", "acme")
    finally:
        await store.aclose()
    assert "organization" in await _session_columns(v2_store_url)
    assert await _schema_version(v2_store_url) == codec.SCHEMA_VERSION == 4


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def v3_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL whose tables are schema version 3: today's, without the usage table
    (and, on PostgreSQL, without the reservation function), with a budget row of 'ana'."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sessions.db'}"
    else:
        url = request.getfixturevalue("postgres_schema_url")
    asyncio.run(_create_current(url))
    statements = [
        "DROP TABLE token_usage",
        "INSERT INTO budgets (key, used, reserved) VALUES ('user:ana:2023-11-14', 40, 0)",
        "UPDATE schema_version SET version = 3 WHERE component = 'sessions'",
    ]
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for statement in statements:
                conn.execute(statement)
    else:
        statements.append("DROP FUNCTION keel_reserve_tokens(text[], bigint[], bigint)")
        with psycopg.connect(url, autocommit=True) as pg:
            for statement in statements:
                pg.execute(statement)
    return url


async def test_a_version_3_store_gains_usage_and_multi_key_reservations(
    v3_store_url: str,
) -> None:
    """A version-3 store gets the usage table (and the reservation function) on open: its
    budget rows keep counting, a reservation over several keys and a usage row work, the
    version becomes 4."""
    store = open_store(v3_store_url)
    await store.open()
    try:
        holds = [Hold("user:ana:2023-11-14", 100), Hold("user:ana:2023-11", 1000)]
        assert (await store.reserve(holds, 61)).refused == 0
        assert (await store.reserve(holds, 60)).committed == (100, 60)
        await store.record_usage(
            UsageRecord(
                day="2023-11-14",
                user_id="ana",
                organization=None,
                agent_id="default",
                model="m",
                key_link="platform",
                input_tokens=5,
                output_tokens=7,
                spend=0.5,
            )
        )
        rows = await store.user_usage(
            "ana", organization=None, first_day="2023-11-01", last_day="2023-11-30"
        )
        assert [(r.day, r.totals.total_tokens, r.totals.spend) for r in rows] == [
            ("2023-11-14", 12, 0.5)
        ]
    finally:
        await store.aclose()
    assert await _schema_version(v3_store_url) == codec.SCHEMA_VERSION == 4


async def _session_columns(url: str) -> set[str]:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}
    with psycopg.connect(url) as pg:
        rows = pg.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'sessions' AND table_schema = current_schema()"
        ).fetchall()
    return {str(row[0]) for row in rows}


async def _schema_version(url: str) -> int:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            row = conn.execute(
                "SELECT version FROM schema_version WHERE component = 'sessions'"
            ).fetchone()
    else:
        with psycopg.connect(url) as pg:
            row = pg.execute(
                "SELECT version FROM schema_version WHERE component = 'sessions'"
            ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.postgres
async def test_opening_an_up_to_date_postgres_store_takes_no_table_lock(
    postgres_schema_url: str,
) -> None:
    """A replica starting beside busy ones alters nothing: with another transaction
    holding a lock on the sessions table, opening an up-to-date store still succeeds
    at once (an ALTER TABLE would wait for that lock)."""
    first = open_store(postgres_schema_url)
    await first.open()
    await first.aclose()
    with psycopg.connect(postgres_schema_url) as busy:
        busy.execute("LOCK TABLE sessions IN ROW EXCLUSIVE MODE")  # what a turn's UPDATE holds
        second = open_store(postgres_schema_url)
        await asyncio.wait_for(second.open(), timeout=10)
        await second.aclose()
        busy.rollback()
