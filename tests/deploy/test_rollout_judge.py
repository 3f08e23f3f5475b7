"""The canary with the real judge: a v2 whose tool calls fail 5 points more often is
rolled back; a v2 as good as v1 is promoted. Traffic follows the router's weights."""

from __future__ import annotations

import random

from agentkeel.config.judge import JudgeSettings
from agentkeel.deploy.controller import ReleasePlan
from agentkeel.deploy.judge import Judge
from agentkeel.deploy.types import Proportion, VersionWindow
from tests.deploy.rollout_doubles import Rig, TableRouter
from tests.deploy.rollout_fixtures import rig, short_settings

__all__ = ["rig"]

TURNS_PER_INTERVAL = 600  # 10 turns/s, analysed every 60 s
PLAN = ReleasePlan(version="v2", strategy="canary", time_scale=60.0)


class Traffic:
    """Tool calls per version, split by the router's current weights, one interval per
    analysis; each call fails with its version's probability (seeded)."""

    def __init__(self, router: TableRouter, failure: dict[str, float], *, seed: int) -> None:
        self.router = router
        self.failure = failure
        self.random = random.Random(seed)
        self.counts = {version: [0, 0] for version in failure}

    async def start(self) -> None:
        self.counts = {version: [0, 0] for version in self.failure}

    async def read(self, version: str) -> VersionWindow:
        if version == "v1":  # read first of each pair: one more interval of traffic
            weights = self.router.weights()
            total = sum(weights.values()) or 1
            for name, counts in self.counts.items():
                calls = TURNS_PER_INTERVAL * weights.get(name, 0) // total
                failed = sum(self.random.random() < self.failure[name] for _ in range(calls))
                counts[0] += failed
                counts[1] += calls
        events, trials = self.counts[version]
        return VersionWindow(version, {"tool_success": Proportion(events, trials)}, {})


def judge_settings() -> JudgeSettings:
    defaults = JudgeSettings()
    return JudgeSettings(
        rates={n: {"enabled": False} for n in defaults.enabled_rates() if n != "tool_success"},
        distributions={n: {"enabled": False} for n in defaults.enabled_distributions()},
    )


def with_judge(rig: Rig, failure: dict[str, float], seed: int) -> None:
    rig.settings = short_settings()
    rig.settings.canary.steps[0].duration_s = 30 * 60
    rig.settings.canary.steps[1].duration_s = 60 * 60
    rig.metrics = Traffic(rig.router, failure, seed=seed)  # type: ignore[assignment]
    rig.judge = Judge(judge_settings())  # type: ignore[assignment]


async def test_a_worse_canary_is_rolled_back_by_the_judge(rig: Rig) -> None:
    with_judge(rig, {"v1": 0.05, "v2": 0.10}, seed=7)
    release = await rig.controller().start(PLAN)
    assert release.state == "rolled_back", release.reason
    assert "tool_success" in release.reason
    assert rig.rollback.calls == [(release.release, True)]
    assert rig.router.stable == "v1" and rig.router.weights()["v1"] == 100
    assert release.detail["verdict"]["metrics"][0]["outcome"] == "fail"


async def test_a_canary_as_good_as_stable_is_promoted(rig: Rig) -> None:
    with_judge(rig, {"v1": 0.05, "v2": 0.05}, seed=11)
    release = await rig.controller().start(PLAN)
    assert release.state == "promoted", release.reason
    assert rig.router.stable == "v2"
    assert rig.rollback.calls == []
