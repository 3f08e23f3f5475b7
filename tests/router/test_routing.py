"""The hot path's choices: a version by weight for new sessions, a replica within a version."""

from __future__ import annotations

import random
from collections import Counter

from agentkeel.router.routing import Replica, RoutingTable
from agentkeel.router.table import TableDoc, VersionSpec
from agentkeel.router.upstream import UpstreamPool


def replica(url: str, version: str, *, ready: bool = True) -> Replica:
    port = int(url.rsplit(":", 1)[1])
    pool = UpstreamPool(host="127.0.0.1", port=port, connect_timeout_s=1, idle_s=1, size=1)
    made = Replica(url=url, version=version, pool=pool)
    made.ready = ready
    return made


def build(versions: dict[str, VersionSpec], replicas: list[Replica], **doc: object) -> RoutingTable:
    return RoutingTable.build(
        TableDoc(revision=1, stable="v1", versions=versions, **doc),  # type: ignore[arg-type]
        {r.url: r for r in replicas},
    )


def test_new_sessions_follow_the_weights() -> None:
    """With weights 90/10, 10 000 choices split close to 90/10 (seeded, so repeatable)."""
    a, b = replica("http://h:1", "v1"), replica("http://h:2", "v2")
    table = build(
        {"v1": VersionSpec(90, replicas=(a.url,)), "v2": VersionSpec(10, replicas=(b.url,))},
        [a, b],
    )
    rng = random.Random(3)
    counts = Counter(route.name for _ in range(10_000) if (route := table.choose_new(rng)))
    assert 8_800 < counts["v1"] < 9_200
    assert counts["v1"] + counts["v2"] == 10_000


def test_versions_that_cannot_take_new_sessions_get_none() -> None:
    """Weight 0, retired, or no available replica: never chosen; none at all -> None."""
    ready = replica("http://h:1", "v1")
    down = replica("http://h:2", "v2", ready=False)
    drained = replica("http://h:3", "v3")
    retired = replica("http://h:4", "v4")
    zero = replica("http://h:5", "v5")
    table = build(
        {
            "v1": VersionSpec(1, replicas=(ready.url,)),
            "v2": VersionSpec(100, replicas=(down.url,)),
            "v3": VersionSpec(100, replicas=(drained.url,)),
            "v4": VersionSpec(100, retired=True, replicas=(retired.url,)),
            "v5": VersionSpec(0, replicas=(zero.url,)),
        },
        [ready, down, drained, retired, zero],
        draining=frozenset({drained.url}),
    )
    rng = random.Random(1)
    assert {table.choose_new(rng).name for _ in range(200)} == {"v1"}  # type: ignore[union-attr]
    ready.ready = False
    assert table.choose_new(rng) is None


def test_a_replica_is_picked_by_fewest_in_flight_and_skips_unavailable_ones() -> None:
    """Fewest requests in flight wins; equals alternate; not ready, draining and tried
    replicas are skipped."""
    a, b, c = replica("http://h:1", "v1"), replica("http://h:2", "v1"), replica("http://h:3", "v1")
    table = build({"v1": VersionSpec(1, replicas=(a.url, b.url, c.url))}, [a, b, c])
    route = table.versions["v1"]
    assert {route.pick().url for _ in range(6)} == {a.url, b.url, c.url}  # type: ignore[union-attr]
    a.in_flight, b.in_flight = 3, 1
    c.ready = False
    assert route.pick() is b
    b.draining = True
    assert route.pick() is a
    assert route.pick({a}) is None
