"""Ranked search on SQLite: the namespace token, BM25 over cached statistics, and the
upgrade of files written before the namespace token existed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agentkeel.memory import sqlite_search
from agentkeel.memory.sqlite_search import SearchBudget, TermStats, _varints, namespace_key
from agentkeel.memory.sqlite_store import SqliteMemoryStore
from agentkeel.memory.store import CreateMemory, SearchQuery
from agentkeel.resilience.clock import ManualClock

NS = "agent:support/user:1"
OTHER = "agent:support/user:2"


async def open_store(
    path: Path, clock: ManualClock | None = None, budget: SearchBudget | None = None
) -> SqliteMemoryStore:
    store = SqliteMemoryStore(path=path, clock=clock, search_budget=budget)
    await store.open()
    return store


async def test_rare_words_outrank_common_ones_within_the_namespace(tmp_path: Path) -> None:
    """A memory matching a word rare in the whole store ranks above one matching a common
    word, and memories of another namespace never show up, however many match."""
    store = await open_store(tmp_path / "m.db")
    try:
        await store.write(
            [CreateMemory(namespace=OTHER, content=f"likes tea number {i}") for i in range(50)]
        )
        await store.write(
            [
                CreateMemory(namespace=NS, content="likes tea in the morning"),
                CreateMemory(namespace=NS, content="owns a tandem bicycle"),
                CreateMemory(namespace=NS, content="nothing relevant here"),
            ]
        )
        hits = (await store.search(SearchQuery(namespace=NS, text="tea tandem"))).hits
        assert [hit.memory.content for hit in hits] == [
            "owns a tandem bicycle",
            "likes tea in the morning",
        ]
        assert all(hit.memory.namespace == NS for hit in hits)
        assert hits[0].score is not None and hits[1].score is not None
        assert hits[0].score > hits[1].score > 0
        limited = (await store.search(SearchQuery(namespace=OTHER, text="tea", limit=5))).hits
        assert len(limited) == 5
    finally:
        await store.aclose()


async def test_document_frequencies_are_cached_for_ten_minutes(tmp_path: Path) -> None:
    """A word's document frequency is counted once and reused until it is ten minutes
    old; then it is counted again."""
    clock = ManualClock()
    store = await open_store(tmp_path / "m.db", clock)
    stats = TermStats(clock=clock)
    try:
        await store.write([CreateMemory(namespace=NS, content="tea") for _ in range(2)])
        conn = sqlite3.connect(tmp_path / "m.db")
        try:
            assert stats.document_frequency(conn, "tea") == 2
            await store.write([CreateMemory(namespace=NS, content="more tea")])
            assert stats.document_frequency(conn, "tea") == 2
            clock.advance(601)
            assert stats.document_frequency(conn, "tea") == 3
        finally:
            conn.close()
    finally:
        await store.aclose()


def test_varints_read_sqlite_encoding() -> None:
    """One-byte, two-byte and nine-byte varints decode as SQLite writes them."""
    assert _varints(bytes([5, 0x7F])) == [5, 127]
    assert _varints(bytes([0x82, 0x2C])) == [300]
    assert _varints(bytes([0xFF] * 8 + [0x01])) == [(1 << 64) - 255]


def test_namespace_key_is_one_token_per_namespace() -> None:
    """The key is letters and digits only (one FTS5 token), distinct per namespace."""
    assert namespace_key(NS).isalnum()
    assert namespace_key(NS) != namespace_key(OTHER)


async def test_a_file_from_before_the_namespace_token_is_upgraded(tmp_path: Path) -> None:
    """Opening a store whose search index lacks the namespace token rebuilds the index
    once; its memories are found afterwards and new writes are indexed."""
    path = tmp_path / "old.db"
    store = await open_store(path)
    await store.write([CreateMemory(namespace=NS, content="written before the upgrade")])
    await store.aclose()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for trigger in ("memories_fts_insert", "memories_fts_delete", "memories_fts_update"):
            conn.execute(f"DROP TRIGGER {trigger}")
        conn.execute("DROP TABLE memories_fts")
        conn.execute("ALTER TABLE memories DROP COLUMN ns_key")
        conn.execute(
            "CREATE VIRTUAL TABLE memories_fts USING fts5 (content, tags, content='memories', "
            "content_rowid='rowid', tokenize='porter unicode61')"
        )
        conn.execute("INSERT INTO memories_fts (memories_fts) VALUES ('rebuild')")
    finally:
        conn.close()

    store = await open_store(path)
    try:
        hits = (await store.search(SearchQuery(namespace=NS, text="upgrade"))).hits
        assert [hit.memory.content for hit in hits] == ["written before the upgrade"]
        await store.write([CreateMemory(namespace=NS, content="written after the upgrade")])
        after = (await store.search(SearchQuery(namespace=NS, text="after"))).hits
        assert [hit.memory.content for hit in after] == ["written after the upgrade"]
    finally:
        await store.aclose()


async def test_a_common_word_past_its_cap_still_counts_for_later_candidates(
    tmp_path: Path,
) -> None:
    """A word's lookup stops at its cap (``limit`` + 1 here); a candidate found through
    another word after that point still scores the capped word from its text, so it
    outranks an equally long memory that lacks it, and the result says it is not
    complete."""
    store = await open_store(tmp_path / "m.db", budget=SearchBudget(word_cap=1))
    try:
        await store.write([CreateMemory(namespace=NS, content="likes tea") for _ in range(4)])
        await store.write([CreateMemory(namespace=NS, content="tandem ride today")])
        await store.write([CreateMemory(namespace=NS, content="tandem tea ride")])
        result = await store.search(SearchQuery(namespace=NS, text="tandem tea", limit=2))
        hits = result.hits
        assert not result.complete
        assert hits[0].memory.content == "tandem tea ride"
        assert hits[0].score is not None and hits[1].score is not None
        assert hits[0].score > hits[1].score
        assert hits[1].memory.content == "tandem ride today"
    finally:
        await store.aclose()


async def test_a_common_words_frequency_is_estimated_from_a_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A word in more memories than DF_SAMPLE gets an estimate scaled from how far its
    first matches reach into the rowids; a rarer word is counted exactly."""
    monkeypatch.setattr(sqlite_search, "DF_SAMPLE", 3)
    clock = ManualClock()
    store = await open_store(tmp_path / "m.db", clock)
    try:
        for index in range(10):
            await store.write(
                [
                    CreateMemory(namespace=NS, content=f"tea number {index}"),
                    CreateMemory(namespace=NS, content="coffee" if index < 2 else "water"),
                ]
            )
        conn = sqlite3.connect(tmp_path / "m.db")
        try:
            stats = TermStats(clock=clock)
            assert 8 <= stats.document_frequency(conn, "tea") <= 14
            assert stats.document_frequency(conn, "coffee") == 2
        finally:
            conn.close()
    finally:
        await store.aclose()


