"""The session stores: one suite, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from agentkeel.errors import (
    ConfigError,
    Conflict,
    InvalidRequest,
    NotFound,
    SessionEnded,
    Unavailable,
)
from agentkeel.models.types import ChatMessage, ToolCall, Usage
from agentkeel.resilience.ledger import Hold
from agentkeel.runtime.store import (
    BudgetLedger,
    FeedbackRecord,
    SessionRecord,
    SessionStore,
    TurnRecord,
)
from agentkeel.runtime.stores import (
    PostgresSessionStore,
    SessionBackend,
    SqliteSessionStore,
    codec,
    open_store,
)
from agentkeel.runtime.usage import UsageReader, UsageRecorder

SessionStoreFactory = Callable[[], Awaitable[SessionBackend]]


def make_session(session_id: str = "s1", **overrides: object) -> SessionRecord:
    fields: dict[str, object] = {
        "session_id": session_id,
        "user_id": "user-1",
        "agent_id": "support",
        "version": "v1",
        "created_at": 1_700_000_000.25,
        "metadata": {"channel": "web", "tags": ["a", "b"]},
    }
    fields.update(overrides)
    return SessionRecord(**fields)  # type: ignore[arg-type]


def make_turn(number: int, parent: int, session_id: str = "s1", **overrides: object) -> TurnRecord:
    fields: dict[str, object] = {
        "session_id": session_id,
        "number": number,
        "parent": parent,
        "content": f"message {number}",
        "reply": f"reply {number}",
        "messages": [
            ChatMessage(role="user", content=f"message {number}"),
            ChatMessage(role="assistant", content=f"reply {number}"),
        ],
        "usage": Usage(input_tokens=10 * number, output_tokens=number),
        "tool_calls": [],
        "started_at": 1_700_000_100.0 + number,
        "completed_at": 1_700_000_100.5 + number,
        "version": "v1",
        "correlation_id": f"corr-{number}",
    }
    fields.update(overrides)
    return TurnRecord(**fields)  # type: ignore[arg-type]


def as_stored(turn: TurnRecord) -> TurnRecord:
    """The record as a store returns it: read-only tuples in place of lists."""
    return dataclasses.replace(
        turn, messages=tuple(turn.messages), tool_calls=tuple(turn.tool_calls)
    )


async def append_chain(store: SessionStore, count: int, session_id: str = "s1") -> None:
    for number in range(1, count + 1):
        await store.append_turn(make_turn(number, number - 1, session_id))


# --- sessions ---------------------------------------------------------------


async def test_created_session_reads_back_unchanged(session_store: SessionBackend) -> None:
    """A created session reads back field for field (its last activity is its creation),
    and an unknown id reads as None."""
    session = make_session(replica="replica-1")
    await session_store.create_session(session)

    assert await session_store.get_session("s1") == dataclasses.replace(
        session, last_active_at=session.created_at
    )
    assert await session_store.get_session("nope") is None


async def test_creating_a_session_twice_conflicts(session_store: SessionBackend) -> None:
    """A second session with the same id is refused with Conflict, not overwritten."""
    await session_store.create_session(make_session())

    with pytest.raises(Conflict) as caught:
        await session_store.create_session(make_session(user_id="someone-else"))

    assert caught.value.code == "session_exists"
    stored = await session_store.get_session("s1")
    assert stored is not None and stored.user_id == "user-1"


async def test_count_active_sessions_leaves_out_ended_ones(session_store: SessionBackend) -> None:
    """Only sessions that have not ended count as active."""
    for session_id in ("a", "b", "c"):
        await session_store.create_session(make_session(session_id))
    await session_store.end_session("b", 1_700_000_500.0)

    assert await session_store.count_active_sessions() == 2


async def test_end_session_happens_once(session_store: SessionBackend) -> None:
    """end_session sets ended_at and the reason once and returns the ended session; again,
    or for an unknown id, it returns None and changes nothing."""
    await session_store.create_session(make_session())

    ended = await session_store.end_session("s1", 1_700_000_500.0)
    assert ended is not None
    assert (ended.ended_at, ended.end_reason) == (1_700_000_500.0, "deleted")
    assert await session_store.end_session("s1", 1_700_000_999.0, "idle_timeout") is None
    assert await session_store.end_session("nope", 1_700_000_999.0) is None
    stored = await session_store.get_session("s1")
    assert stored is not None
    assert (stored.ended_at, stored.end_reason) == (1_700_000_500.0, "deleted")


# --- turns ------------------------------------------------------------------


async def test_append_turn_stores_the_turn_and_moves_the_head(
    session_store: SessionBackend,
) -> None:
    """A committed turn is listed as stored, becomes the head and is counted."""
    await session_store.create_session(make_session())
    turn = make_turn(1, 0)

    await session_store.append_turn(turn)

    assert await session_store.list_turns("s1") == [as_stored(turn)]
    stored = await session_store.get_session("s1")
    assert stored is not None and (stored.head, stored.turn_count) == (1, 1)


async def test_messages_with_tool_calls_round_trip_exactly(
    session_store_factory: SessionStoreFactory,
) -> None:
    """Messages with tool calls, tool results, usage and tool-call logs read back equal,
    from the replica that wrote them and from a fresh one."""
    session_store, fresh = await session_store_factory(), await session_store_factory()
    await session_store.create_session(make_session())
    messages = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="What is 6 times 7? Ünïcode ✓ 日本"),
        ChatMessage(
            role="assistant",
            content="",
            tool_calls=(
                ToolCall(
                    id="call-1",
                    name="calculator",
                    arguments={"expression": "6*7", "options": {"precision": 2, "exact": True}},
                ),
                ToolCall(id="call-2", name="current_time", arguments={}),
            ),
        ),
        ChatMessage(role="tool", content="42", tool_call_id="call-1", name="calculator"),
        ChatMessage(role="tool", content="12:00", tool_call_id="call-2", name="current_time"),
        ChatMessage(role="assistant", content="42."),
    ]
    tool_calls = [
        {"name": "calculator", "status": "success", "duration_ms": 1.5, "arguments": {"x": [1]}},
        {"name": "current_time", "status": "success", "duration_ms": 0.25, "arguments": {}},
    ]
    turn = make_turn(
        1, 0, messages=messages, tool_calls=tool_calls, usage=Usage(123, 45), correlation_id=None
    )

    await session_store.append_turn(turn)

    [stored] = await fresh.list_turns("s1")
    assert stored == as_stored(turn)
    assert await session_store.context_turns("s1") == [stored]
    assert await fresh.context_turns("s1") == [stored]
    assert stored.messages[2].tool_calls[0].arguments["options"] == {"precision": 2, "exact": True}


async def test_a_duplicate_turn_number_conflicts(session_store: SessionBackend) -> None:
    """A turn whose number is already stored is refused with turn_conflict."""
    await session_store.create_session(make_session())
    await append_chain(session_store, 2)
    await session_store.rewind("s1", 1)

    with pytest.raises(Conflict) as caught:
        await session_store.append_turn(make_turn(2, 1, content="again"))

    assert caught.value.code == "turn_conflict"
    assert [t.content for t in await session_store.list_turns("s1")] == ["message 1", "message 2"]


async def test_a_turn_whose_parent_is_not_the_head_conflicts(
    session_store: SessionBackend,
) -> None:
    """A turn that continued an old head is refused and leaves the session untouched."""
    await session_store.create_session(make_session())
    await session_store.append_turn(make_turn(1, 0))

    with pytest.raises(Conflict) as caught:
        await session_store.append_turn(make_turn(2, 0))

    assert caught.value.code == "turn_conflict"
    assert "head is now turn 1" in caught.value.message
    stored = await session_store.get_session("s1")
    assert stored is not None and (stored.head, stored.turn_count) == (1, 1)
    assert [t.number for t in await session_store.list_turns("s1")] == [1]


async def test_context_follows_parents_after_a_rewind(session_store: SessionBackend) -> None:
    """After 1,2,3 and a rewind to 1, turn 4 continues 1: context is [1,4], all four stay."""
    await session_store.create_session(make_session())
    await append_chain(session_store, 3)

    rewound = await session_store.rewind("s1", 1)
    await session_store.append_turn(make_turn(4, 1))

    assert (rewound.head, rewound.turn_count) == (1, 3)
    assert [t.number for t in await session_store.context_turns("s1")] == [1, 4]
    assert [t.number for t in await session_store.list_turns("s1")] == [1, 2, 3, 4]
    stored = await session_store.get_session("s1")
    assert stored is not None and (stored.head, stored.turn_count) == (4, 4)


async def test_context_is_the_whole_chain_without_rewinds(session_store: SessionBackend) -> None:
    """Without rewinds the context is every turn, oldest first; before any turn it is empty."""
    await session_store.create_session(make_session())
    assert await session_store.context_turns("s1") == []

    await append_chain(session_store, 5)

    assert [t.number for t in await session_store.context_turns("s1")] == [1, 2, 3, 4, 5]


async def test_rewind_to_zero_starts_over(session_store: SessionBackend) -> None:
    """Rewinding to 0 empties the context; the next turn has parent 0."""
    await session_store.create_session(make_session())
    await append_chain(session_store, 2)

    await session_store.rewind("s1", 0)
    assert await session_store.context_turns("s1") == []
    await session_store.append_turn(make_turn(3, 0))

    assert [t.number for t in await session_store.context_turns("s1")] == [3]


async def test_rewinding_a_turn_in_flight_makes_it_conflict(
    session_store: SessionBackend,
) -> None:
    """A turn that began before a rewind cannot commit after it: its parent is no longer head."""
    await session_store.create_session(make_session())
    await append_chain(session_store, 2)

    await session_store.rewind("s1", 1)

    with pytest.raises(Conflict):
        await session_store.append_turn(make_turn(3, 2))


@pytest.mark.parametrize("to_turn", [7, -1])
async def test_rewind_to_a_turn_that_does_not_exist_is_invalid(
    session_store: SessionBackend, to_turn: int
) -> None:
    """Rewinding to a turn the session does not have is a 422 that names the turn."""
    await session_store.create_session(make_session())
    await append_chain(session_store, 2)

    with pytest.raises(InvalidRequest) as caught:
        await session_store.rewind("s1", to_turn)

    assert caught.value.status == 422
    assert f"turn {to_turn}" in caught.value.message
    stored = await session_store.get_session("s1")
    assert stored is not None and stored.head == 2


async def test_rewind_of_an_unknown_session_is_not_found(session_store: SessionBackend) -> None:
    """Rewinding a session that does not exist raises NotFound."""
    with pytest.raises(NotFound) as caught:
        await session_store.rewind("nope", 0)

    assert caught.value.code == "session_not_found"


async def test_an_ended_session_refuses_turns(session_store: SessionBackend) -> None:
    """After end_session, append_turn raises SessionEnded (when and why) and stores nothing."""
    await session_store.create_session(make_session())
    await session_store.end_session("s1", 1_700_000_500.0, "idle_timeout")

    with pytest.raises(SessionEnded) as caught:
        await session_store.append_turn(make_turn(1, 0))

    assert caught.value.code == "session_ended"
    assert caught.value.status == 410
    assert "2023-11-14T22:21:40+00:00" in caught.value.message
    assert "idle_timeout" in caught.value.message
    assert await session_store.list_turns("s1") == []


async def test_a_turn_for_an_unknown_session_is_not_found(session_store: SessionBackend) -> None:
    """append_turn on a session id that was never created raises NotFound."""
    with pytest.raises(NotFound) as caught:
        await session_store.append_turn(make_turn(1, 0, session_id="nope"))

    assert caught.value.code == "session_not_found"


# --- feedback ---------------------------------------------------------------


async def test_feedback_is_appended_in_order(session_store: SessionBackend) -> None:
    """Feedback rows read back in the order given, with and without a turn or comment."""
    await session_store.create_session(make_session())
    first = FeedbackRecord(session_id="s1", score=1.0, created_at=10.0, turn=1, comment="good")
    second = FeedbackRecord(session_id="s1", score=-1.0, created_at=11.0)

    await session_store.add_feedback(first)
    await session_store.add_feedback(second)

    assert await session_store.list_feedback("s1") == [first, second]
    assert await session_store.list_feedback("other") == []


async def test_feedback_for_an_unknown_session_is_not_found(
    session_store: SessionBackend,
) -> None:
    """Feedback must point at a stored session."""
    with pytest.raises(NotFound):
        await session_store.add_feedback(FeedbackRecord(session_id="nope", score=1, created_at=1))


# --- budgets: tests/runtime/test_ledgers.py holds every ledger to one contract ---


# --- replicas ---------------------------------------------------------------


async def test_two_replicas_share_turns_and_only_one_commits_a_number(
    session_store_factory: SessionStoreFactory,
) -> None:
    """Two store objects on one database see each other's turns; one of two racing turns wins."""
    first, second = await session_store_factory(), await session_store_factory()
    await first.create_session(make_session())
    assert await second.get_session("s1") is not None

    results = await asyncio.gather(
        first.append_turn(make_turn(1, 0, content="from first")),
        second.append_turn(make_turn(1, 0, content="from second")),
        return_exceptions=True,
    )

    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and isinstance(failures[0], Conflict)
    winner = "from second" if results[0] is failures[0] else "from first"
    assert [t.content for t in await first.list_turns("s1")] == [winner]
    assert [t.content for t in await second.list_turns("s1")] == [winner]

    await second.append_turn(make_turn(2, 1))
    stored = await first.get_session("s1")
    assert stored is not None and (stored.head, stored.turn_count) == (2, 2)


