"""Point-in-time restore and the quarantine, on both backends."""

from __future__ import annotations

import pytest

from agentkeel.errors import Conflict, InvalidRequest
from agentkeel.memory.backends import MemoryBackend
from agentkeel.memory.integrity import check_integrity
from agentkeel.memory.store import CreateMemory, DeleteMemory, SearchQuery, UpdateMemory
from agentkeel.resilience.clock import ManualClock
from tests.memory.helpers import raw_sql

NS = "agent:a"


async def contents(store: MemoryBackend) -> dict[str, str]:
    hits = (await store.search(SearchQuery(namespace=NS, limit=100))).hits
    return {hit.memory.id: hit.memory.content for hit in hits}


async def history(store: MemoryBackend, clock: ManualClock) -> None:
    """seq 1-2 at t0, seq 3-4 at t0+60."""
    await store.write([CreateMemory(namespace=NS, content="alpha", memory_id="a")])
    await store.write([CreateMemory(namespace=NS, content="beta", memory_id="b")])
    clock.advance(60)
    await store.write([UpdateMemory(memory_id="a", namespace=NS, content="alpha v2")])
    await store.write([DeleteMemory(memory_id="b", namespace=NS)])


async def test_restore_to_sequence_quarantines_later_events(
    memory_store: MemoryBackend, clock: ManualClock
) -> None:
    """Restoring to seq 2 brings back the state then; events 3-4 move to a quarantine,
    the log records the restore, and integrity holds."""
    await history(memory_store, clock)
    result = await memory_store.restore(target_seq=2, reason="bad deploy")
    assert result.quarantined_events == 2 and result.restore_seq == 5
    assert await contents(memory_store) == {"a": "alpha", "b": "beta"}

    [quarantine] = await memory_store.list_quarantines()
    assert quarantine.id == result.quarantine_id
    assert (quarantine.from_seq, quarantine.to_seq, quarantine.event_count) == (3, 4, 2)
    assert quarantine.reason == "bad deploy" and quarantine.replayed_at is None
    events = await memory_store.quarantine_events(quarantine.id)
    assert [(event.seq, event.op) for event in events] == [(3, "update"), (4, "delete")]

    marker = await memory_store.event_at(5)
    assert marker is not None and marker.op == "restore"
    report = await check_integrity(memory_store)
    assert report.ok, report.summary()

    # New writes continue the chain after the restore event, never reusing 3 or 4.
    written = await memory_store.write([CreateMemory(namespace=NS, content="gamma")])
    assert written.items[0].seq == 6
    assert (await check_integrity(memory_store)).ok


async def test_replay_applies_quarantined_events_again(
    memory_store: MemoryBackend, clock: ManualClock
) -> None:
    """Replaying the quarantine re-applies its writes as new events, once."""
    await history(memory_store, clock)
    result = await memory_store.restore(target_seq=2, reason="test")
    assert result.quarantine_id is not None
    replay = await memory_store.replay_quarantine(result.quarantine_id)
    assert replay.applied == 2 and replay.skipped == ()
    assert await contents(memory_store) == {"a": "alpha v2"}
    assert (await check_integrity(memory_store)).ok
    with pytest.raises(Conflict):
        await memory_store.replay_quarantine(result.quarantine_id)
    [quarantine] = await memory_store.list_quarantines()
    assert quarantine.replayed_at is not None


async def test_replay_skips_events_the_new_state_contradicts(
    memory_store: MemoryBackend, clock: ManualClock
) -> None:
    """A quarantined update is skipped when the memory changed after the restore."""
    await history(memory_store, clock)
    result = await memory_store.restore(target_seq=2, reason="test")
    await memory_store.write([UpdateMemory(memory_id="a", namespace=NS, content="alpha new")])
    assert result.quarantine_id is not None
    replay = await memory_store.replay_quarantine(result.quarantine_id)
    assert replay.applied == 1
    assert [(skip.seq, skip.memory_id) for skip in replay.skipped] == [(3, "a")]
    assert await contents(memory_store) == {"a": "alpha new"}
    assert (await check_integrity(memory_store)).ok


async def test_restore_to_a_time(memory_store: MemoryBackend, clock: ManualClock) -> None:
    """``seq_at_time`` finds the last event at or before a moment; restoring there works."""
    await history(memory_store, clock)
    seq = await memory_store.seq_at_time(1_700_000_030.0)
    assert seq == 2
    assert await memory_store.seq_at_time(1_600_000_000.0) == 0
    await memory_store.restore(target_seq=seq, reason="to a time")
    assert await contents(memory_store) == {"a": "alpha", "b": "beta"}


async def test_restore_to_zero_empties_the_state(
    memory_store: MemoryBackend, clock: ManualClock
) -> None:
    """Sequence 0 is the empty store; every event goes to the quarantine."""
    await history(memory_store, clock)
    result = await memory_store.restore(target_seq=0, reason="start over")
    assert result.memories == 0 and result.quarantined_events == 4
    assert (await check_integrity(memory_store)).ok


async def test_restore_to_head_repairs_a_tampered_table(
    memory_store: MemoryBackend, memory_store_url: str, clock: ManualClock
) -> None:
    """Restoring to the head rebuilds the table from the log and quarantines nothing."""
    await history(memory_store, clock)
    raw_sql(memory_store_url, "UPDATE memories SET content = 'forged' WHERE id = 'a'")
    assert not (await check_integrity(memory_store)).ok
    result = await memory_store.restore(target_seq=4, reason="repair")
    assert result.quarantine_id is None and result.quarantined_events == 0
    assert await contents(memory_store) == {"a": "alpha v2"}
    assert (await check_integrity(memory_store)).ok
    hits = (await memory_store.search(SearchQuery(namespace=NS, text="alpha"))).hits
    assert [hit.memory.id for hit in hits] == ["a"]


async def test_restore_refuses_unknown_positions(
    memory_store: MemoryBackend, clock: ManualClock
) -> None:
    """Beyond the head, or a sequence that was quarantined, is an InvalidRequest."""
    await history(memory_store, clock)
    with pytest.raises(InvalidRequest):
        await memory_store.restore(target_seq=99, reason="x")
    await memory_store.restore(target_seq=2, reason="x")
    with pytest.raises(InvalidRequest) as info:
        await memory_store.restore(target_seq=3, reason="x")
    assert "quarantine" in info.value.message


async def test_restore_from_rows_loads_them(
    memory_store: MemoryBackend, clock: ManualClock
) -> None:
    """Given the rows of a snapshot at the target, the table is loaded from them."""
    await history(memory_store, clock)
    async with memory_store.reader() as reader:
        rows = [memory async for page in reader.memories_by_id() for memory in page]
    await memory_store.write([CreateMemory(namespace=NS, content="later", memory_id="c")])
    result = await memory_store.restore(target_seq=4, reason="snapshot", rows=rows)
    assert result.quarantined_events == 1
    assert await contents(memory_store) == {"a": "alpha v2"}
    assert (await check_integrity(memory_store)).ok
    assert len((await memory_store.search(SearchQuery(namespace=NS, text="alpha"))).hits) == 1