async def test_a_search_past_every_budget_says_it_is_incomplete(tmp_path: Path) -> None:
    """When the time range lists more rows than ``filter_rows`` and a word's matches
    outrun ``scan_rows`` before any passes the filters, the hits stay within the
    filters and the result says it is not complete."""
    clock = ManualClock(wall_start=1_700_000_000.0)
    budget = SearchBudget(word_cap=1, scan_rows=2, exact_rows=0, filter_rows=1)
    store = await open_store(tmp_path / "m.db", clock, budget)
    try:
        await store.write([CreateMemory(namespace=NS, content="old tea") for _ in range(5)])
        clock.advance(60)
        since = clock.time()
        await store.write([CreateMemory(namespace=NS, content="new tea") for _ in range(2)])
        result = await store.search(SearchQuery(namespace=NS, text="tea", since=since))
        assert not result.complete
        assert all(hit.memory.content == "new tea" for hit in result.hits)
        roomy = await open_store(tmp_path / "m.db", clock)
        try:
            full = await roomy.search(SearchQuery(namespace=NS, text="tea", since=since))
            assert full.complete and [hit.memory.content for hit in full.hits] == ["new tea"] * 2
        finally:
            await roomy.aclose()
    finally:
        await store.aclose()


def test_a_budget_below_one_row_is_refused() -> None:
    """A budget that could read nothing is a ValueError naming the field."""
    with pytest.raises(ValueError, match="word_cap"):
        SearchBudget(word_cap=0)
    with pytest.raises(ValueError, match="filter_rows"):
        SearchBudget(filter_rows=-1)
