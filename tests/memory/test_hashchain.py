"""The fast text forms in ``hashchain`` equal the canonical JSON they stand for."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agentkeel.memory.hashchain import (
    _event_hash_slow,
    canonical_json,
    event_hash,
    fingerprint_from_columns,
    fingerprint_from_payload,
    memory_fingerprint,
    memory_from_payload,
    payload_for,
)
from agentkeel.memory.store import MemoryRecord

text = st.text(max_size=60)
finite = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
# Keys the fast fingerprint looks for, so nested copies of them are exercised too.
tricky_keys = st.sampled_from(["tags", "importance", "content", "id", "namespace", "a"]) | text


@settings(max_examples=300)
@given(
    seq=st.integers(min_value=0, max_value=2**62),
    time=finite,
    namespace=text,
    op=st.sampled_from(["create", "update", "delete", "restore"]),
    memory_id=text,
    payload=text,
    prev_hash=text,
)
def test_event_hash_equals_the_canonical_form(**fields: Any) -> None:
    """The hand-written event text hashes exactly like canonical_json of the fields."""
    assert event_hash(**fields) == _event_hash_slow(**fields)


@settings(max_examples=300)
@given(
    memory_id=text,
    namespace=text,
    content=text,
    tags=st.lists(text, max_size=4),
    importance=finite,
    metadata=st.dictionaries(tricky_keys, json_values, max_size=4),
    created_at=finite,
    updated_at=finite,
    version=st.integers(min_value=1, max_value=10**9),
)
def test_fast_fingerprints_equal_the_canonical_one(**fields: Any) -> None:
    """Splicing id and namespace into a payload, or writing the fingerprint from stored
    columns, gives the memory's fingerprint whatever the content, tags and (nested,
    look-alike) metadata keys hold."""
    memory = MemoryRecord(
        id=fields["memory_id"],
        namespace=fields["namespace"],
        content=fields["content"],
        tags=tuple(fields["tags"]),
        importance=fields["importance"],
        metadata=fields["metadata"],
        created_at=fields["created_at"],
        updated_at=fields["updated_at"],
        version=fields["version"],
    )
    payload = payload_for(memory)
    expected = memory_fingerprint(memory_from_payload(memory.id, memory.namespace, payload))
    assert fingerprint_from_payload(memory.id, memory.namespace, payload) == expected
    from_columns = fingerprint_from_columns(
        memory_id=memory.id,
        namespace=memory.namespace,
        content=memory.content,
        tags=memory.tags,
        importance=memory.importance,
        metadata_json=canonical_json(memory.metadata),
        created_at=memory.created_at,
        updated_at=memory.updated_at,
        version=memory.version,
    )
    assert from_columns == memory_fingerprint(memory)


def test_a_payload_in_another_shape_takes_the_slow_path() -> None:
    """Whitespace or key order other than canonical still gives the canonical fingerprint."""
    payload = (
        '{"version": 2, "tags": ["x"], "updated_at": 2.0, "metadata": {}, "importance": 0.5, '
        '"created_at": 1.0, "content": "hi"}'
    )
    expected = memory_fingerprint(memory_from_payload("m1", "ns", payload))
    assert fingerprint_from_payload("m1", "ns", payload) == expected


def test_columns_that_are_not_floats_take_the_slow_path() -> None:
    """An int where a float is stored, or metadata text with spaces, still gives the
    canonical fingerprint."""
    memory = MemoryRecord(
        id="m1",
        namespace="ns",
        content="c",
        tags=("t",),
        importance=1,
        metadata={"b": 1, "a": [1, 2]},
        created_at=1.5,
        updated_at=2,
        version=3,
    )
    fingerprint = fingerprint_from_columns(
        memory_id="m1",
        namespace="ns",
        content="c",
        tags=["t"],
        importance=1,
        metadata_json='{"b": 1, "a": [1, 2]}',
        created_at=1.5,
        updated_at=2,
        version=3,
    )
    assert fingerprint == memory_fingerprint(memory)
    floats = fingerprint_from_columns(
        memory_id="m1",
        namespace="ns",
        content="c",
        tags=["t"],
        importance=1.0,
        metadata_json='{"b": 1, "a": [1, 2]}',
        created_at=1.5,
        updated_at=2.0,
        version=3,
    )
    assert floats == memory_fingerprint(
        MemoryRecord(
            id="m1",
            namespace="ns",
            content="c",
            tags=("t",),
            importance=1.0,
            metadata={"a": [1, 2], "b": 1},
            created_at=1.5,
            updated_at=2.0,
            version=3,
        )
    )
