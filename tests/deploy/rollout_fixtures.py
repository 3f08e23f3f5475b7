"""The ``rig`` fixture of the rollout tests: doubles around a store in ``tmp_path``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentkeel.config.rollout import CanarySettings, CanaryStep, RolloutSettings
from agentkeel.deploy.state import RolloutStore
from tests.deploy.rollout_doubles import (
    FedMetrics,
    GatedClock,
    RecordingDriver,
    RecordingMemory,
    RecordingRollback,
    Rig,
    ScriptedJudge,
    TableRouter,
)

V1_URLS = ("http://127.0.0.1:8081", "http://127.0.0.1:8082")


def short_settings(**overrides: object) -> RolloutSettings:
    """Two canary steps of 5 and 10 minutes, analysed every minute."""
    values: dict[str, object] = {
        "canary": CanarySettings(
            steps=[CanaryStep(weight=5, duration_s=300), CanaryStep(weight=25, duration_s=600)],
            drain_deadline_s=600,
        ),
        "analysis_interval_s": 60.0,
        "poll_interval_s": 0.05,
    }
    values.update(overrides)
    return RolloutSettings.model_validate(values)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = GatedClock()
    router = TableRouter(stable="v1", replicas=V1_URLS)
    async with RolloutStore(tmp_path / "rollouts.db", clock=clock) as store:
        yield Rig(
            store=store,
            router=router,
            driver=RecordingDriver(existing=[("v1", url) for url in V1_URLS]),
            metrics=FedMetrics(),
            judge=ScriptedJudge(["pass"]),
            rollback=RecordingRollback(router=router),
            memory=RecordingMemory(),
            clock=clock,
            settings=short_settings(),
        )