async def test_a_warm_replica_sees_turns_and_rewinds_another_replica_made(
    session_store_factory: SessionStoreFactory,
) -> None:
    """A store whose cache holds the older turns still returns the current chain after
    another store appended turns and rewound the session."""
    first, second = await session_store_factory(), await session_store_factory()
    await first.create_session(make_session())
    await append_chain(first, 2)
    assert [t.number for t in await first.context_turns("s1")] == [1, 2]

    await second.append_turn(make_turn(3, 2))
    assert [t.number for t in await first.context_turns("s1")] == [1, 2, 3]

    await second.rewind("s1", 1)
    await second.append_turn(make_turn(4, 1))
    context = await first.context_turns("s1")
    assert [t.number for t in context] == [1, 4]
    assert context[-1] == as_stored(make_turn(4, 1))


async def test_many_racing_turns_commit_exactly_once_each(
    session_store_factory: SessionStoreFactory,
) -> None:
    """Replicas racing for each next turn number never both commit it and never break the chain."""
    replicas = [await session_store_factory(), await session_store_factory()]
    await replicas[0].create_session(make_session())

    for number in range(1, 11):
        results = await asyncio.gather(
            *(r.append_turn(make_turn(number, number - 1)) for r in replicas * 2),
            return_exceptions=True,
        )
        assert sum(r is None for r in results) == 1
        assert all(isinstance(r, Conflict) for r in results if r is not None)

    assert [t.number for t in await replicas[1].context_turns("s1")] == list(range(1, 11))


