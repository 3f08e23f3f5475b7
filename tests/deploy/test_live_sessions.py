"""Live sessions per version: the session store through a replica, the pins as fallback."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from agentkeel.deploy.controller import ReleasePlan
from agentkeel.deploy.live_sessions import StoreLiveSessions
from agentkeel.errors import Unavailable
from tests.deploy.rollout_doubles import Rig, TableRouter
from tests.deploy.rollout_fixtures import rig

__all__ = ["rig"]

URLS = ("http://127.0.0.1:9001", "http://127.0.0.1:9002")


class Replicas:
    """``/admin/sessions/live`` per replica URL; a URL not listed is down."""

    def __init__(self, reports: Mapping[str, Mapping[str, Any]]) -> None:
        self.reports = dict(reports)
        self.asked: list[str] = []

    async def __call__(self, url: str) -> Mapping[str, Any]:
        self.asked.append(url)
        if url not in self.reports:
            raise Unavailable(f"cannot reach the agent server at {url}")
        return self.reports[url]


async def test_the_store_count_from_the_first_replica_that_answers() -> None:
    router = TableRouter(stable="v1", replicas=URLS)
    router.pins = {"v1": 40}  # stale pins of sessions that ended by timeout
    replicas = Replicas({URLS[1]: {"by_version": {"v1": 3, "v2": 1}, "total": 4}})
    sessions = StoreLiveSessions(router, live_of=replicas)
    assert await sessions.by_version() == {"v1": 3, "v2": 1}
    assert replicas.asked == list(URLS) and sessions.source == "store"


async def test_the_pins_when_no_replica_answers() -> None:
    router = TableRouter(stable="v1", replicas=URLS)
    router.pins = {"v1": 7}
    sessions = StoreLiveSessions(router, live_of=Replicas({}))
    assert await sessions.by_version() == {"v1": 7}
    assert sessions.source == "pins"
    # A malformed answer counts as no answer.
    malformed = StoreLiveSessions(router, live_of=Replicas({URLS[0]: {"total": 3}}))
    assert await malformed.by_version() == {"v1": 7}


class Counts:
    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    async def by_version(self) -> dict[str, int]:
        return dict(self.counts)


async def test_promotion_waits_for_the_store_count_not_for_lingering_pins(rig: Rig) -> None:
    """v1's pins never fall (their sessions ended by idle timeout), but the store says 0
    live on v1: blue/green retires v1 right after its switch-back window, not at the
    drain deadline, and never needs to move sessions."""
    rig.router.pins = {"v1": 5}
    rig.sessions = Counts({"v1": 0})
    rig.settings = rig.settings.model_copy(
        update={
            "bluegreen": rig.settings.bluegreen.model_copy(
                update={"drain_deadline_s": 3600.0, "switch_back_window_s": 60.0}
            )
        }
    )
    controller = rig.controller()
    done = await asyncio.wait_for(
        controller.start(ReleasePlan(version="v2", strategy="bluegreen", time_scale=60.0)), 10
    )
    assert done.state == "promoted"
    assert done.elapsed_s < 3600.0
    assert done.detail.get("previous_retired") != "move-at-turn"
    assert done.detail["sessions"] == {"v1": 0}
