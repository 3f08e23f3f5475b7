"""The routing table's changes: each one a new revision, bad ones refused with nothing changed."""

from __future__ import annotations

import pytest

from agentkeel.config.router import parse_backend
from agentkeel.errors import Conflict, InvalidRequest, NotFound
from agentkeel.router import table as tables
from agentkeel.router.table import TableDoc, VersionSpec

A, B, C = "http://127.0.0.1:9001", "http://127.0.0.1:9002", "http://127.0.0.1:9003"


def seeded() -> TableDoc:
    return tables.seed_table(
        [parse_backend(f"v1={A}"), parse_backend(f"v1={B}"), parse_backend(f"v2={C}")]
    )


def test_seed_makes_the_first_version_stable_with_weight_100() -> None:
    """The first version named is stable at weight 100, later ones start at 0."""
    doc = seeded()
    assert doc.stable == "v1"
    assert doc.versions["v1"] == VersionSpec(weight=100, replicas=(A, B))
    assert doc.versions["v2"] == VersionSpec(weight=0, replicas=(C,))
    assert tables.seed_table([]).stable is None


def test_the_table_survives_json() -> None:
    """What the store holds reads back as the same table."""
    doc = tables.drain_replica(tables.retire_version(seeded(), "v2", policy="move-at-turn"), C)
    assert TableDoc.from_json(doc.to_json()) == doc


def test_put_version_adds_replicas_and_never_removes_them() -> None:
    """PUT sets weight and policy and adds replicas; a second PUT keeps the first ones."""
    doc = tables.put_version(seeded(), "v3", replicas=["http://127.0.0.1:9004/"], weight=5)
    doc = tables.put_version(doc, "v3", replicas=["http://127.0.0.1:9005"], policy="move-at-turn")
    spec = doc.versions["v3"]
    assert spec.replicas == ("http://127.0.0.1:9004", "http://127.0.0.1:9005")
    assert (spec.weight, spec.policy, spec.retired) == (0, "move-at-turn", False)
    assert doc.revision == seeded().revision + 2


def test_a_replica_serves_one_version() -> None:
    """A URL already in another version is a conflict, in PUT and in add_replica."""
    with pytest.raises(Conflict):
        tables.put_version(seeded(), "v3", replicas=[A])
    with pytest.raises(Conflict):
        tables.add_replica(seeded(), "v2", A)


def test_set_weights_is_all_or_nothing() -> None:
    """One unknown version or bad weight refuses the whole change."""
    doc = seeded()
    with pytest.raises(NotFound):
        tables.set_weights(doc, {"v1": 50, "nope": 50})
    with pytest.raises(InvalidRequest):
        tables.set_weights(doc, {"v1": 50, "v2": -1})
    with pytest.raises(InvalidRequest):
        tables.set_weights(doc, {})
    changed = tables.set_weights(doc, {"v1": 90, "v2": 10}, stable="v2")
    assert (changed.versions["v1"].weight, changed.versions["v2"].weight) == (90, 10)
    assert changed.stable == "v2"


def test_retire_and_switch_back() -> None:
    """Retiring zeroes the weight; a weight above 0 brings the version back; the stable
    version can be neither retired nor removed."""
    doc = tables.retire_version(seeded(), "v2")
    assert doc.versions["v2"].retired and doc.versions["v2"].weight == 0
    back = tables.set_weights(doc, {"v2": 10})
    assert not back.versions["v2"].retired
    with pytest.raises(Conflict):
        tables.retire_version(doc, "v1")
    with pytest.raises(Conflict):
        tables.remove_version(doc, "v1")
    with pytest.raises(InvalidRequest):
        tables.retire_version(doc, "v2", policy="sometimes")  # type: ignore[arg-type]


def test_replicas_come_go_and_drain() -> None:
    """Drained replicas stay listed; removing or adding a URL again clears its drain."""
    doc = tables.drain_replica(seeded(), B)
    assert B in doc.draining
    assert B not in tables.add_replica(doc, "v1", B).draining
    removed = tables.remove_replica(doc, B)
    assert removed.versions["v1"].replicas == (A,) and B not in removed.draining
    with pytest.raises(NotFound):
        tables.drain_replica(doc, "http://127.0.0.1:1")
    with pytest.raises(InvalidRequest):
        tables.add_replica(doc, "v1", "https://example.com/x")
    gone = tables.remove_version(doc, "v2")
    assert set(gone.versions) == {"v1"}


def test_version_names_are_checked() -> None:
    """Names with a slash or nothing at all are refused."""
    for name in ("", "a/b", "x" * 65):
        with pytest.raises(InvalidRequest):
            tables.put_version(seeded(), name)