async def test_data_survives_reopening(session_store_factory: SessionStoreFactory) -> None:
    """Opening the store again keeps what is stored; creating the tables is idempotent."""
    first = await session_store_factory()
    await first.create_session(make_session())
    await first.append_turn(make_turn(1, 0))
    await first.aclose()

    again = await session_store_factory()

    assert [t.number for t in await again.list_turns("s1")] == [1]


async def test_a_closed_store_is_unavailable(session_store: SessionBackend) -> None:
    """Calls after aclose raise Unavailable (503) instead of crashing."""
    await session_store.aclose()

    with pytest.raises(Unavailable) as caught:
        await session_store.get_session("s1")

    assert caught.value.code == "store_unavailable"


async def test_both_backends_implement_every_protocol(session_store: SessionBackend) -> None:
    """The store serves as a SessionStore, a BudgetLedger, a UsageRecorder and a
    UsageReader."""
    assert isinstance(session_store, SessionStore)
    assert isinstance(session_store, BudgetLedger)
    assert isinstance(session_store, UsageRecorder)
    assert isinstance(session_store, UsageReader)


# --- backend specifics ------------------------------------------------------


async def test_sqlite_store_uses_wal_and_creates_directories(tmp_path: Path) -> None:
    """The SQLite file is created with its parent directories and is in WAL mode."""
    path = tmp_path / "deep" / "er" / "sessions.db"
    store = SqliteSessionStore(path=path)
    await store.open()
    await store.aclose()

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = conn.execute("SELECT component, version FROM schema_version").fetchall()
    assert versions == [("sessions", codec.SCHEMA_VERSION)]


