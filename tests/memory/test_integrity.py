"""Integrity checks: the hash chain and the current table against a replay of the log."""

from __future__ import annotations

import pytest

from agentkeel.memory.backends import MemoryBackend
from agentkeel.memory.integrity import check_integrity
from agentkeel.memory.store import CreateMemory, DeleteMemory, UpdateMemory
from tests.memory.helpers import raw_sql

NS = "agent:a"


async def populate(store: MemoryBackend) -> list[str]:
    ids = []
    for index in range(5):
        result = await store.write(
            [CreateMemory(namespace=NS, content=f"fact {index}", memory_id=f"m{index}")]
        )
        ids.append(result.items[0].memory_id)
    await store.write([UpdateMemory(memory_id="m1", namespace=NS, content="fact 1, revised")])
    await store.write([DeleteMemory(memory_id="m2", namespace=NS)])
    return ids


async def test_healthy_store_passes(memory_store: MemoryBackend) -> None:
    """An untouched store passes both checks and the two digests agree."""
    await populate(memory_store)
    report = await check_integrity(memory_store)
    assert report.ok, report.summary()
    assert (report.events, report.memories, report.head_seq) == (7, 4, 7)
    assert report.replay_digest == report.state_digest


async def test_empty_store_passes(memory_store: MemoryBackend) -> None:
    """A store with no events is consistent."""
    report = await check_integrity(memory_store)
    assert report.ok and report.events == 0 and report.memories == 0


async def test_tampered_event_is_detected(
    memory_store: MemoryBackend, memory_store_url: str
) -> None:
    """Editing an event's payload in the database breaks the chain at that event."""
    await populate(memory_store)
    raw_sql(
        memory_store_url,
        "UPDATE memory_events SET payload = replace(payload, 'fact 3', 'fact 33') WHERE seq = 4",
    )
    report = await check_integrity(memory_store)
    assert not report.ok and not report.chain_ok
    assert report.bad_seq == 4
    assert report.chain_problem is not None and "altered" in report.chain_problem


async def test_removed_event_is_detected(
    memory_store: MemoryBackend, memory_store_url: str
) -> None:
    """Deleting an event from the middle of the log breaks the link after it."""
    await populate(memory_store)
    raw_sql(memory_store_url, "DELETE FROM memory_events WHERE seq = 3")
    report = await check_integrity(memory_store)
    assert not report.chain_ok and report.bad_seq == 4


async def test_truncated_log_is_detected(
    memory_store: MemoryBackend, memory_store_url: str
) -> None:
    """Dropping the newest event is caught by the chain head."""
    await populate(memory_store)
    raw_sql(memory_store_url, "DELETE FROM memory_events WHERE seq = 7")
    report = await check_integrity(memory_store)
    assert not report.chain_ok and report.bad_seq == 7


async def test_tampered_current_row_is_detected(
    memory_store: MemoryBackend, memory_store_url: str
) -> None:
    """Editing a row of the current table is found and named, with the chain intact."""
    await populate(memory_store)
    raw_sql(memory_store_url, "UPDATE memories SET content = 'fact 4, forged' WHERE id = 'm4'")
    report = await check_integrity(memory_store)
    assert report.chain_ok and not report.state_ok and not report.ok
    assert report.bad_memory_ids == ("m4",)
    assert report.bad_namespaces == (NS,)
    assert "content" in report.state_problems[0]
    assert report.replay_digest != report.state_digest


async def test_deleted_and_inserted_rows_are_detected(
    memory_store: MemoryBackend, memory_store_url: str
) -> None:
    """A row missing from the table and a row the log never wrote are both reported."""
    await populate(memory_store)
    raw_sql(memory_store_url, "DELETE FROM memories WHERE id = 'm0'")
    raw_sql(memory_store_url, "UPDATE memories SET id = 'zz-forged' WHERE id = 'm3'")
    report = await check_integrity(memory_store)
    assert not report.state_ok
    assert set(report.bad_memory_ids) == {"m0", "m3", "zz-forged"}
    assert report.state_mismatches == 3


@pytest.mark.parametrize("field", ["version = version + 1", "importance = 0.99"])
async def test_any_changed_field_is_detected(
    memory_store: MemoryBackend, memory_store_url: str, field: str
) -> None:
    """Not only content: every column is compared."""
    await populate(memory_store)
    raw_sql(memory_store_url, f"UPDATE memories SET {field} WHERE id = 'm1'")
    report = await check_integrity(memory_store)
    assert not report.state_ok and report.bad_memory_ids == ("m1",)
