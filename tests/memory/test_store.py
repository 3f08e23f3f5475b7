"""The memory stores: one suite, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from agentkeel.errors import Conflict, InvalidRequest, NotFound
from agentkeel.memory.backends import MemoryBackend
from agentkeel.memory.hashchain import recompute
from agentkeel.memory.store import (
    GENESIS_HASH,
    CreateMemory,
    DeleteMemory,
    SearchQuery,
    UpdateMemory,
)
from agentkeel.resilience.clock import ManualClock

NS = "agent:support/user:1"


async def create(store: MemoryBackend, content: str, namespace: str = NS, **kw: object) -> str:
    result = await store.write([CreateMemory(namespace=namespace, content=content, **kw)])  # type: ignore[arg-type]
    return result.items[0].memory_id


async def test_create_get_update_delete_round_trip(memory_store: MemoryBackend) -> None:
    """A memory keeps every field; an update bumps the version; a delete removes it."""
    result = await memory_store.write(
        [
            CreateMemory(
                namespace=NS,
                content="The user prefers tea over coffee.",
                tags=["preference", "drinks"],
                importance=0.8,
                metadata={"source": "chat", "n": 1.5, "nested": {"b": [1, 2], "a": None}},
            )
        ]
    )
    item = result.items[0]
    assert item.op == "create" and item.seq == 1 and item.memory is not None
    got = await memory_store.get(item.memory_id)
    assert got == item.memory
    assert got is not None
    assert got.tags == ("preference", "drinks")
    assert got.metadata == {"source": "chat", "n": 1.5, "nested": {"b": [1, 2], "a": None}}
    assert got.version == 1 and got.created_at == 1_700_000_000.0

    updated = await memory_store.write(
        [UpdateMemory(memory_id=got.id, namespace=NS, expected_version=1, content="Tea, green.")]
    )
    memory = updated.items[0].memory
    assert memory is not None and memory.version == 2 and memory.content == "Tea, green."
    assert memory.tags == got.tags and memory.importance == 0.8

    await memory_store.write([DeleteMemory(memory_id=got.id, namespace=NS)])
    assert await memory_store.get(got.id) is None
    stats = await memory_store.stats()
    assert (stats.memories, stats.events, stats.head.seq) == (0, 3, 3)


async def test_optimistic_version_conflict(memory_store: MemoryBackend) -> None:
    """An update with a stale expected_version fails with version_conflict and changes nothing."""
    memory_id = await create(memory_store, "first")
    await memory_store.write([UpdateMemory(memory_id=memory_id, namespace=NS, content="second")])
    with pytest.raises(Conflict) as info:
        await memory_store.write(
            [UpdateMemory(memory_id=memory_id, namespace=NS, expected_version=1, content="x")]
        )
    assert info.value.code == "version_conflict"
    got = await memory_store.get(memory_id)
    assert got is not None and got.content == "second" and got.version == 2


async def test_update_in_another_namespace_is_not_found(memory_store: MemoryBackend) -> None:
    """An op naming the wrong namespace cannot touch the memory (it looks absent)."""
    memory_id = await create(memory_store, "secret")
    with pytest.raises(NotFound):
        await memory_store.write([DeleteMemory(memory_id=memory_id, namespace="other")])
    assert await memory_store.get(memory_id) is not None


async def test_invalid_input_is_refused(memory_store: MemoryBackend) -> None:
    """Empty content, a bad namespace, or importance outside 0..1 are InvalidRequest."""
    with pytest.raises(InvalidRequest):
        await memory_store.write([CreateMemory(namespace=NS, content="  ")])
    with pytest.raises(InvalidRequest):
        await memory_store.write([CreateMemory(namespace="has space", content="x")])
    with pytest.raises(InvalidRequest):
        await memory_store.write([CreateMemory(namespace=NS, content="x", importance=1.5)])
    assert (await memory_store.stats()).events == 0


async def test_batch_failing_half_way_leaves_nothing(memory_store: MemoryBackend) -> None:
    """A batch whose third op fails writes no event and no row from the first two."""
    existing = await create(memory_store, "kept")
    before = await memory_store.stats()
    with pytest.raises(NotFound) as info:
        await memory_store.write(
            [
                CreateMemory(namespace=NS, content="one", memory_id="m-one"),
                UpdateMemory(memory_id=existing, namespace=NS, content="changed"),
                DeleteMemory(memory_id="does-not-exist", namespace=NS),
            ]
        )
    assert "operation 2" in info.value.message
    after = await memory_store.stats()
    assert after.events == before.events and after.head == before.head
    assert await memory_store.get("m-one") is None
    kept = await memory_store.get(existing)
    assert kept is not None and kept.content == "kept"


async def test_batch_applies_all_ops_in_order(memory_store: MemoryBackend) -> None:
    """Ops in one batch see each other: create then update the same id."""
    result = await memory_store.write(
        [
            CreateMemory(namespace=NS, content="draft", memory_id="m1"),
            UpdateMemory(memory_id="m1", namespace=NS, expected_version=1, content="final"),
            CreateMemory(namespace=NS, content="other", memory_id="m2"),
        ]
    )
    assert [item.seq for item in result.items] == [1, 2, 3]
    got = await memory_store.get("m1")
    assert got is not None and got.content == "final" and got.version == 2


async def test_idempotent_retry_returns_first_result(memory_store: MemoryBackend) -> None:
    """A retried write with the same key is a no-op that returns the first result."""
    op = CreateMemory(namespace=NS, content="remember this")
    first = await memory_store.write([op], idempotency_key="key-1")
    second = await memory_store.write([op], idempotency_key="key-1")
    assert not first.replayed and second.replayed
    assert second.items == first.items
    assert (await memory_store.stats()).events == 1


async def test_idempotency_key_reused_for_other_request(memory_store: MemoryBackend) -> None:
    """The same key with a different request is a 409 conflict, not the old result."""
    await memory_store.write([CreateMemory(namespace=NS, content="a")], idempotency_key="k")
    with pytest.raises(Conflict) as info:
        await memory_store.write([CreateMemory(namespace=NS, content="b")], idempotency_key="k")
    assert info.value.code == "idempotency_key_reused"


async def test_concurrent_writes_with_one_key_apply_once(memory_store: MemoryBackend) -> None:
    """Ten concurrent retries of one keyed write store it once."""
    op = CreateMemory(namespace=NS, content="once")
    results = await asyncio.gather(
        *(memory_store.write([op], idempotency_key="same") for _ in range(10))
    )
    assert len({result.items[0].memory_id for result in results}) == 1
    assert (await memory_store.stats()).memories == 1


async def test_events_form_a_hash_chain(memory_store: MemoryBackend) -> None:
    """Each event links to the previous one's hash and matches its own."""
    for index in range(3):
        await create(memory_store, f"memory {index}")
    async with memory_store.reader() as reader:
        events = [event async for page in reader.events_by_seq() for event in page]
        head = await reader.head()
    assert [event.seq for event in events] == [1, 2, 3]
    assert events[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
    assert all(recompute(event) == event.hash for event in events)
    assert head.hash == events[-1].hash


async def test_search_ranks_and_filters(memory_store: MemoryBackend, clock: ManualClock) -> None:
    """Full-text search ranks the better match first and stays within the namespace,
    the tags and the time range asked for."""
    await create(memory_store, "The user drinks green tea every morning", tags=["drinks"])
    clock.advance(100)
    await create(memory_store, "Tea tea tea: the user really loves tea", tags=["drinks", "love"])
    await create(memory_store, "The user owns a bicycle", tags=["hobby"])
    await create(memory_store, "Other user likes tea", namespace="agent:support/user:2")

    hits = (await memory_store.search(SearchQuery(namespace=NS, text="tea"))).hits
    assert [hit.memory.content[:9] for hit in hits] == ["Tea tea t", "The user "]
    assert hits[0].score is not None and hits[1].score is not None
    assert hits[0].score > hits[1].score

    tagged = (await memory_store.search(SearchQuery(namespace=NS, text="tea", tags=["love"]))).hits
    assert len(tagged) == 1 and "loves" in tagged[0].memory.content

    early = (
        await memory_store.search(SearchQuery(namespace=NS, text="tea", until=1_700_000_050.0))
    ).hits
    assert [hit.memory.content for hit in early] == ["The user drinks green tea every morning"]

    stemmed = (await memory_store.search(SearchQuery(namespace=NS, text="mornings"))).hits
    assert len(stemmed) == 1

    listing = (await memory_store.search(SearchQuery(namespace=NS, limit=2))).hits
    assert len(listing) == 2 and all(hit.score is None for hit in listing)


async def test_search_text_is_never_a_syntax_error(memory_store: MemoryBackend) -> None:
    """Operators and quotes in user text are treated as plain words."""
    await create(memory_store, "quotes and stars")
    for text in ['"unbalanced', "a AND OR NOT (", "*", "tag:x -y", "'; DROP TABLE memories"]:
        await memory_store.search(SearchQuery(namespace=NS, text=text))
    hits = (await memory_store.search(SearchQuery(namespace=NS, text='"quotes*'))).hits
    assert len(hits) == 1


async def test_search_after_update_and_delete(memory_store: MemoryBackend) -> None:
    """The search index follows updates and deletes."""
    memory_id = await create(memory_store, "likes apples")
    await memory_store.write(
        [UpdateMemory(memory_id=memory_id, namespace=NS, content="likes pears")]
    )
    assert (await memory_store.search(SearchQuery(namespace=NS, text="apples"))).hits == ()
    assert len((await memory_store.search(SearchQuery(namespace=NS, text="pears"))).hits) == 1
    await memory_store.write([DeleteMemory(memory_id=memory_id, namespace=NS)])
    assert (await memory_store.search(SearchQuery(namespace=NS, text="pears"))).hits == ()


async def test_a_common_word_with_a_time_filter_finds_every_newer_match(
    memory_store: MemoryBackend, clock: ManualClock
) -> None:
    """With 2,000 memories holding "common" and 10 newer ones, a search for "common"
    since a moment before the 10 returns exactly those 10, and they are all there
    with a tag filter too."""
    for start in range(0, 2000, 500):
        await memory_store.write(
            [
                CreateMemory(namespace=NS, content=f"common old {i}")
                for i in range(start, start + 500)
            ]
        )
    clock.advance(60)
    since = clock.time()
    await memory_store.write(
        [
            CreateMemory(namespace=NS, content=f"common new {i}", tags=["fresh"] if i % 2 else [])
            for i in range(10)
        ]
    )
    recent = await memory_store.search(SearchQuery(namespace=NS, text="common", since=since))
    assert recent.complete
    assert sorted(hit.memory.content for hit in recent.hits) == sorted(
        f"common new {i}" for i in range(10)
    )
    tagged = await memory_store.search(SearchQuery(namespace=NS, text="common", tags=["fresh"]))
    assert tagged.complete
    assert sorted(hit.memory.content for hit in tagged.hits) == [
        f"common new {i}" for i in (1, 3, 5, 7, 9)
    ]