async def test_sqlite_store_refuses_a_newer_schema(tmp_path: Path) -> None:
    """A file written by a newer schema version is refused with a ConfigError."""
    path = tmp_path / "sessions.db"
    store = SqliteSessionStore(path=path)
    await store.open()
    await store.aclose()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99 WHERE component = 'sessions'")

    with pytest.raises(ConfigError, match="schema version 99"):
        await SqliteSessionStore(path=path).open()


async def test_sqlite_store_on_a_file_that_is_not_a_database_is_unavailable(
    tmp_path: Path,
) -> None:
    """A file that is not SQLite is reported as an unavailable store naming the file."""
    path = tmp_path / "sessions.db"
    path.write_bytes(b"this is not a database" * 100)

    with pytest.raises(Unavailable) as caught:
        await SqliteSessionStore(path=path).open()

    assert str(path) in caught.value.message


async def test_sqlite_store_waits_for_another_process_lock_without_blocking(
    tmp_path: Path,
) -> None:
    """While another connection holds the write lock, a turn waits off the loop, then commits."""
    path = tmp_path / "sessions.db"
    store = SqliteSessionStore(path=path)
    await store.open()
    try:
        await store.create_session(make_session())
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")

        task = asyncio.create_task(store.append_turn(make_turn(1, 0)))
        await asyncio.sleep(0)
        assert not task.done()  # the event loop runs on while the turn waits
        other.execute("COMMIT")
        other.close()
        await task

        assert [t.number for t in await store.list_turns("s1")] == [1]
    finally:
        await store.aclose()


async def test_sqlite_store_locked_past_the_busy_timeout_is_unavailable(tmp_path: Path) -> None:
    """A write lock held longer than the busy timeout is a 503 that says the file was locked."""
    path = tmp_path / "sessions.db"
    store = SqliteSessionStore(path=path, busy_timeout_s=0.01)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(Unavailable, match="database is locked") as caught:
            await store.create_session(make_session())
        assert caught.value.code == "store_unavailable"
    finally:
        other.close()
        await store.aclose()


async def test_sqlite_replicas_writing_in_parallel_keep_the_limit_and_the_chain(
    tmp_path: Path,
) -> None:
    """Two replicas on two threads writing at once never pass the budget or fork the chain."""
    path = tmp_path / "sessions.db"
    setup = SqliteSessionStore(path=path, checkpoint_every=10)
    await setup.open()
    await setup.create_session(make_session())

    async def replica() -> tuple[int, int]:
        store = SqliteSessionStore(path=path, checkpoint_every=10)
        await store.open()
        reserved = committed = 0
        try:
            for _ in range(60):
                reserved += (await store.reserve([Hold("k", 90)], 1)).ok
                session = await store.get_session("s1")
                assert session is not None
                try:
                    await store.append_turn(make_turn(session.turn_count + 1, session.head))
                    committed += 1
                except Conflict:
                    pass
        finally:
            await store.aclose()
        return reserved, committed

    results = await asyncio.gather(
        asyncio.to_thread(asyncio.run, replica()), asyncio.to_thread(asyncio.run, replica())
    )

    assert sum(reserved for reserved, _ in results) == 90
    turns = await setup.list_turns("s1")
    assert [t.number for t in turns] == list(range(1, sum(c for _, c in results) + 1))
    assert [t.number for t in await setup.context_turns("s1")] == [t.number for t in turns]
    await setup.aclose()


async def test_postgres_store_that_cannot_connect_is_unavailable() -> None:
    """A PostgreSQL server that refuses connections is a 503 naming host and port."""
    store = PostgresSessionStore(url="postgresql://postgres@127.0.0.1:1/test")

    with pytest.raises(Unavailable) as caught:
        await store.open()

    assert caught.value.code == "store_unavailable"
    assert "127.0.0.1:1/test" in caught.value.message


@pytest.mark.postgres
async def test_postgres_refuses_nul_characters_as_a_bad_request(
    postgres_schema_url: str,
) -> None:
    """Text PostgreSQL cannot hold is an InvalidRequest, not a server error."""
    store = PostgresSessionStore(url=postgres_schema_url, pool_size=2)
    await store.open()
    try:
        await store.create_session(make_session())
        with pytest.raises(InvalidRequest):
            await store.append_turn(make_turn(1, 0, content="nul \x00 here"))
    finally:
        await store.aclose()


# --- open_store -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///data/sessions.db", Path("data/sessions.db")),
        ("sqlite:////var/lib/keel/sessions.db", Path("/var/lib/keel/sessions.db")),
        ("data/sessions.db", Path("data/sessions.db")),
        ("/var/lib/keel/sessions.db", Path("/var/lib/keel/sessions.db")),
    ],
)
def test_open_store_reads_sqlite_urls_and_bare_paths(url: str, expected: Path) -> None:
    """sqlite:/// is relative, sqlite://// absolute, and a bare path is a SQLite file."""
    store = open_store(url)

    assert isinstance(store, SqliteSessionStore)
    assert store.path == expected


@pytest.mark.parametrize(
    "url", ["postgresql://keel@db:5432/keel", "postgres://keel:secret@db/keel"]
)
def test_open_store_reads_postgres_urls(url: str) -> None:
    """postgresql:// and postgres:// both build the PostgreSQL store without connecting."""
    store = open_store(url, pool_size=3)

    assert isinstance(store, PostgresSessionStore)
    assert store.where.startswith("db:")
    assert isinstance(store, SessionBackend)


@pytest.mark.parametrize(
    "url", ["mysql://keel@db/keel", "sqlite://host/x.db", "sqlite:x.db", "sqlite:///", "  "]
)
def test_open_store_refuses_other_urls(url: str) -> None:
    """Unsupported or malformed URLs are a ConfigError listing the accepted forms."""
    with pytest.raises(ConfigError) as caught:
        open_store(url)

    assert "postgresql://" in caught.value.message
    assert "sqlite:///" in caught.value.message


def test_open_store_does_not_echo_passwords() -> None:
    """A refused URL is named in the error without its password."""
    with pytest.raises(ConfigError) as caught:
        open_store("mysql://keel:hunter2@db/keel")

    assert "hunter2" not in caught.value.message
    assert "mysql://keel:***@db/keel" in caught.value.message


# --- codec ------------------------------------------------------------------


def test_codec_leaves_defaults_out_and_restores_them() -> None:
    """Encoded messages omit empty fields; decoding brings them back equal."""
    message = ChatMessage(role="user", content="hi")

    assert codec.encode_message(message) == {"role": "user", "content": "hi"}
    assert codec.decode_message(codec.loads(codec.dumps(codec.encode_message(message)))) == message


def test_codec_refuses_an_unknown_role() -> None:
    """A stored message with a role no model knows is reported, not passed on."""
    with pytest.raises(ValueError, match="'robot'"):
        codec.decode_message({"role": "robot", "content": "beep"})


def test_turn_cache_drops_the_least_recently_used() -> None:
    """Beyond its limit the cache forgets the turn read longest ago, not the newest."""
    cache = codec.TurnCache(max_turns=2)
    cache.put(make_turn(1, 0))
    cache.put(make_turn(2, 1))
    assert set(cache.get_many("s1", [1])) == {1}  # 1 is now the most recent

    cache.put(make_turn(3, 2))

    assert set(cache.get_many("s1", [1, 2, 3])) == {1, 3}
    assert len(cache) == 2


def test_turn_cache_of_size_zero_keeps_nothing() -> None:
    """cache_turns=0 turns caching off."""
    cache = codec.TurnCache(max_turns=0)
    cache.put(make_turn(1, 0))

    assert cache.get_many("s1", [1]) == {}


def test_turn_cache_chain_follows_parents_and_gives_up_on_a_gap() -> None:
    """The cached chain is oldest first along parents; a turn missing from the cache
    (or a head of 0) gives None or an empty chain instead of a partial one."""
    cache = codec.TurnCache(max_turns=10)
    for turn in (make_turn(1, 0), make_turn(2, 1), make_turn(3, 1)):
        cache.put(as_stored(turn))

    chain = cache.chain("s1", 3)
    assert chain is not None and [t.number for t in chain] == [1, 3]
    assert cache.chain("s1", 0) == []
    assert cache.chain("s1", 4) is None
    assert cache.chain("other", 1) is None


def test_turn_cache_chain_stops_on_a_parent_cycle() -> None:
    """A corrupt parent loop in cached rows ends the walk (None) instead of spinning."""
    cache = codec.TurnCache(max_turns=10)
    cache.put(as_stored(make_turn(1, 2)))
    cache.put(as_stored(make_turn(2, 1)))

    assert cache.chain("s1", 2) is None
